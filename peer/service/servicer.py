"""The SyncService servicer: one store served to peers (index, ranges, pushes, live feed).

Handlers are registered for raw bytes (no deserializer) and parse requests themselves,
so malformed protobuf gets INVALID_ARGUMENT rather than UNKNOWN with an exception
text [M1]; `guards` turns whatever they raise into a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc

from peer.codec import wire
from peer.codec.wire import FollowControl, RemoteIndex, Subscription
from peer.errors import (
    IntegrityError,
    InvalidRecord,
    LimitExceeded,
    PeerError,
    PeerRefused,
    ProtocolError,
)
from peer.feed import Feed, Read, Subscriber
from peer.inbound import Inbound
from peer.outbound import Outbound
from peer.policy import CallerPolicy, is_offence
from peer.records import LogKey, Range
from peer.segment import Segment, runs_of
from peer.service.follow import CONTROL_QUEUE, FollowStream, Serving, read_controls
from peer.service.guards import Context, caller_id, drain, guard_stream, guard_unary
from peer.settings import Limits
from peer.store import Store
from peer.trust import Trust, caller_node_id
from peer.v1 import sync_pb2 as pb

log = logging.getLogger(__name__)
REJECTIONS = (IntegrityError, InvalidRecord, ProtocolError)  # invalid data, counted by class
SESSION_GRACE_S = 5.0  # a peer that read our index this recently is about to pull


class SyncServicer:
    """Serves one store to peers: its index, ranges of records, pushes, live feed."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        feed: Feed,
        limits: Limits,
        trust: Trust | None = None,
        own_host: bytes | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.own_host = own_host  # this node's host id: its logs are fed to followers
        self.feed = feed
        self.limits = limits
        self.trust = trust
        self.policy = CallerPolicy(rate=limits.rate, burst=limits.burst)
        self._streams: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # invalid data refused, by reason (class)
        self._slots: dict[str, set[_Slot]] = {}
        self._served: dict[str, dict[LogKey, int]] = {}  # per caller: what pulls sent it
        self._sessions: dict[str, float] = {}  # per caller: when it last read our index
        self.on_contact: Callable[[bytes], None] | None = None  # a pinned peer called

    def drop(self, node_ids: set[bytes]) -> None:
        """Cut the open streams of peers that are no longer trusted."""
        for node_id in node_ids:
            self._served.pop(node_id.hex(), None)
            self._sessions.pop(node_id.hex(), None)
            for slot in self._slots.get(node_id.hex(), set()):
                slot.revoke()

    # -- RPCs -----------------------------------------------------------------------

    async def get_index(self, request: bytes, context: Context) -> bytes:
        self._sessions[self._admit(context)] = time.monotonic()  # a session: it pulls next
        size, after = wire.decode_get_index_request(request)
        page = await self.store.index(after, size + 1)
        logs = dict(itertools.islice(page.items(), size))
        more = max(logs) if len(page) > size else None
        frozen = frozenset(await self.store.frozen_logs()) & logs.keys()
        keys = await self.store.host_keys({log.host for log in logs})
        answer = RemoteIndex(
            self.node_id, wire.PROTOCOL_VERSION, logs, keys, frozen, more, wire.PROTOCOL_MINOR
        )
        return wire.encode_index(answer)

    async def pull_records(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        ranges, max_batch, segments = wire.decode_pull_request(request)
        with (
            self._slot(context, gives=True) as slot,
            _cut_if_unread(self.limits.idle_s, context) as unread,
        ):
            outbound = Outbound(self.store, self._batch_size(max_batch))
            served = self._served.setdefault(slot.caller, {})
            async for batch, keys in outbound.ranges(ranges):
                slot.check()
                yield wire.encode_batch(pb.PullRecordsResponse, batch, keys, segments=segments)
                unread.wrote()
                for log, (_, end) in runs_of(batch).items():
                    served[log] = max(served.get(log, 0), end)

    async def push_records(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        inbound = Inbound(self.store)  # keys may come in an earlier message of the stream
        with self._slot(context) as slot:
            messages = aiter(requests)
            try:
                while True:
                    try:
                        raw = await asyncio.wait_for(anext(messages), self.limits.idle_s)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise LimitExceeded(
                            f"no message for {self.limits.idle_s:.0f} s: idle stream closed"
                        ) from None
                    slot.check()
                    # Stored before the next message is read: a pusher learns at once
                    # when its batch was refused, and is not sped past a peer's pull.
                    await inbound.store_now(*wire.decode_batch(pb.PushRecordsRequest, raw))
            except PeerError:
                await drain(messages)
                raise
        return wire.encode_push_response(inbound.added, inbound.duplicates)

    async def subscribe(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        wanted = wire.decode_subscribe_request(request)
        with self._slot(context, gives=not (wanted.hosts or wanted.tags)) as slot:
            subscriber = self.feed.subscribe()
            slot.wake = subscriber.interrupt
            handler = asyncio.current_task()
            watchdog = asyncio.create_task(self._cut_if_stuck(subscriber, handler))
            try:
                delivered: dict[LogKey, int] = dict(wanted.since)
                outbound = Outbound(self.store, self.limits.default_batch)
                async for batch, keys in outbound.ranges(await self._catch_up(wanted)):
                    for log, (_, end) in runs_of(batch).items():
                        delivered[log] = end
                    yield wire.encode_batch(pb.SubscribeResponse, batch, keys)
                while True:
                    read = await subscriber.queue.get()
                    slot.check()
                    if read is None:
                        raise LimitExceeded("subscriber fell too far behind; resubscribe")
                    fresh = _unseen(read, wanted, delivered, outbound.max_batch)
                    async for batch, keys in outbound.segments(fresh):
                        yield wire.encode_batch(pb.SubscribeResponse, batch, keys)
            finally:
                watchdog.cancel()
                self.feed.unsubscribe(subscriber)

    async def follow(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """Feed the follower its grafted logs and this node's own, note the others'
        heads (docs/protocol.md §7.5), while it sends grafts and prunes. Live records
        wait for the first control message (it says what the follower holds)."""
        with self._slot(context) as slot:
            controls: asyncio.Queue[FollowControl | PeerError | None] = asyncio.Queue(CONTROL_QUEUE)
            reader = asyncio.create_task(read_controls(requests, controls, self.limits.idle_s))
            subscriber = self.feed.subscribe()
            slot.wake = subscriber.interrupt
            watchdog = asyncio.create_task(self._cut_if_stuck(subscriber, asyncio.current_task()))
            stream = FollowStream(self.store, self.own_host, self.limits.default_batch)
            try:
                serving = Serving(stream, controls, subscriber.queue, slot.check)
                async with contextlib.aclosing(serving.messages()) as messages:
                    async for message in messages:
                        yield message
            finally:
                for task in (reader, watchdog):
                    task.cancel()
                self.feed.unsubscribe(subscriber)

    async def _cut_if_stuck(
        self, subscriber: Subscriber, handler: asyncio.Task[Any] | None
    ) -> None:
        """A subscriber that fell a queue behind learns it at its next read; one that
        reads nothing leaves the handler blocked in a write (the transport buffers a few
        MB per stream [M10]), so after write_idle_s its call is cancelled."""
        await subscriber.fell_behind.wait()
        await asyncio.sleep(self.limits.write_idle_s)
        if handler is not None:
            log.info("cancelling a subscriber that reads nothing")
            handler.cancel()

    # -- helpers --------------------------------------------------------------------

    async def _catch_up(self, wanted: Subscription) -> list[Range]:
        """What a subscriber lacks of the logs it follows, from where it says it is."""
        return [
            Range(log.host, log.tag, wanted.since.get(log, 0), head.next_idx)
            for log, head in (await self.store.index()).items()
            if wanted.wants(log)
        ]

    def _batch_size(self, requested: int) -> int:
        if requested <= 0:
            return self.limits.default_batch
        return min(requested, self.limits.max_batch)

    def _admit(self, context: Context) -> str:
        """Who is calling, if they may: the pinned node id (mTLS), else the address."""
        if self.trust is None:
            return caller_id(context)
        presented = list(context.auth_context().get("x509_pem_cert") or [b""])
        node_id = caller_node_id(presented[0])
        if node_id is None or not self.trust.admits(node_id):
            raise PeerRefused(
                "this node does not trust you: its owner must run `peer peers add` with "
                "your node id (`peer id`)"
            )
        self.policy.admit(node_id.hex())
        if self.on_contact is not None:
            self.on_contact(node_id)
        return node_id.hex()

    def note_error(self, context: Context, error: BaseException) -> None:
        """Count invalid data by reason, and against a pinned caller (plaintext callers
        on loopback are tests and tools: they have no identity to hold to account)."""
        if isinstance(error, REJECTIONS):
            self.rejected[type(error).__name__] += 1
        if self.trust is not None and isinstance(error, PeerError) and is_offence(error):
            presented = list(context.auth_context().get("x509_pem_cert") or [b""])
            node_id = caller_node_id(presented[0])
            if node_id is not None:
                self.policy.note(node_id.hex(), error)

    def is_taking(self, node_id: bytes) -> bool:
        """Whether the peer is pulling from this node, or following all of it live, or
        opened a session with it within SESSION_GRACE_S (its pull comes next, unless
        another of its links pulls the same): it then gets what it lacks by itself, and
        pushing the same to it is waste (a node back in a mesh took its backlog pushed
        from every neighbour)."""
        caller = node_id.hex()
        if any(slot.gives for slot in self._slots.get(caller, ())):
            return True
        opened = self._sessions.get(caller)
        return opened is not None and time.monotonic() - opened < SESSION_GRACE_S

    def served(self, node_id: bytes) -> Mapping[LogKey, int]:
        """Per log, the idx after the last record this server's pulls sent the peer:
        a round pushing to it from an older plan leaves those out (they crossed once)."""
        return self._served.get(node_id.hex(), {})

    @contextmanager
    def _slot(self, context: Context, gives: bool = False) -> Iterator[_Slot]:
        """Count a caller's concurrent streams; past the cap it gets RESOURCE_EXHAUSTED.
        The stream is registered so that removing the peer can cut it. `gives`: the
        stream gives the caller every record it lacks (a pull, an unfiltered follow)."""
        caller = self._admit(context)
        if self._streams[caller] >= self.limits.streams_per_caller:
            raise LimitExceeded(
                f"too many concurrent streams from one caller "
                f"(limit {self.limits.streams_per_caller})"
            )
        self._streams[caller] += 1
        slot = _Slot(caller, gives)
        slots = self._slots.setdefault(caller, set())
        slots.add(slot)
        try:
            yield slot
        finally:
            self._streams[caller] -= 1
            slots.discard(slot)
            if not self._streams[caller]:
                del self._streams[caller]
                self._slots.pop(caller, None)


class _Slot:
    """One open stream of a caller; revoked when the caller is unpinned."""

    def __init__(self, caller: str, gives: bool = False) -> None:
        self.caller = caller
        self.gives = gives
        self.revoked = False
        self.wake: Callable[[], None] | None = None  # to interrupt a stream that waits

    def revoke(self) -> None:
        self.revoked = True
        if self.wake is not None:
            self.wake()

    def check(self) -> None:
        if self.revoked:
            raise PeerRefused("this node no longer trusts you (you were removed from its peers)")


class _Unread:
    """Ends a streaming call when no message went out for `idle_s`: a caller that reads
    nothing leaves the handler blocked in a write once the transport's buffers are full
    (a few MB per stream [M10]), with no deadline of its own. The handler is cancelled
    and the call answered RESOURCE_EXHAUSTED (which the caller sees when it reads on, or
    never if it went away). `wrote()` after each message written."""

    def __init__(self, idle_s: float, context: Context) -> None:
        self.idle_s = idle_s
        self.context = context
        self._handler = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self.wrote()

    def wrote(self) -> None:
        self.stop()
        self._timer = asyncio.get_running_loop().call_later(self.idle_s, self._cut)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _cut(self) -> None:
        log.info("closing a stream whose caller read nothing for %.0f s", self.idle_s)
        closing = asyncio.ensure_future(self._answer())
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
        if self._handler is not None:
            self._handler.cancel()

    async def _answer(self) -> None:
        with contextlib.suppress(Exception):  # the caller may be gone: nothing to tell
            await self.context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"nothing read for {self.idle_s:.0f} s: stream closed",
            )


_CLOSING: set[asyncio.Future[None]] = set()  # status answers still being sent


@contextmanager
def _cut_if_unread(idle_s: float, context: Context) -> Iterator[_Unread]:
    unread = _Unread(idle_s, context)
    try:
        yield unread
    finally:
        unread.stop()


def _unseen(
    read: Read, wanted: Subscription, delivered: dict[LogKey, int], max_batch: int
) -> list[Segment]:
    """Of a live read, the segments of the logs wanted past what was sent (catch-up
    may already have sent some), as pieces of `max_batch` records, sliced: nothing is
    decoded here, and the logs not wanted are not even cut."""
    fresh: list[Segment] = []
    for log, end in read.ends.items():
        start = delivered.get(log, 0)
        if end > start and wanted.wants(log):
            fresh += read.after(log, start, max_batch)
            delivered[log] = end
    return fresh


def guarded_handlers(servicer: SyncServicer) -> dict[str, Callable[..., Any]]:
    """The service's methods on raw bytes, each behind its guard (failures made a
    status): what the grpc server registers, and what an in-memory channel calls."""
    note = servicer.note_error
    return {
        "GetIndex": guard_unary(servicer.get_index, note),
        "PullRecords": guard_stream(servicer.pull_records, note),
        "PushRecords": guard_unary(servicer.push_records, note),
        "Subscribe": guard_stream(servicer.subscribe, note),
        "Follow": guard_stream(servicer.follow, note),
    }


def method_handlers(servicer: SyncServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """The service's methods, all on raw bytes (see the module docstring)."""
    handlers = guarded_handlers(servicer)
    return grpc.method_handlers_generic_handler(
        wire.SERVICE_NAME,
        {
            "GetIndex": grpc.unary_unary_rpc_method_handler(handlers["GetIndex"]),
            "PullRecords": grpc.unary_stream_rpc_method_handler(handlers["PullRecords"]),
            "PushRecords": grpc.stream_unary_rpc_method_handler(handlers["PushRecords"]),
            "Subscribe": grpc.unary_stream_rpc_method_handler(handlers["Subscribe"]),
            "Follow": grpc.stream_stream_rpc_method_handler(handlers["Follow"]),
        },
    )
