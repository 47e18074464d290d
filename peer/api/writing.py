"""Writing through the daemon: many small appends at once, and a producer's stream.

- `Appends` sends the `Connection.append` calls a program makes at once together: while
  IN_FLIGHT Append calls are under way, later calls wait and then go in one Append per
  log, up to GROUP_ITEMS items (each caller's items stay consecutive, and each caller
  gets its own idx; a call of more items goes alone). The daemon groups what arrives
  from all connections again (`peer.commit`).
- `Writer` is a producer's AppendStream: `write` buffers items and sends them in
  messages of up to `batch` items; the daemon acknowledges each message once durable,
  and `flush` waits for those acknowledgements. `acked` is always exactly what is
  durable, also after a failure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from peer.client import AppendStreamCall, LocalClient
from peer.codec.local import MAX_APPEND_ITEMS, Ack, Appended
from peer.crypto import MAX_PLAINTEXT
from peer.errors import InvalidRecord, PeerError, PeerUnavailable, UsageError

IN_FLIGHT = 4  # Append calls under way at once on one connection
GROUP_ITEMS = 2_500  # most items of several calls in one Append (smaller: the daemon
# writes one while the next arrives; larger: fewer calls; 2,500 was best at 3k-30k at once)
GROUP_BYTES = 4 << 20  # most plaintext bytes sent together in one Append
WRITE_BATCH = 1000  # items per AppendStream message
WRITE_BATCH_BYTES = 1 << 20  # or fewer, past this many bytes
UNACKED_RECORDS = 100_000  # a writer waits while this many records are unacknowledged


def as_bytes(items: Sequence[bytes | str]) -> list[bytes]:
    """Items as bytes (text as UTF-8), each within the record limit."""
    data = [item.encode() if isinstance(item, str) else item for item in items]
    for item in data:
        if len(item) > MAX_PLAINTEXT:
            raise InvalidRecord(
                f"an item of {len(item):,} bytes is over the record limit of "
                f"{MAX_PLAINTEXT:,} bytes"
            )
    return data


@dataclass(eq=False, slots=True)
class _Waiting:
    tag: str
    items: list[bytes]
    size: int
    done: asyncio.Future[Appended]


class Appends:
    """The Append calls of one connection, sent together when many come at once."""

    def __init__(self, client: LocalClient, in_flight: int = IN_FLIGHT) -> None:
        self._client = client
        self._in_flight_max = in_flight
        self._in_flight = 0
        self._waiting: deque[_Waiting] = deque()
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def append(self, tag: str, items: list[bytes]) -> Appended:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(tag, items, sum(map(len, items)), loop.create_future())
        self._waiting.append(waiting)
        if not self._scheduled:  # let the calls made in this turn of the loop join
            self._scheduled = True
            loop.call_soon(self._pump)
        return await waiting.done

    def _pump(self) -> None:
        self._scheduled = False
        while self._in_flight < self._in_flight_max:
            group = self._take()
            if not group:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._send(group), name="append")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting]:
        """The oldest call and the later ones of its log, as many as one Append takes."""
        group: list[_Waiting] = []
        rest: deque[_Waiting] = deque()
        count = size = 0
        while self._waiting:
            waiting = self._waiting.popleft()
            if waiting.done.done():  # its caller was cancelled before it was sent
                continue
            fits = count + len(waiting.items) <= GROUP_ITEMS and size + waiting.size <= GROUP_BYTES
            if not group or (fits and waiting.tag == group[0].tag):
                group.append(waiting)
                count += len(waiting.items)
                size += waiting.size
            else:
                rest.append(waiting)
        self._waiting = rest
        return group

    async def _send(self, group: list[_Waiting]) -> None:
        try:
            await self._send_group(group)
        finally:
            self._in_flight -= 1
            self._pump()

    async def _send_group(self, group: list[_Waiting]) -> None:
        items = [item for waiting in group for item in waiting.items]
        try:
            appended = await self._client.append(group[0].tag, items)
        except InvalidRecord as error:  # refused whole: nothing of it was written
            if len(group) == 1:
                _fail(group[0].done, error)
                return
            for waiting in group:  # each on its own: only the one at fault fails
                await self._send_group([waiting])
            return
        except PeerError as error:  # not retried: it may have failed after its commit
            for waiting in group:
                _fail(waiting.done, error)
            return
        start = 0
        for waiting in group:
            end = start + len(waiting.items)
            if not waiting.done.done():
                waiting.done.set_result(
                    Appended(
                        appended.host,
                        appended.tag,
                        appended.first_idx + start,
                        end - start,
                        appended.timestamps[start:end],
                    )
                )
            start = end


def _fail(future: asyncio.Future[Appended], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class Writer:
    """A producer's appends to one log over one AppendStream (`Connection.writer`).

    `await write(*items)` returns once the items are buffered or sent; it waits only
    when the daemon is behind (UNACKED_RECORDS unacknowledged, or flow control).
    `await flush()` sends what is buffered and waits until all of it is durable.
    `acked` lists the idx ranges (first, last) known durable, merged; after a failure
    it is exactly what the daemon committed and acknowledged, and the error is raised
    by the next `write`, `flush` or the end of the `async with`.
    """

    def __init__(self, stream: AppendStreamCall, tag: str, batch: int = WRITE_BATCH) -> None:
        if not 1 <= batch <= MAX_APPEND_ITEMS:
            raise UsageError(f"a writer's batch must be 1 to {MAX_APPEND_ITEMS:,} items")
        self.tag = tag
        self.batch = batch
        self.acked: list[tuple[int, int]] = []
        self.durable = 0  # records acknowledged
        self.error: PeerError | None = None
        self._stream = stream
        self._buffer: list[bytes] = []
        self._buffered_bytes = 0
        self._unacked: dict[int, int] = {}  # seq of a message sent -> its item count
        self._unacked_records = 0
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._soon: asyncio.Task[None] | None = None
        self._closed = False
        self._reader = asyncio.create_task(self._read_acks(), name="append acks")

    async def write(self, *items: bytes | str) -> None:
        """Append these items (in this order, after everything written before)."""
        self._check()
        data = as_bytes(items)
        self._buffer.extend(data)
        self._buffered_bytes += sum(map(len, data))
        if len(self._buffer) >= self.batch or self._buffered_bytes >= WRITE_BATCH_BYTES:
            await self._send()
        elif self._soon is None:
            self._soon = asyncio.create_task(self._send_soon(), name="append send")

    async def flush(self) -> list[tuple[int, int]]:
        """Send what is buffered, wait until everything written is durable; `acked`."""
        await self._send()
        while self._unacked and self.error is None:
            self._changed.clear()
            await self._changed.wait()
        self._check()
        return list(self.acked)

    async def close(self, *, flush: bool = True) -> None:
        """Flush (unless not `flush`: the buffer is dropped), end the stream, and wait
        for the daemon's last acknowledgements."""
        if self._closed:
            return
        try:
            if flush:
                await self.flush()
            else:
                self._buffer.clear()
            self._closed = True
            async with self._send_lock:
                if self.error is None:
                    await self._stream.done_writing()
            await self._reader
        except BaseException:
            self._stream.cancel()
            self._reader.cancel()
            raise
        finally:
            self._closed = True
            if self._soon is not None:
                self._soon.cancel()
        self._check_error()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self._closed:
            raise UsageError("this writer is closed")

    async def _send_soon(self) -> None:
        """Send a part-filled buffer once the producer yields to the loop."""
        try:
            await self._send()
        except PeerError:
            pass  # kept in self.error, raised by the next call
        finally:
            self._soon = None

    async def _send(self) -> None:
        async with self._send_lock:
            if not self._buffer or self.error is not None:
                return
            items, self._buffer, self._buffered_bytes = self._buffer, [], 0
            while self._unacked and self._unacked_records + len(items) > UNACKED_RECORDS:
                self._changed.clear()
                await self._changed.wait()
                self._check_error()
            self._unacked[self._seq] = len(items)
            self._unacked_records += len(items)
            self._seq += 1
            try:
                await self._stream.write(self.tag, items)
            except PeerError as error:
                self._failed(error)
            self._check_error()

    def _check_error(self) -> None:
        if self.error is not None:
            raise self.error

    async def _read_acks(self) -> None:
        try:
            while (acks := await self._stream.read()) is not None:
                for ack in acks:
                    self._take(ack)
                self._changed.set()
            if self._unacked:  # the daemon ended the stream before answering everything
                self._failed(PeerUnavailable("the local daemon ended the stream early"))
        except PeerError as error:
            self._failed(error)
        finally:
            self._changed.set()

    def _take(self, ack: Ack) -> None:
        count = self._unacked.pop(ack.seq, 0)
        self._unacked_records -= count
        self.durable += ack.count
        last = ack.first_idx + ack.count - 1
        if self.acked and self.acked[-1][1] + 1 == ack.first_idx:
            self.acked[-1] = (self.acked[-1][0], last)
        else:
            self.acked.append((ack.first_idx, last))

    def _failed(self, error: PeerError) -> None:
        if self.error is None:
            self.error = error
        self._changed.set()
