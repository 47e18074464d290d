"""The catch-up engine: brings the kv and history views up to the records held.

Per log with an app tag, records past the view cursor are read in bounded chunks,
decrypted and decided here (CPU, outside any transaction), then applied together
with the cursor in one store transaction per chunk. So a crash (even `kill -9`)
leaves every log's view either before or after a whole chunk, and the next catch-up
continues from the cursor. Records this node cannot open, of an unknown version, or
not following their format are skipped and counted, never a crash.

Reads call `catch_up()` first, so they see records a daemon (or another process)
stored since; with nothing pending that costs one query on the `heads` table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peer.apps import history, kv
from peer.apps.app import Decide
from peer.apps.payload import Malformed
from peer.crypto import SyncKey, open_or_why
from peer.records import LogKey, Record
from peer.relay import HAS_NO_VIEWS, require_sync_key
from peer.store.views import Decision, Pending, Skipped, ViewChunk

if TYPE_CHECKING:  # the shell hook's lean path imports this module, never the async store
    from peer.store import Store

VERSION = "v1"  # the payload version these views understand
APPS: dict[str, Decide] = {kv.TAG: kv.decide, history.TAG: history.decide}  # tag: its app
APP_TAGS = tuple(APPS)
CHUNK = 5000
Progress = Callable[[int], None]


@dataclass(slots=True)
class ViewReport:
    """What a catch-up (or a rebuild) did: records applied, and those skipped, by reason."""

    applied: int = 0
    skipped: Skipped = field(default_factory=Skipped)


class ViewEngine:
    """Keeps one store's views current for a node holding `sync` (None on a relay)."""

    def __init__(self, store: Store, sync: SyncKey | None, chunk: int = CHUNK) -> None:
        self.store = store
        self.sync = sync
        self.chunk = chunk

    async def catch_up(
        self, required: bool = False, progress: Progress | None = None
    ) -> ViewReport:
        """Apply every record past the cursors; `required`: refuse on a relay."""
        report = ViewReport()
        if required:
            require_sync_key(self.sync, HAS_NO_VIEWS)
        if self.sync is None:
            return report
        previous: list[Pending] = []
        while (pending := await self.store.views.pending(APP_TAGS)) and pending != previous:
            previous = pending  # no progress in a whole pass (a missing record): stop
            for log in pending:
                await self._catch_up_log(log, report, progress)
        return report

    async def rebuild(self, progress: Progress | None = None) -> ViewReport:
        """Drop the views and recompute them from the log (same result as incremental)."""
        require_sync_key(self.sync, HAS_NO_VIEWS)
        await self.store.views.clear()
        return await self.catch_up(progress=progress)

    async def _catch_up_log(
        self, pending: Pending, report: ViewReport, progress: Progress | None
    ) -> None:
        start = pending.applied
        while start < pending.held:
            limit = min(self.chunk, pending.held - start)
            records = await self.store.read_range(pending.log.host, pending.log.tag, start, limit)
            if not records or records[0].idx != start:
                return  # the log changed under us (cannot happen: logs only grow)
            chunk = self.decide(pending.log, records)
            if not await self.store.views.apply(chunk):
                return  # another process applied it first; `catch_up` re-reads the cursors
            report.applied += len(records)
            report.skipped += chunk.skipped
            if progress is not None:
                progress(report.applied)
            start = chunk.end

    async def sizes(self) -> tuple[int, int]:
        """(kv keys, history entries) held in the views."""
        return await self.store.views.sizes()

    async def apply_written(self, records: Sequence[Record], plaintexts: Sequence[bytes]) -> None:
        """Apply records this node just wrote from their plaintexts (no decryption).

        A no-op unless the view had caught up to just before them (the cursor check in
        `Views.apply`); then the next `catch_up` applies them the usual way.
        """
        if self.sync is not None and records:
            await self.store.views.apply(self._chunk(records[0].log, records, plaintexts))

    def decide(self, log: LogKey, records: Sequence[Record]) -> ViewChunk:
        """What a run of one log's records does to the views (pure but for decryption)."""
        return self._chunk(log, records, [self._open(record) for record in records])

    def _open(self, record: Record) -> bytes | None:
        """The plaintext, or None when the record cannot be (or need not be) opened:
        why does not matter here, the record is counted as skipped."""
        if record.version != VERSION:
            return None
        data, _ = open_or_why(self.sync, record)
        return data

    def _chunk(
        self, log: LogKey, records: Sequence[Record], plaintexts: Sequence[bytes | None]
    ) -> ViewChunk:
        return view_chunk(log, records, plaintexts)


def view_chunk(
    log: LogKey, records: Sequence[Record], plaintexts: Sequence[bytes | None]
) -> ViewChunk:
    """What a run of one log's records does to the views, from their plaintexts (None:
    could not be opened); pure."""
    decide = APPS[log.tag]
    decisions: list[Decision] = []
    undecryptable = unknown = malformed = 0
    for record, plaintext in zip(records, plaintexts, strict=True):
        if record.version != VERSION:
            unknown += 1
        elif plaintext is None:
            undecryptable += 1
        else:
            try:
                decisions.append(decide(record, plaintext))
            except Malformed:
                malformed += 1
    skipped = Skipped(undecryptable, unknown, malformed)
    return ViewChunk.of(log, records[0].idx, records[-1].idx + 1, decisions, skipped)


async def catch_up(store: Store, sync: SyncKey | None) -> ViewReport:
    """Bring the views up to date (for the daemon, after it stores synced batches)."""
    return await ViewEngine(store, sync).catch_up()
