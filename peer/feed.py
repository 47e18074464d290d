"""Fan-out of newly stored records to live subscribers, in arrival order.

The feed reads what arrived (by the store's arrival number) and hands it to every
subscriber's bounded queue, whenever the store's watcher (`peer.watch`) says something
was committed: at once for a commit by this process or by another that rings the
daemon's doorbell (the CLI writing to the same store), else within its poll. What
this process writes itself, appended or received, is handed to the feed as written
(`Store.on_write`) and published without being read back, when it comes next in
arrival order; the store is read only when something else may have arrived (the
watcher saw another process's commit, or the feed fell behind and let go of what it
was handed). A subscriber that falls a whole queue behind is cut off instead of
growing memory: it reconnects and catches up from the store.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Sequence

from peer.batches import Holdback, pack
from peer.records import LogKey
from peer.segment import Segment, take_range
from peer.store import Store
from peer.watch import StoreWatcher, Watch

DEFAULT_QUEUE_BATCHES = 64
SCAN_LIMIT = 2000
HANDED_RECORDS = 100_000  # most records of the daemon's own writes kept for the feed


class Read:
    """What one scan of the store found (or this process appended), in arrival order,
    as segments: each log's run ends on a signed record (the feed holds back a tail
    its scan cut). Every subscriber takes every read, so what each would work out
    alike is worked out once, here; a subscriber sends the bytes it is given."""

    def __init__(self, parts: Sequence[Segment]):
        self.parts = list(parts)
        self._pieces: dict[tuple[LogKey, int], list[Segment]] = {}

    @functools.cached_property
    def by_log(self) -> dict[LogKey, list[Segment]]:
        """The segments per log, each log's consecutive, in idx order."""
        found: dict[LogKey, list[Segment]] = {}
        for part in self.parts:
            found.setdefault(part.log, []).append(part)
        return found

    def after(self, log: LogKey, start: int, max_batch: int) -> list[Segment]:
        """`log`'s records here from idx `start` on (what a subscriber that holds the
        ones before lacks), as pieces that each fit a message of `max_batch` records
        whole (`batches.pack` then sends them without a walk). The pieces are cut once
        per read, for every subscriber sent the log; a start inside one slices it."""
        pieces = self._pieces.get((log, max_batch))
        if pieces is None:
            messages = pack(self.by_log[log], max_batch)
            pieces = self._pieces[log, max_batch] = [p for m in messages for p in m.parts]
        first = max(start, pieces[0].first_idx)
        return take_range(pieces, first, pieces[-1].end - first)

    @functools.cached_property
    def ends(self) -> dict[LogKey, int]:
        """Per log: the idx after its last record here (a signed one)."""
        return {part.log: part.end for part in self.parts}


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
        self._handed: deque[tuple[int, list[Segment], int]] = deque()  # first seq, parts, count
        self._holdback = Holdback()
        self._handed_records = 0
        self._stop_handing = store.on_write(self._written)

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

    def _written(self, first_seq: int, parts: list[Segment]) -> None:
        """This process wrote `parts` at arrival numbers `first_seq` on: keep
        them, so that publishing them needs no read of what was just written. Past
        HANDED_RECORDS (the feed is behind), drop them: the store still has them."""
        count = sum(part.count for part in parts)
        if self._handed_records + count > HANDED_RECORDS:
            self._handed.clear()
            self._handed_records = 0
            return
        self._handed.append((first_seq, parts, count))
        self._handed_records += count

    def _take_handed(self) -> list[Segment] | None:
        """The segments of this process's writes that come right after the cursor:
        whole runs (each ends signed), about SCAN_LIMIT records; None when the next
        record is not among them (read it)."""
        taken: list[Segment] = []
        records = 0
        while self._handed and records < SCAN_LIMIT:
            first, parts, count = self._handed[0]
            start = self.cursor + 1 - first  # how many of them were published already
            if start < 0:  # another writer's records come first: read the store
                break
            self._handed.popleft()
            self._handed_records -= count
            if start < count:
                taken += take_range(parts, parts[0].first_idx + start, count - start)
                records += count - start
                self.cursor += count - start
        return taken or None

    async def _publish_new(self) -> None:
        """Publish what arrived past the cursor, in arrival order: this process's own
        writes as handed over, anything else (another process's) as read.
        The store is read only when something may be unpublished: a commit of this
        process past the cursor that was not handed over, or one elsewhere."""
        read = self._watch is None or self._watch.committed_elsewhere()
        while True:
            parts = self._take_handed()
            if parts is not None:
                self._publish(parts, cut=False)
                continue
            if not read and self.cursor >= self.store.last_seq_here:
                return
            rows = await self.store.scan_segments(after=self.cursor, limit=SCAN_LIMIT)
            if not rows:
                return
            last_arrival, last = rows[-1]
            self.cursor = last_arrival + last.count - 1
            count = sum(part.count for _, part in rows)
            self._publish([part for _, part in rows], cut=count >= SCAN_LIMIT)
            if count < SCAN_LIMIT:
                return
            read = True  # the scan stopped at its limit: more may follow

    def _publish(self, parts: list[Segment], *, cut: bool) -> None:
        """Offer every subscriber the parts that end signed (`cut`: the scan stopped
        at its limit, perhaps inside a transaction, whose tail then waits)."""
        ready = self._holdback.release(parts, cut)
        if not ready:
            return
        read = Read(ready)
        for subscriber in list(self._subscribers):
            subscriber.offer(read)
