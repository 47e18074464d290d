"""An in-memory channel to a servicer (grpclib's `ChannelFor` idea): `MemoryRemote` is
a `peer.remote.Remote` that calls a `SyncServicer`'s guarded handlers in this process,
with every request and answer encoded and parsed by the same codec as on the wire, and
every refusal mapped back to the same error the grpc client raises.

For tests and simulations: many nodes in one process, no sockets, no TLS. What it does
not exercise is grpc itself (flow control, deadlines, keepalive, message size limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc

from peer.codec import wire
from peer.codec.status import error_for
from peer.codec.wire import FollowControl, Followed, RemoteIndex
from peer.feed import Feed
from peer.records import LogKey, Range
from peer.remote import Batch
from peer.service.servicer import SyncServicer, guarded_handlers
from peer.settings import Limits
from peer.store import Store
from peer.v1 import sync_pb2 as pb


class _Aborted(Exception):
    """What `context.abort` raises here (grpc raises its own AbortError)."""

    def __init__(
        self, code: grpc.StatusCode, details: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(details)
        self.code, self.details, self.metadata = code, details, metadata or {}


class _Context:
    """The part of a grpc.aio servicer context the handlers use, for a plaintext caller."""

    def __init__(self, caller: str) -> None:
        self._caller = caller
        self._metadata: dict[str, str] = {}
        self.aborted: _Aborted | None = None  # the status answered, once it is

    def peer(self) -> str:
        return self._caller

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self._metadata = dict(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborted = _Aborted(code, details, self._metadata)
        raise self.aborted


class MemoryRemote:
    """A Remote that is a servicer in this process; `async with` closes nothing."""

    def __init__(self, servicer: SyncServicer, target: str = "memory", caller: str = "") -> None:
        self.target = target
        self._handlers = guarded_handlers(servicer)
        self._caller = caller or f"ipv4:127.0.0.1:{id(self) % 65536}"
        self.protocol_minor = 0  # the peer's, once its index was read (push segments?)

    async def __aenter__(self) -> MemoryRemote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get_index(self) -> RemoteIndex:
        index = await wire.read_whole_index(lambda request: self._unary("GetIndex", request))
        self.protocol_minor = index.protocol_minor
        return index

    async def pull(self, ranges: Iterable[Range], max_batch: int = 0) -> AsyncIterator[Batch]:
        request = wire.encode_pull_request(ranges, max_batch, segments=True)
        async for raw in self._stream("PullRecords", request):
            yield wire.decode_batch(pb.PullRecordsResponse, raw)

    async def push(self, batches: AsyncIterator[Batch]) -> tuple[int, int]:
        segments = self.protocol_minor >= wire.SEGMENTS_SINCE_MINOR
        raw = await self._unary("PushRecords", wire.encode_push_stream(batches, segments))
        return wire.decode_push_response(raw)

    async def subscribe(
        self,
        since: Mapping[LogKey, int] | None = None,
        hosts: Iterable[bytes] = (),
        tags: Iterable[str] = (),
    ) -> AsyncIterator[Batch]:
        request = wire.encode_subscribe_request(since or {}, hosts, tags)
        async for raw in self._stream("Subscribe", request):
            yield wire.decode_batch(pb.SubscribeResponse, raw)

    async def follow(self, controls: AsyncIterator[FollowControl]) -> AsyncIterator[Followed]:
        async for raw in self._stream("Follow", wire.encode_follow_stream(controls)):
            yield wire.decode_follow_response(raw)

    async def _unary(self, method: str, request: Any) -> bytes:
        context = _Context(self._caller)
        try:
            answer: bytes = await self._handlers[method](request, context)
        except _Aborted as refused:
            raise self._error(refused) from None
        return answer

    async def _stream(self, method: str, request: Any) -> AsyncIterator[bytes]:
        """The handler's answers, served in a task of their own as grpc serves them: a
        handler that cuts its own call (a reader that reads nothing) cancels its task,
        never the caller's; the caller then sees the status the handler answered."""
        context = _Context(self._caller)
        handler: Callable[[bytes, Any], AsyncIterator[bytes]] = self._handlers[method]
        answers: asyncio.Queue[bytes] = asyncio.Queue(STREAM_BUFFER)
        serving = asyncio.create_task(_serve(handler(request, context), answers))
        try:
            while True:
                if not answers.empty():
                    yield answers.get_nowait()
                    continue
                if serving.done():
                    break
                getting = asyncio.ensure_future(answers.get())
                await asyncio.wait({getting, serving}, return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    yield getting.result()
                else:
                    getting.cancel()
            if serving.cancelled():
                raise self._error(context.aborted or _Aborted(grpc.StatusCode.CANCELLED))
            if isinstance(serving.exception(), _Aborted):
                raise self._error(serving.exception())  # type: ignore[arg-type]
            serving.result()
        finally:
            if not serving.done():
                serving.cancel()
                await asyncio.wait({serving})

    def _error(self, refused: _Aborted) -> Exception:
        return error_for(refused.code, refused.details, refused.metadata, self.target)


STREAM_BUFFER = 4  # answers a handler may write ahead of its reader (a transport's buffer)


async def _serve(answers: AsyncIterator[bytes], out: asyncio.Queue[bytes]) -> None:
    """Run a streaming handler to its end, its answers into `out` as they are read."""
    try:
        async for raw in answers:
            await out.put(raw)
    finally:
        await answers.aclose()  # type: ignore[attr-defined]


async def serve_in_memory(
    store: Store,
    node_id: str = "memory",
    limits: Limits | None = None,
    own_host: bytes | None = None,
) -> tuple[SyncServicer, Feed]:
    """A servicer of `store` with its live feed started (close the feed when done)."""
    limits = limits or Limits()
    feed = Feed(store, queue_batches=limits.subscriber_queue)
    await feed.start()
    return SyncServicer(store, node_id, feed, limits, own_host=own_host), feed
