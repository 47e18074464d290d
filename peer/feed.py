"""Fan-out of newly stored records to live subscribers, in arrival order.

One task per node reads what arrived (by the store's arrival number) and hands it to
every subscriber's bounded queue. It wakes at once on a commit by this process, and
polls `PRAGMA data_version` to notice commits by other processes (the CLI writing to
the same store). A subscriber that falls a whole queue behind is cut off instead of
growing memory: it reconnects and catches up from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from peer.errors import StoreError
from peer.records import Record
from peer.store import Store

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 0.02
DEFAULT_QUEUE_BATCHES = 64
SCAN_LIMIT = 2000


class Subscriber:
    """One live reader: a bounded queue of record lists; None means "you fell behind"."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(size)
        self.overflowed = False

    def interrupt(self) -> None:
        """Wake the reader now (it then finds out why: overflow or revocation)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def offer(self, records: list[Record]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(records)
        except asyncio.QueueFull:
            self.overflowed = True
            self.interrupt()


class Feed:
    """Watches one store and publishes every record it gains to the subscribers."""

    def __init__(
        self,
        store: Store,
        poll_s: float = DEFAULT_POLL_S,
        queue_batches: int = DEFAULT_QUEUE_BATCHES,
    ) -> None:
        self.store = store
        self.poll_s = poll_s
        self.queue_batches = queue_batches
        self.cursor = 0
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_listening = store.on_change(self._wake.set)

    async def start(self) -> None:
        self.cursor = await self.store.last_seq()
        self._task = asyncio.create_task(self._run(), name="peer-feed")

    async def close(self) -> None:
        self._stop_listening()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self.queue_batches)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def _run(self) -> None:
        version = -1
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                if woken:  # a commit by this process: no need to ask SQLite first
                    await self._publish_new()
                    continue
                current = await self.store.data_version()
                if current != version:
                    version = current
                    await self._publish_new()
            except StoreError as exc:  # e.g. the disk is busy: try again at the next tick
                log.warning("live feed: %s", exc)

    async def _publish_new(self) -> None:
        while True:
            rows = await self.store.scan(after=self.cursor, limit=SCAN_LIMIT)
            if not rows:
                return
            self.cursor = rows[-1][0]
            records = [record for _, record in rows]
            for subscriber in list(self._subscribers):
                subscriber.offer(records)
            if len(rows) < SCAN_LIMIT:
                return
