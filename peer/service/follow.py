"""The serving side of `Follow` (docs/protocol.md §7.5): for one follower, which logs
this node feeds it and where it stands in each.

This node feeds a follower its own logs (it is their best source) and the logs the
follower grafted; of every other log it sends only notes of its head, once per head,
and only past what the follower holds. The follower (`peer.tree`) decides the grafts
and prunes; this only keeps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from peer.codec import wire
from peer.codec.wire import FollowControl
from peer.errors import LimitExceeded, PeerError
from peer.feed import Read
from peer.outbound import Outbound
from peer.records import Head, LogKey, Range, Record
from peer.segment import Segment, runs_of
from peer.store import Store

CONTROL_QUEUE = 16  # control messages read ahead of the handler (then reading waits)
# Notes of live records wait this long and go as one message: a bulk stored in many
# reads costs each standby follower one note, not one per read, and a single append's
# record reaches the neighbours it feeds before the notes wake the others.
NOTE_DELAY_S = 0.05


class Feeding:
    """One follower's state on this node."""

    def __init__(self, own_host: bytes | None) -> None:
        self.own_host = own_host
        self.position: dict[LogKey, int] = {}  # what the follower holds, or was sent
        self.grafted: set[LogKey] = set()
        self.pruned: set[LogKey] = set()
        self._noted: dict[LogKey, int] = {}

    def feeds(self, log: LogKey) -> bool:
        """Whether this node sends the follower `log`'s records (else notes)."""
        if log in self.grafted:
            return True
        return log.host == self.own_host and log not in self.pruned

    def apply(self, control: FollowControl) -> set[LogKey]:
        """Take a control message; the logs it grafted (to catch up now)."""
        for log, next_idx in control.have.items():
            self._advance(log, next_idx)
        for log in control.prune:
            self.grafted.discard(log)
            self.pruned.add(log)
        for log, next_idx in control.graft.items():
            self.grafted.add(log)
            self.pruned.discard(log)
            self._advance(log, next_idx)
        return set(control.graft)

    def catch_up(
        self, index: Mapping[LogKey, Head], logs: set[LogKey] | None
    ) -> tuple[list[Range], dict[LogKey, int]]:
        """What to send of `logs` (None: all, at the start): ranges of the logs fed,
        notes of the others past what the follower holds."""
        ranges: list[Range] = []
        notes: dict[LogKey, int] = {}
        for log, head in index.items():
            if logs is not None and log not in logs:
                continue
            start = self.position.get(log, 0)
            if head.next_idx <= start:
                continue
            if self.feeds(log):
                ranges.append(Range(log.host, log.tag, start, head.next_idx))
            elif logs is None:
                notes[log] = self._noted[log] = head.next_idx
        return ranges, notes

    def sent(self, records: Sequence[Record]) -> None:
        for log, (_, end) in runs_of(records).items():
            self._advance(log, end)

    def live(self, read: Read, max_batch: int) -> tuple[list[Segment], dict[LogKey, int]]:
        """Of a live read (each log's run ending signed): the segments to send, as
        pieces of `max_batch` records sliced past what the follower holds, and the
        notes of the other logs. Per log, not per record: each follower takes every
        read, and only the logs it is sent are cut."""
        send: list[Segment] = []
        notes: dict[LogKey, int] = {}
        position, noted = self.position, self._noted
        for log, next_idx in read.ends.items():
            start = position.get(log, 0)
            if next_idx <= start:
                continue
            if self.feeds(log):
                send += read.after(log, start, max_batch)
                position[log] = next_idx
            elif next_idx > noted.get(log, 0):
                notes[log] = noted[log] = next_idx
        return send, notes

    def _advance(self, log: LogKey, next_idx: int) -> None:
        if next_idx > self.position.get(log, 0):
            self.position[log] = next_idx


class FollowStream:
    """The messages of one Follow stream, for each control message and each live read."""

    def __init__(self, store: Store, own_host: bytes | None, batch: int) -> None:
        self.store = store
        self.feeding = Feeding(own_host)
        self.outbound = Outbound(store, batch)
        self.started = False
        self.due: dict[LogKey, int] = {}  # notes of live records, not sent yet
        self.segments = False  # the follower takes segments (it said so: 1.2)

    async def control(self, control: FollowControl) -> AsyncIterator[bytes]:
        """Apply it; then catch up: everything at the start, the grafted logs later."""
        grafted = self.feeding.apply(control)
        self.segments = self.segments or control.segments
        if control.more and not self.started:
            return  # the follower's `have` goes on in its next message
        index = await self.store.index()
        ranges, notes = self.feeding.catch_up(index, grafted if self.started else None)
        if not self.started and self.feeding.own_host is not None:
            yield wire.encode_follow_response([], {}, {}, self.feeding.own_host)
        self.started = True
        async for batch, keys in self.outbound.ranges(ranges):
            self.feeding.sent(batch)
            yield wire.encode_follow_response(batch, keys, {}, segments=self.segments)
        for chunk in note_messages(notes):
            yield wire.encode_follow_response([], {}, chunk)

    async def live(self, read: Read) -> AsyncIterator[bytes]:
        """Records this node just stored: those fed, now, as the segments read; the
        notes of the others are due (`notes`, NOTE_DELAY_S later)."""
        send, notes = self.feeding.live(read, self.outbound.max_batch)
        self.due.update(notes)  # a later note of a log is always the higher head
        async for batch, keys in self.outbound.segments(send):
            yield wire.encode_follow_response(batch, keys, {}, segments=self.segments)

    def notes(self) -> list[bytes]:
        """The notes due, as messages; none are due after."""
        due, self.due = self.due, {}
        return [wire.encode_follow_response([], {}, chunk) for chunk in note_messages(due)]


class Serving:
    """The loop of one Follow stream: answers to the follower's controls, the feed's
    live reads as they come, and the notes due NOTE_DELAY_S after their records."""

    def __init__(
        self,
        stream: FollowStream,
        controls: asyncio.Queue[FollowControl | PeerError | None],
        live: asyncio.Queue[Read | None],
        check: Callable[[], None],
    ) -> None:
        self.stream, self.controls, self.live, self.check = stream, controls, live, check
        self.next_control: asyncio.Future[Any] = asyncio.ensure_future(controls.get())
        self.next_live: asyncio.Future[Any] | None = None  # after the first control
        self.notes_due: asyncio.Future[Any] | None = None

    async def messages(self) -> AsyncGenerator[bytes, None]:
        """Until the follower closes its side; raises what ends the stream otherwise."""
        try:
            while True:
                futures = (self.next_control, self.next_live, self.notes_due)
                waiting = {future for future in futures if future is not None}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                self.check()
                if self.next_control in done:
                    control = self.next_control.result()
                    if control is None:
                        return  # the follower closed its side
                    async for message in self._control(control):
                        yield message
                if self.next_live in done:
                    async for message in self._live(self.next_live.result()):
                        yield message
                if self.notes_due in done:
                    self.notes_due = None
                    for message in self.stream.notes():
                        yield message
        finally:
            for future in (self.next_control, self.next_live, self.notes_due):
                if future is not None:
                    future.cancel()

    async def _control(self, control: FollowControl | PeerError) -> AsyncIterator[bytes]:
        if isinstance(control, PeerError):
            raise control
        async for message in self.stream.control(control):
            yield message
        self.next_control = asyncio.ensure_future(self.controls.get())
        self.next_live = self.next_live or asyncio.ensure_future(self.live.get())

    async def _live(self, read: Read | None) -> AsyncIterator[bytes]:
        if read is None:
            raise LimitExceeded("follower fell too far behind; follow again")
        async for message in self.stream.live(read):
            yield message
        self.next_live = asyncio.ensure_future(self.live.get())
        if self.stream.due and self.notes_due is None:
            self.notes_due = asyncio.ensure_future(asyncio.sleep(NOTE_DELAY_S))


async def read_controls(
    requests: AsyncIterator[bytes],
    controls: asyncio.Queue[FollowControl | PeerError | None],
    idle_s: float,
) -> None:
    """Decode the follower's messages into `controls`; None when it closes its side,
    the error when one is malformed (or none comes first within `idle_s`)."""
    try:
        try:
            async with asyncio.timeout(idle_s):  # in this task: a cancel reaches `requests`
                raw = await anext(requests)
        except TimeoutError:
            raise LimitExceeded(f"no FollowRequest within {idle_s:.0f} s") from None
        await controls.put(wire.decode_follow_request(raw))
        async for raw in requests:
            await controls.put(wire.decode_follow_request(raw))
        await controls.put(None)
    except StopAsyncIteration:
        await controls.put(None)
    except PeerError as error:
        await controls.put(error)


def note_messages(notes: Mapping[LogKey, int]) -> list[dict[LogKey, int]]:
    """Notes cut into messages of at most INDEX_PAGE (each fits 4 MiB)."""
    items = list(notes.items())
    return [dict(items[i : i + wire.INDEX_PAGE]) for i in range(0, len(items), wire.INDEX_PAGE)]
