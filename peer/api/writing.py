"""Writing through the daemon: single appends from many callers, and a producer's stream.

- `Appends` carries a connection's `Connection.append` calls on one AppendStream: a
  call is a message on an open stream, not a call of its own (here a stream message
  costs about half a unary call, which one awaited append at a time feels most). Calls
  made at once go together: while IN_FLIGHT messages wait for their ack, later calls
  wait and then go in one message per log, up to GROUP_ITEMS items (each caller's
  items stay consecutive, and each caller gets its own idx). The daemon groups what
  arrives from all connections again (`peer.commit`).
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
from peer.errors import InvalidRecord, PeerError, PeerUnavailable, ProtocolError, UsageError
from peer.records import check_tag
from peer.settings import MAX_MESSAGE_BYTES

IN_FLIGHT = 4  # messages of single appends unacknowledged at once on one connection
GROUP_ITEMS = 2_500  # most items of several calls in one message (smaller: the daemon
# writes one while the next arrives; larger: fewer messages; 2,500 was best at 3k-30k at once)
GROUP_BYTES = 4 << 20  # most plaintext bytes sent together in one message
WRITE_BATCH = 1000  # items per AppendStream message
WRITE_BATCH_BYTES = 1 << 20  # or fewer, past this many bytes
UNACKED_RECORDS = 100_000  # a writer waits while this many records are unacknowledged
ITEM_FRAMING = 8  # most bytes protobuf adds to an item (field tag, length), and then some
MESSAGE_FRAMING = 128  # and to a message (its tag)


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
    alone: bool = False  # sent in a message of its own (its group was refused)


class _Open:
    """One AppendStream of single appends: the messages sent, not yet acknowledged."""

    def __init__(self, call: AppendStreamCall) -> None:
        self.call = call
        self.sent: deque[tuple[float, list[_Waiting]]] = deque()  # (loop time, callers)
        self.acked = 0  # the seq the next ack names
        self.ended = False
        self.reader: asyncio.Task[None] | None = None
        self.overdue: asyncio.TimerHandle | None = None


class Appends:
    """The `Connection.append` calls of one connection, over one AppendStream.

    The daemon writes a stream's messages in order, and none after one that fails. So
    when a message is refused as malformed (InvalidRecord), its caller gets the error
    (a message of several callers is sent again caller by caller, so that only the one
    at fault fails) and the calls sent after it go again on a new stream. Any other
    failure, or no ack within the client's timeout, fails every call not acknowledged,
    and none is sent again: it may have been written (as with a failed unary call).
    """

    def __init__(self, client: LocalClient, in_flight: int = IN_FLIGHT) -> None:
        self._client = client
        self._in_flight = in_flight
        self._waiting: deque[_Waiting] = deque()
        self._stream: _Open | None = None
        self._sender: asyncio.Task[None] | None = None
        self._acked = asyncio.Event()

    async def append(self, tag: str, items: list[bytes]) -> Appended:
        """Append `items` to log `tag`, consecutive, in one transaction; once durable.
        What the daemon would refuse of a message is refused here: refused there, it
        would end the stream the other calls share."""
        check_tag(tag)
        size = sum(map(len, items))
        framed = size + len(items) * ITEM_FRAMING + MESSAGE_FRAMING
        if len(items) > MAX_APPEND_ITEMS or framed > MAX_MESSAGE_BYTES:
            raise InvalidRecord(
                f"one append takes at most {MAX_APPEND_ITEMS:,} items and "
                f"{MAX_MESSAGE_BYTES >> 20} MiB; append them in parts, or stream them "
                "(`Connection.writer`)"
            )
        loop = asyncio.get_running_loop()
        waiting = _Waiting(tag, items, size, loop.create_future())
        self._waiting.append(waiting)
        self._start_sending()
        return await waiting.done

    async def close(self) -> None:
        """End the stream once what was sent is answered (within the timeout); calls
        not sent yet fail."""
        closed = PeerUnavailable("the connection was closed before this append was answered")
        if self._sender is not None:
            self._sender.cancel()
        for waiting in self._waiting:
            _fail(waiting.done, closed)
        self._waiting.clear()
        stream, self._stream = self._stream, None
        if stream is None or stream.ended:
            return
        try:
            async with asyncio.timeout(self._client.timeout):
                await stream.call.done_writing()
                if stream.reader is not None:
                    await stream.reader
        except (PeerError, TimeoutError):
            pass
        self._end(stream, closed)

    def _start_sending(self) -> None:
        """A task to send what waits, started after the calls made in this turn of the
        loop (so that they go together)."""
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_waiting(), name="appends")

    async def _send_waiting(self) -> None:
        while self._waiting:
            stream = self._open()
            while len(stream.sent) >= self._in_flight and not stream.ended:
                self._acked.clear()
                await self._acked.wait()
            if stream.ended:  # what it had not answered was sent again or failed
                continue
            group = self._take()
            if not group:
                return
            stream.sent.append((asyncio.get_running_loop().time(), group))
            self._watch_overdue(stream)
            try:
                await stream.call.write(group[0].tag, [i for w in group for i in w.items])
            except PeerError:  # it ended: its reader reads the acks before, then why
                if stream.reader is not None:
                    await stream.reader

    def _open(self) -> _Open:
        if self._stream is None or self._stream.ended:
            stream = self._stream = _Open(self._client.append_stream())
            stream.reader = asyncio.create_task(self._read_acks(stream), name="append acks")
        return self._stream

    def _take(self) -> list[_Waiting]:
        """The oldest call and the later ones of its log, as many as one message takes."""
        group: list[_Waiting] = []
        rest: deque[_Waiting] = deque()
        count = size = 0
        while self._waiting:
            waiting = self._waiting.popleft()
            if waiting.done.done():  # its caller was cancelled before it was sent
                continue
            fits = count + len(waiting.items) <= GROUP_ITEMS and size + waiting.size <= GROUP_BYTES
            if not group or (
                fits and waiting.tag == group[0].tag and not (waiting.alone or group[0].alone)
            ):
                group.append(waiting)
                count += len(waiting.items)
                size += waiting.size
            else:
                rest.append(waiting)
        self._waiting = rest
        return group

    async def _read_acks(self, stream: _Open) -> None:
        error: PeerError = PeerUnavailable("the local daemon ended the append stream early")
        try:
            while (acks := await stream.call.read()) is not None:
                for ack in acks:
                    self._acknowledged(stream, ack)
        except PeerError as exc:
            error = exc
        finally:
            self._end(stream, error)

    def _acknowledged(self, stream: _Open, ack: Ack) -> None:
        if not stream.sent or ack.seq != stream.acked:
            raise ProtocolError(f"the local daemon acknowledged message {ack.seq} out of order")
        _, group = stream.sent.popleft()
        stream.acked += 1
        start = 0
        for waiting in group:
            end = start + len(waiting.items)
            if not waiting.done.done():
                stamps = ack.timestamps[start:end]
                appended = Appended(ack.host, ack.tag, ack.first_idx + start, end - start, stamps)
                waiting.done.set_result(appended)
            start = end
        self._acked.set()

    def _end(self, stream: _Open, error: PeerError) -> None:
        """The stream is over: its unacknowledged calls are sent again or fail."""
        if stream.ended:
            return
        stream.ended = True
        stream.call.cancel()  # (nothing, if it ended already)
        if stream.overdue is not None:
            stream.overdue.cancel()
        unacked = [group for _, group in stream.sent]
        stream.sent.clear()
        again: list[_Waiting] = []
        if unacked and isinstance(error, InvalidRecord):  # refused whole, nothing after
            at_fault, *after = unacked
            if len(at_fault) == 1:
                _fail(at_fault[0].done, error)
            else:
                for waiting in at_fault:
                    waiting.alone = True
                again += at_fault
            again += [waiting for group in after for waiting in group]
        else:
            for waiting in (waiting for group in unacked for waiting in group):
                _fail(waiting.done, error)
        self._waiting.extendleft(reversed(again))
        self._acked.set()
        if again:
            self._start_sending()

    def _watch_overdue(self, stream: _Open) -> None:
        """One timer per stream, for the oldest message unacknowledged."""
        if stream.overdue is not None or not stream.sent:
            return
        due = stream.sent[0][0] + self._client.timeout
        stream.overdue = asyncio.get_running_loop().call_at(due, self._check, stream)

    def _check(self, stream: _Open) -> None:
        stream.overdue = None
        loop = asyncio.get_running_loop()
        if stream.sent and stream.sent[0][0] + self._client.timeout <= loop.time():
            self._end(stream, _overdue(self._client.timeout))
        else:
            self._watch_overdue(stream)


def _overdue(timeout: float) -> PeerUnavailable:
    return PeerUnavailable(
        f"the local daemon did not acknowledge an append within {timeout:g} s; it may "
        "still be written: the log's next_idx (peer status) tells"
    )


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
