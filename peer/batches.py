"""Cutting logs into batches that a receiver can authenticate on their own.

A batch of one log must end on a signed record (the signature vouches for the chain
before it). Authors sign every SIGN_EVERY-th record and the last of every append, and
a store's last record of every log is always signed, so such a cut always exists
within SIGN_EVERY records. Several logs' runs may share one message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from peer.crypto import SIGN_EVERY
from peer.errors import IntegrityError
from peer.records import LogKey, Range, Record
from peer.store import Store

DEFAULT_BATCH = 1000


def cut_signed(chunk: Sequence[Record], want: int) -> list[Record]:
    """The longest prefix of `chunk` with at most `want` records that ends signed,
    else the shortest prefix that ends signed (a batch never ends unsigned)."""
    last_fit = -1
    for position in range(min(want, len(chunk))):
        if chunk[position].sig:
            last_fit = position
    if last_fit >= 0:
        return list(chunk[: last_fit + 1])
    for position in range(want, len(chunk)):
        if chunk[position].sig:
            return list(chunk[: position + 1])
    raise IntegrityError(f"log {chunk[0].log} has no signed record after idx {chunk[0].idx}")


async def read_batches(
    store: Store, ranges: Iterable[Range], max_batch: int = DEFAULT_BATCH
) -> AsyncIterator[list[Record]]:
    """The records of `ranges` (each extended to its next signature) in batches of
    about `max_batch`, several logs per batch when they are short."""
    batch: list[Record] = []
    for wanted in ranges:
        start = wanted.start
        while start < wanted.end:
            room = max_batch - len(batch)
            if batch and room < min(SIGN_EVERY, max_batch):
                yield batch
                batch, room = [], max_batch
            chunk = await store.read_range(wanted.host, wanted.tag, start, room + SIGN_EVERY)
            if not chunk:
                break
            run = cut_signed(chunk, min(room, wanted.end - start))
            batch += run
            start = run[-1].idx + 1
            if len(batch) >= max_batch:
                yield batch
                batch = []
    if batch:
        yield batch


class Holdback:
    """Holds back each log's unsigned tail until the record that signs it arrives
    (a live feed may see a transaction's records split across two reads)."""

    def __init__(self) -> None:
        self._pending: dict[LogKey, list[Record]] = {}

    def release(self, records: Iterable[Record]) -> list[Record]:
        """The records that now end on a signature, per log, in order."""
        ready: list[Record] = []
        for record in records:
            waiting = self._pending.setdefault(record.log, [])
            waiting.append(record)
            if record.sig:
                ready += waiting
                waiting.clear()
        return ready
