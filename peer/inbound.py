"""One way in: every record a node receives (its pull, a peer's push, a live stream)
enters the store through an `Inbound`.

An Inbound belongs to one stream. It keeps the host keys the stream offered (each is
sent once per stream), leaves out the records the store holds already (one plain read:
a duplicate costs a hash, no verification and no write), verifies the rest (bounds,
chain, signature) while the previous batch is being written, and counts what it
received per log, and how much of it was new (`added`) or held already (`duplicates`).
A live stream also leaves out logs frozen here by fork evidence (neither taken nor
given); pulls and pushes do not name frozen logs in the first place (`peer.sync` plans
around them), and a push of one is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peer.errors import ForkDetected, LogFrozen
from peer.records import LogKey, Record
from peer.segment import Segments
from peer.store import InsertResult, Store, as_segments


@dataclass
class _Writing:
    """A batch being written while the next one is verified."""

    task: asyncio.Future[InsertResult]
    counts: dict[LogKey, int]  # records of the batch per log (held already or not)
    known: int  # records of the batch left out before the write: held already


class Inbound:
    """Takes the batches of one stream into one store."""

    def __init__(
        self, store: Store, keys: Mapping[bytes, bytes] | None = None, *, live: bool = False
    ) -> None:
        self.store = store
        self.keys = dict(keys or {})
        self.live = live
        self.added = 0  # records stored
        self.duplicates = 0  # records received that the store held already
        self.per_log: Counter[LogKey] = Counter()  # records taken (new or known) per log
        self._writing: _Writing | None = None
        self._frozen: set[LogKey] | None = None

    @property
    def received(self) -> int:
        """Records received and settled (stored, or found held): added + duplicates."""
        return self.added + self.duplicates

    async def take(
        self, records: Sequence[Record], keys: Mapping[bytes, bytes]
    ) -> dict[LogKey, int]:
        """Leave out what the store holds already, verify the rest now and start writing
        it once the previous write is done (raising that write's error, if any). Returns
        the records settled by this call, per log: the previous write's, or this batch's
        if it was all held already (then nothing is verified, written, or waited for)."""
        self.keys.update(keys)
        if not records:
            return {}
        unheld = await self.store.leave_out_known(as_segments(records))
        if not unheld.records:
            self._settle(unheld.received, 0, unheld.duplicates)
            return unheld.received
        await self._known_hosts(unheld.records)
        prepared = self.store.prepare(unheld.records, self.keys)
        done = await self.flush()
        write = asyncio.ensure_future(self.store.apply(prepared))
        self._writing = _Writing(write, unheld.received, unheld.duplicates)
        return done

    async def flush(self) -> dict[LogKey, int]:
        """Wait for the write in flight; the records it settled (stored or found held,
        with those of its batch left out before it), per log."""
        writing, self._writing = self._writing, None
        if writing is None:
            return {}
        result = await writing.task
        self._settle(writing.counts, result.added, result.duplicates + writing.known)
        return writing.counts

    def _settle(self, counts: Mapping[LogKey, int], added: int, duplicates: int) -> None:
        """Count a batch once it is settled as a whole (a failed one counts nothing, so
        a live batch tried again is not counted twice)."""
        self.added += added
        self.duplicates += duplicates
        self.per_log.update(counts)

    async def store_now(
        self, records: Sequence[Record], keys: Mapping[bytes, bytes]
    ) -> tuple[int, Segments]:
        """Take and write one batch at once (live: each message is stored on arrival).
        Live, records of logs frozen here are left out; the frozen set is re-read only
        when the store says a log is frozen (perhaps by another process, or by this
        very batch), then the batch is tried once more. Returns (records added, the
        records taken)."""
        added = self.added
        try:
            fresh = await self._write_now(records, keys)
        except (LogFrozen, ForkDetected):
            if not self.live or not await self._frozen_changed():
                raise
            fresh = await self._write_now(records, keys)  # without the logs frozen since
        return self.added - added, fresh

    async def _write_now(self, records: Sequence[Record], keys: Mapping[bytes, bytes]) -> Segments:
        fresh = await self._unfrozen(records)
        await self.take(fresh, keys)
        await self.flush()
        return fresh

    async def _frozen_changed(self) -> bool:
        """Re-read the frozen logs; whether they differ from the set in use."""
        frozen = await self.store.frozen_logs()
        changed, self._frozen = frozen != self._frozen, frozen
        return changed

    async def close(self) -> None:
        """Wait for a write still in flight (its error is not ours to raise: the first
        error of the stream is already propagating)."""
        if self._writing is not None and not self._writing.task.done():
            with contextlib.suppress(Exception):
                await self._writing.task

    async def _unfrozen(self, records: Sequence[Record]) -> Segments:
        batch = as_segments(records)
        if not self.live:
            return batch
        if self._frozen is None:
            self._frozen = await self.store.frozen_logs()
        frozen = self._frozen
        if not frozen:
            return batch
        return Segments([part for part in batch.parts if part.log not in frozen])

    async def _known_hosts(self, batch: Segments) -> None:
        """Hosts not offered on this stream: `host_keys` re-reads the table on a miss,
        since another process may have stored their keys (the CLI beside a daemon)."""
        await self.store.host_keys({part.host for part in batch.parts} - self.keys.keys())
