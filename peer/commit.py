"""Group commit: the daemon's appends for programs, from any number of callers, in few
transactions.

Every append a program asks the daemon for (a unary `Append`, each message of an
`AppendStream`) is queued here, and one task writes what is queued: the oldest
request, with every request queued behind it for the same log, up to GROUP_RECORDS
records, in one transaction through the node's own append (`Node.append_written`: the store,
whose commit wakes the live feed and the links, then the views). Each request keeps
its items consecutive and learns its own idx once the transaction has committed. A
request that arrives while a transaction is in flight joins the next one: the more
callers at once, the larger the transactions, and a signature and a commit are paid
per transaction, not per record.

A request may name the request it comes `after` (the previous message of the same
stream): it is written only after that one, and only if that one was written, so what
a stream gets written is always a prefix of what it sent, even across logs.

When a transaction of several requests fails because a request is malformed
(InvalidRecord: an item over the record limit), each request is retried alone, so
that the one at fault fails only itself. Any other failure fails the whole group and
is not retried: it may have come after the commit (`Node.append` brings the views up
to date after it), and writing again would duplicate records.

Bounded: at most `queued_records` records and `queued_bytes` bytes wait (or are being
written). A unary call past that is refused at once (LimitExceeded, answered as
RESOURCE_EXHAUSTED, with what to do); a stream waits for room instead (`room`), and
its flow control slows the producer down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from peer.errors import InvalidRecord, LimitExceeded, PeerUnavailable, UsageError
from peer.records import Written

GROUP_RECORDS = 10_000  # most records per transaction (a larger request goes alone)
QUEUED_RECORDS = 200_000  # most records waiting, all callers together
QUEUED_BYTES = 128 << 20  # most plaintext bytes waiting, all callers together

STOPPED_WRITING = (
    "the daemon stopped while writing these records: they are durable only if the "
    "log's next_idx shows them once it runs again"
)
AppendFn = Callable[[str, Sequence[bytes]], Awaitable[Written]]


@dataclass(eq=False, slots=True)
class _Request:
    tag: str
    items: Sequence[bytes]
    size: int
    done: asyncio.Future[Written]
    after: asyncio.Future[Written] | None = None  # written only once that one was


class GroupCommit:
    """Queues appends and writes them in groups, one transaction at a time."""

    def __init__(
        self,
        append: AppendFn,
        *,
        group_records: int = GROUP_RECORDS,
        queued_records: int = QUEUED_RECORDS,
        queued_bytes: int = QUEUED_BYTES,
    ) -> None:
        self._append = append
        self.group_records = group_records
        self.queued_records = queued_records
        self.queued_bytes = queued_bytes
        self._queue: deque[_Request] = deque()
        self._records = 0  # queued or being written
        self._bytes = 0
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.transactions = 0

    def has_room(self, count: int, size: int) -> bool:
        """Whether `count` items of `size` bytes fit now (always, when nothing waits)."""
        if self._records == 0:
            return True
        return (
            self._records + count <= self.queued_records and self._bytes + size <= self.queued_bytes
        )

    async def room(self, count: int, size: int) -> None:
        """Wait until `count` items of `size` bytes fit (a stream's flow control)."""
        while not self.has_room(count, size):
            self._freed.clear()
            await self._freed.wait()

    def submit(
        self,
        tag: str,
        items: Sequence[bytes],
        after: asyncio.Future[Written] | None = None,
    ) -> asyncio.Future[Written]:
        """Queue one request; its future gives its records once they are durable.
        `after`: an earlier request's future; this one waits for it, and fails if it
        failed. LimitExceeded at once when the queue is full; cancelling the future
        before its transaction starts withdraws the request."""
        if self._closed:
            raise PeerUnavailable("the daemon is stopping; append again once it runs")
        size = sum(len(item) for item in items)
        if not self.has_room(len(items), size):
            raise LimitExceeded(
                f"the daemon has {self._records:,} records waiting to be written (at most "
                f"{self.queued_records:,}); wait for your earlier appends to finish before "
                "sending more, or append through AppendStream (`peer.api`'s writer), "
                "which waits for room instead"
            )
        done = asyncio.get_running_loop().create_future()
        request = _Request(tag, items, size, done, after)
        self._queue.append(request)
        self._records += len(items)
        self._bytes += size
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group commit")
        return request.done

    async def append(self, tag: str, items: Sequence[bytes]) -> Written:
        """Append and wait until durable (LimitExceeded when the queue is full)."""
        return await self.submit(tag, items)

    async def close(self) -> None:
        """Stop writing; what still waits fails as unavailable."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for request in self._queue:
            if not request.done.done():
                request.done.set_exception(PeerUnavailable("the daemon stopped"))
        self._queue.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group = self._take()
                try:
                    if group:
                        await self._commit(group)
                except asyncio.CancelledError:  # close(): the transaction rolled back,
                    for request in group:  # unless it had committed before the views
                        _fail(request, PeerUnavailable(STOPPED_WRITING))
                    raise
                finally:
                    self._release(group)

    def _take(self) -> list[_Request]:
        """The oldest live request and the later ones of its log, up to a group's size;
        withdrawn (cancelled) requests are dropped on the way."""
        group: list[_Request] = []
        taken: set[asyncio.Future[Written]] = set()
        rest: deque[_Request] = deque()
        count = 0
        while self._queue:
            request = self._queue.popleft()
            if request.done.done():  # withdrawn before it was written
                self._release([request])
                continue
            fits = not group or count + len(request.items) <= self.group_records
            ready = request.after is None or request.after.done() or request.after in taken
            if ready and fits and (not group or request.tag == group[0].tag):
                group.append(request)
                taken.add(request.done)
                count += len(request.items)
            else:
                rest.append(request)
        self._queue = rest
        return group

    def _release(self, group: list[_Request]) -> None:
        for request in group:
            self._records -= len(request.items)
            self._bytes -= request.size
        self._freed.set()

    async def _commit(self, group: list[_Request]) -> None:
        group = [request for request in group if not _after_failed(request)]
        if not group:
            return
        items = [item for request in group for item in request.items]
        try:
            written = await self._append(group[0].tag, items)
        except InvalidRecord as error:  # rolled back: nothing of the group was written
            if len(group) == 1:
                _fail(group[0], error)
                return
            for request in group:  # each on its own: only the one at fault fails
                await self._commit([request])
            return
        except Exception as error:  # PeerError, or a bug (the caller's guard logs it)
            for request in group:
                _fail(request, error)
            return
        self.transactions += 1
        start = 0
        for request in group:
            end = start + len(request.items)
            if not request.done.done():
                request.done.set_result(written.part(start, end))
            start = end


def _after_failed(request: _Request) -> bool:
    """Fail `request` if the request it comes after failed (or was withdrawn)."""
    after = request.after
    if after is None or not after.done() or (not after.cancelled() and not after.exception()):
        return False
    _fail(request, UsageError("not written: an earlier message of its stream failed"))
    return True


def _fail(request: _Request, error: BaseException) -> None:
    if not request.done.done():
        request.done.set_exception(error)
