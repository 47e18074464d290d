"""Fan-out of newly stored records to live subscribers, in arrival order.

The feed reads what arrived (by the store's arrival number) and hands it to every
subscriber's bounded queue, whenever the store's watcher (`peer.watch`) says something
was committed: at once for a commit by this process or by another that rings the
daemon's doorbell (the CLI writing to the same store), else within its poll. What
this process appends itself is handed to the feed as written (`Store.on_append`) and
published without being read back, when it comes next in arrival order. A
subscriber that falls a whole queue behind is cut off instead of growing memory: it
reconnects and catches up from the store.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Collection, Sequence

from peer.records import LogKey, Record, group_by_log
from peer.segment import Segment
from peer.store import Store
from peer.watch import StoreWatcher, Watch

DEFAULT_QUEUE_BATCHES = 64
SCAN_LIMIT = 2000
HANDED_RECORDS = 100_000  # most records of the daemon's own appends kept for the feed


class Read:
    """What one scan of the store found, in arrival order: segments as stored, or the
    records this process appended. Every subscriber takes every read, so what each
    would work out alike is worked out once, here; and records are decoded only when
    a subscriber needs them (a follower mostly needs only the heads, for its notes)."""

    def __init__(self, records: list[Record] | None = None, *, parts: Sequence[Segment] = ()):
        self._given = records
        self.parts = list(parts)

    @functools.cached_property
    def records(self) -> list[Record]:
        """Every record, in arrival order."""
        if self._given is not None:
            return self._given
        return [record for part in self.parts for record in part.records()]

    @functools.cached_property
    def by_log(self) -> dict[LogKey, list[Record]]:
        """The records per log, each log's in idx order."""
        return group_by_log(self.records)

    @functools.cached_property
    def ends(self) -> dict[LogKey, int]:
        """Per log: the idx after its last record here (from the headers alone)."""
        if self._given is not None:
            return {r.log: r.idx + 1 for r in self._given}
        return {part.log: part.end for part in self.parts}

    def signed_end(self, log: LogKey) -> int:
        """The idx after `log`'s last signed record here (0 if none here is signed):
        from the segments' lengths, nothing decoded."""
        if self._given is not None:
            return max((r.idx + 1 for r in self._given if r.log == log and r.sig), default=0)
        for part in reversed(self.parts):
            if part.log == log and (signed := part.signed_count()):
                return part.first_idx + signed
        return 0

    def runs(self, logs: Collection[LogKey]) -> dict[LogKey, list[Record]]:
        """`by_log` of these logs only (only their segments are decoded)."""
        if self._given is not None or "by_log" in self.__dict__:
            return {log: run for log, run in self.by_log.items() if log in logs}
        found: dict[LogKey, list[Record]] = {}
        for part in self.parts:
            if part.log in logs:
                found.setdefault(part.log, []).extend(part.records())
        return found


class Subscriber:
    """One live reader: a bounded queue of reads; None means "you fell behind"."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Read | None] = asyncio.Queue(size)
        self.overflowed = False
        self.fell_behind = asyncio.Event()  # set once the queue overflowed

    def interrupt(self) -> None:
        """Wake the reader now (it then finds out why: overflow or revocation)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def offer(self, read: Read) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(read)
        except asyncio.QueueFull:
            self.overflowed = True
            self.fell_behind.set()
            self.interrupt()


class Feed:
    """Publishes every record one store gains to the subscribers. `watcher` is the
    store's (shared with the server and the mesh); without one, the feed has its own."""

    def __init__(
        self,
        store: Store,
        watcher: StoreWatcher | None = None,
        queue_batches: int = DEFAULT_QUEUE_BATCHES,
    ) -> None:
        self.store = store
        self.watcher = watcher or StoreWatcher(store)
        self.queue_batches = queue_batches
        self.cursor = 0
        self._subscribers: set[Subscriber] = set()
        self._watch: Watch | None = None
        self._handed: deque[tuple[int, list[Record]]] = deque()  # (first seq, records)
        self._handed_records = 0
        self._stop_handing = store.on_append(self._appended)

    async def start(self) -> None:
        self.cursor = await self.store.last_seq()
        self._watch = self.watcher.watch("live feed", self._publish_new, local=True, at_once=True)

    async def close(self) -> None:
        self._stop_handing()
        if self._watch is not None:
            await self._watch.close()

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.queue_batches)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def _appended(self, first_seq: int, records: list[Record]) -> None:
        """This process appended `records` at arrival numbers `first_seq` on: keep
        them, so that publishing them needs no read of what was just written. Past
        HANDED_RECORDS (the feed is behind), drop them: the store still has them."""
        if self._handed_records + len(records) > HANDED_RECORDS:
            self._handed.clear()
            self._handed_records = 0
            return
        self._handed.append((first_seq, records))
        self._handed_records += len(records)

    def _take_handed(self) -> list[Record] | None:
        """Up to SCAN_LIMIT records handed by this process's appends that come right
        after the cursor; None when the next record is not among them (read it)."""
        while self._handed:
            first, records = self._handed[0]
            start = self.cursor + 1 - first  # how many of them were published already
            if start >= len(records):
                self._handed.popleft()
                self._handed_records -= len(records)
                continue
            if start < 0:  # another writer's records come first: read the store
                return None
            taken = records[start : start + SCAN_LIMIT]
            self.cursor += len(taken)
            return taken
        return None

    async def _publish_new(self) -> None:
        """Publish what arrived past the cursor, in arrival order: this process's own
        appends as handed over, anything else (received, another process's) as read."""
        while True:
            records = self._take_handed()
            if records is not None:
                self._publish(records)
                continue
            rows = await self.store.scan_segments(after=self.cursor, limit=SCAN_LIMIT)
            if not rows:
                return
            last_arrival, last = rows[-1]
            self.cursor = last_arrival + last.count - 1
            self._publish_read(Read(parts=[part for _, part in rows]))
            if sum(part.count for _, part in rows) < SCAN_LIMIT:
                return

    def _publish(self, records: list[Record]) -> None:
        self._publish_read(Read(records))

    def _publish_read(self, read: Read) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(read)
