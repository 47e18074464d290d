"""The segment byte format: a run of consecutive records of one log as one byte string.

A segment is the concatenation of its records' entries, each

    entry = u32 len(hash_input) || hash_input || u8 len(sig) || sig

where `hash_input` is exactly the record hash input of docs/protocol.md §3.3
(`records.hash_input`, the one place that builds it). So a record's hash is SHA-256 of a
slice, with no re-encoding, and its `prev` is the slice's last 32 bytes: checking a
chain is a slice compare. Here: building entries, walking them (every length
checked), cutting and decoding.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator

from peer.errors import InvalidRecord
from peer.records import (
    HASH_LEN,
    HASH_PREFIX_V1,
    HOST_LEN,
    ID_LEN,
    MAX_PAYLOAD,
    MAX_WRAPPED_KEY,
    RECORD_FRAMING,
    SIG_LEN,
    Record,
    check_record,
    hash_input,
)

_U32 = struct.Struct(">I")
_U64X2 = struct.Struct(">QQ")
_PREFIX_LEN = len(HASH_PREFIX_V1)
# hash_input's bytes besides tag, version, payload and wrapped key: the prefix, id,
# host, the two u8 lengths, idx and timestamp, the u32 length, the u8 length and prev
FIXED = _PREFIX_LEN + ID_LEN + HOST_LEN + 1 + 16 + 1 + 4 + 1 + HASH_LEN
MAX_HASH_INPUT = FIXED + 64 + 16 + MAX_PAYLOAD + MAX_WRAPPED_KEY
_LENGTHS = [bytes((n,)) for n in range(256)]
_TAG_AT = _PREFIX_LEN + ID_LEN + HOST_LEN  # offset of the tag's length in hash_input

Span = tuple[int, int, int]  # one entry: where hash_input starts, where it ends, entry end


def encode(records: Iterable[Record]) -> bytes:
    """The segment of `records` (consecutive records of one log, not checked here)."""
    return b"".join(entries(records))


def entries(records: Iterable[Record]) -> list[bytes]:
    """Each record's entry: a segment is their concatenation."""
    return [entry(hash_input(record), record.sig) for record in records]


def entry(digest_input: bytes, sig: bytes) -> bytes:
    """One record's entry, from its `records.hash_input` (which a writer has at hand:
    it hashed it) and its signature: u32 length | hash_input | u8 length | sig."""
    return b"".join((_U32.pack(len(digest_input)), digest_input, _LENGTHS[len(sig)], sig))


def walk(data: bytes) -> Iterator[Span]:
    """Each entry's (hash_input start, hash_input end, entry end), every length
    checked against the bounds of a record and against the bytes left."""
    pos, size = 0, len(data)
    unpack = _U32.unpack_from
    while pos < size:
        if pos + 4 > size:
            raise InvalidRecord(f"segment: the entry at byte {pos} is cut short in its length")
        (length,) = unpack(data, pos)
        if not FIXED <= length <= MAX_HASH_INPUT:
            raise InvalidRecord(
                f"segment: the entry at byte {pos} claims {length} bytes of record, "
                f"outside {FIXED}..{MAX_HASH_INPUT}"
            )
        start = pos + 4
        end = start + length
        if end >= size:
            raise InvalidRecord(f"segment: the entry at byte {pos} runs past the segment's end")
        sig_len = data[end]
        if sig_len not in (0, SIG_LEN):
            raise InvalidRecord(
                f"segment: the entry at byte {pos} has a {sig_len}-byte signature "
                f"(must be 0 or {SIG_LEN})"
            )
        pos = end + 1 + sig_len
        if pos > size:
            raise InvalidRecord(f"segment: the signature at byte {end + 1} runs past the end")
        yield start, end, pos


def spans(data: bytes) -> list[Span]:
    """All of `walk(data)`."""
    return list(walk(data))


def count(data: bytes) -> int:
    """How many entries `data` holds (every length checked)."""
    return sum(1 for _ in walk(data))


def cut(data: bytes, skip: int, take: int) -> bytes:
    """The segment of `take` entries after the first `skip` (no copy for all of it)."""
    if skip < 0 or take < 0:
        raise ValueError(f"cut: skip {skip} and take {take} must not be negative")
    if not take:
        return b""
    begin = end = 0
    for n, (start, _, stop) in enumerate(walk(data)):
        if n == skip:
            begin = start - 4
        if n == skip + take - 1:
            end = stop
            break
    else:
        raise InvalidRecord(f"segment: it holds fewer than {skip + take} records")
    return data if begin == 0 and end == len(data) else data[begin:end]


def first_idx(data: bytes) -> int:
    """The idx of the first record of a non-empty segment, without decoding it."""
    for start, end, _ in walk(data):
        at = start + _TAG_AT
        idx_at = at + 1 + data[at]
        if idx_at + 16 > end:
            raise InvalidRecord("segment: the first record is cut short in its idx")
        return int(_U64X2.unpack_from(data, idx_at)[0])
    raise InvalidRecord("segment: it holds no record")


def decode(data: bytes, start_idx: int | None = None, take: int | None = None) -> list[Record]:
    """The records of a segment (from idx `start_idx`, `take` of them: a slice), each
    bounds-checked, all consecutive records of one log."""
    skip = 0 if start_idx is None else start_idx - first_idx(data)
    if skip < 0:
        raise InvalidRecord(f"segment: idx {start_idx} comes before its first record")
    records: list[Record] = []
    keep = records.append
    stop_at = None if take is None else skip + take
    for n, (start, end, stop) in enumerate(walk(data)):
        if n < skip:
            continue
        if n == stop_at:
            break
        record = _record(data[start:end], data[end + 1 : stop])
        if records:
            before = records[-1]
            if not (
                record.idx == before.idx + 1
                and record.host == before.host
                and record.tag == before.tag
            ):
                raise InvalidRecord(
                    f"segment: record {n} is not the record after #{before.idx} of its log"
                )
        keep(record)
    wanted = 1 if take is None and start_idx is not None else take or 0
    if len(records) < wanted:
        raise InvalidRecord(f"segment: it holds fewer records than asked from idx {start_idx}")
    return records


def _record(digest_input: bytes, sig: bytes) -> Record:
    """A record parsed back from its hash_input, every bound checked (`check_record`)."""
    h = digest_input
    if h[:_PREFIX_LEN] != HASH_PREFIX_V1:
        raise InvalidRecord("segment: a record does not start with the prefix peer.record.v1")
    try:
        p = _TAG_AT
        tag_end = p + 1 + h[p]
        tag = h[p + 1 : tag_end].decode("ascii")
        idx, timestamp = _U64X2.unpack_from(h, tag_end)
        p = tag_end + 16
        version_end = p + 1 + h[p]
        version = h[p + 1 : version_end].decode("ascii")
        (payload_len,) = _U32.unpack_from(h, version_end)
        p = version_end + 4 + payload_len
        payload = h[version_end + 4 : p]
        key_end = p + 1 + h[p]
        wrapped_key = h[p + 1 : key_end]
    except (IndexError, struct.error) as exc:
        raise InvalidRecord("segment: a record's lengths run past its end") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRecord("segment: a record's tag or version is not ASCII") from exc
    if key_end + HASH_LEN != len(h):
        raise InvalidRecord(
            f"segment: a record's lengths add up to {key_end + HASH_LEN} bytes, not {len(h)}"
        )
    return check_record(
        Record(
            h[_PREFIX_LEN : _PREFIX_LEN + ID_LEN],
            h[_PREFIX_LEN + ID_LEN : _TAG_AT],
            tag,
            idx,
            timestamp,
            version,
            payload,
            wrapped_key,
            h[key_end:],
            sig,
        )
    )


def hashes(data: bytes) -> list[bytes]:
    """Each record's hash: SHA-256 of its hash_input, a slice (no decoding)."""
    view = memoryview(data)
    sha256 = hashlib.sha256
    return [sha256(view[start:end]).digest() for start, end, _ in walk(data)]


def layout(data: bytes) -> list[tuple[int, bool, int]]:
    """(`records.message_size`, signed?, the byte offset where the entry ends) of each
    record: what a sender needs to cut a segment into messages, in one walk."""
    framing = RECORD_FRAMING - FIXED
    return [(end - start + framing, stop > end + 1, stop) for start, end, stop in walk(data)]


def sizes(data: bytes) -> list[tuple[int, bool]]:
    """(`records.message_size`, signed?) of each record, from the lengths alone."""
    return [(size, signed) for size, signed, _ in layout(data)]
