"""Segments: a run of consecutive records of one log as one byte string (issue 17).

The store keeps a log as a few such rows instead of a row per record, and the wire
carries them as they are stored; signatures are still verified only in `peer.crypto`.

- `encoding`: the byte format (an entry per record: its hash input and signature),
  building, walking, cutting and decoding it;
- `parts`: `Segment` (one log's run with its header) and `Segments` (a batch of them
  that reads as records), cut by idx;
- `check`: proving a received segment's bytes against its header (bounds, host, tag,
  consecutive idx, the chain inside), saying what is wrong and where.

Everything read from a segment is bounds-checked as a record from the wire would be.
The names below are re-exported so that `segment.X` reads the same from anywhere.
"""

from peer.segment.check import Checked, check
from peer.segment.encoding import (
    FIXED,
    MAX_HASH_INPUT,
    Span,
    count,
    cut,
    decode,
    encode,
    entries,
    entry,
    first_idx,
    hashes,
    layout,
    sizes,
    spans,
    walk,
)
from peer.segment.parts import Segment, Segments, message_bytes_at_most, runs_of, take_range

__all__ = [
    "FIXED",
    "MAX_HASH_INPUT",
    "Checked",
    "Segment",
    "Segments",
    "Span",
    "check",
    "count",
    "cut",
    "decode",
    "encode",
    "entries",
    "entry",
    "first_idx",
    "hashes",
    "layout",
    "message_bytes_at_most",
    "runs_of",
    "sizes",
    "spans",
    "take_range",
    "walk",
]
