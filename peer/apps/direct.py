"""The shell hook's write, on the lean path: one history entry appended through
`peer.store.direct` (no asyncio, no aiosqlite), its view row in the same transaction.
The record is the one `History.add` writes: same payload, sealing, signing, chain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peer.apps.history import TAG, encode_create
from peer.apps.views import view_chunk
from peer.crypto import Author
from peer.records import LogKey, Record
from peer.store.direct import Direct
from peer.store.views import HistoryEntry, ViewChunk


def add_directly(database: Path, author: Author, entry: HistoryEntry) -> bool | None:
    """Append one entry as the shell hook does: through `peer.store.direct` (no asyncio,
    no aiosqlite), the view updated in the same transaction. Same record as
    `History.add`. True: written; False: the view holds its id already (a daemon it was
    handed to wrote it, and only its answer was lost); None if the store must be opened
    the full way (missing, or at an older schema): the caller falls back to it."""
    plaintext = encode_create(entry)
    direct = Direct.open(database)
    if direct is None:
        return None
    log = LogKey(author.host, TAG)

    def chunk_of(records: Sequence[Record]) -> ViewChunk:
        return view_chunk(log, records, [plaintext])

    with direct:
        if direct.history_holds(entry.id):
            return False
        direct.append(author, TAG, [plaintext], chunk_of)
        return True
