"""One way out: everything a node sends of its store (a pull it serves, a live stream's
catch-up and live records, its own push) leaves through an `Outbound`.

An Outbound belongs to one stream. It turns ranges into batches that end on a signed
record (`peer.batches`), never sends a log frozen here by fork evidence, and sends
each host's public key once per stream, with the first batch that needs it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence

from peer.batches import pack, read_batches
from peer.records import LogKey, Range, Record
from peer.remote import Batch
from peer.segment import Segment, Segments
from peer.store import Store


class Outbound:
    """Batches of one store for one stream."""

    def __init__(self, store: Store, max_batch: int) -> None:
        self.store = store
        self.max_batch = max_batch
        self._sent_keys: set[bytes] = set()
        self._frozen: set[LogKey] | None = None

    async def ranges(self, ranges: Iterable[Range]) -> AsyncGenerator[Batch, None]:
        """The records of `ranges` (logs frozen here left out), batch by batch."""
        frozen = await self.frozen()
        wanted = [r for r in ranges if r.log not in frozen]
        batches = read_batches(self.store, wanted, self.max_batch)
        try:
            async for records in batches:
                yield records, await self.keys_for(records)
        finally:
            await batches.aclose()

    async def segments(self, parts: Sequence[Segment]) -> AsyncGenerator[Batch, None]:
        """Segments already read (each log's consecutive, ending signed), cut into
        messages: a live feed's, sent as the bytes they are."""
        for message in pack(parts, self.max_batch):
            yield message, await self.keys_for(message)

    async def keys_for(self, records: Sequence[Record]) -> dict[bytes, bytes]:
        """Keys of hosts first seen in this stream (each key is sent once per stream)."""
        hosts = (
            {part.host for part in records.parts}
            if isinstance(records, Segments)
            else {r.host for r in records}
        )
        new = hosts - self._sent_keys
        self._sent_keys |= new
        return await self.store.host_keys(new)

    async def frozen(self) -> set[LogKey]:
        """Logs frozen here, read once per stream."""
        if self._frozen is None:
            self._frozen = await self.store.frozen_logs()
        return self._frozen
