"""The local API: a node's own programs talk to its daemon over a Unix socket.

The socket lives in the node's home (or a private temporary directory when the home's
path is too long for a socket address) with mode 0600, so the file system decides who
may connect: the user who owns the home. No TLS is needed there. Besides
LocalService (append, a producer's append stream, live status), the socket serves
SyncService without a trust list, so programs read the index and subscribe exactly as
a peer does.

Beside it, also 0600, is the daemon's doorbell (`peer.watch`): a process that wrote to
the store directly rings it, and the live feed publishes at once rather than at the
next poll.

Appends from every caller go through one group commit (`peer.commit`). The server
itself bounds nothing by count: grpc's own backlog protection (a server's
`max_pending_requests`, 1,000 soft / 3,000 hard by default) cancelled calls that had
arrived and were not yet taken by the handler loop, so 3,000 appends at once from one
program failed with CANCELLED. Here its limits are far above what one user's programs
send, and the group commit answers the real limit in words (RESOURCE_EXHAUSTED); a
stream never fails for being busy: it waits (docs/local-api.md, "Errors and limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from peer.codec.local import (
    LOCAL_SERVICE_NAME,
    Ack,
    Appended,
    decode_append_request,
    decode_append_stream_request,
    decode_status_request,
    encode_append_response,
    encode_append_stream_response,
    encode_status_response,
)
from peer.commit import GroupCommit
from peer.errors import PeerError, UsageError
from peer.feed import Feed
from peer.records import Written
from peer.service.guards import DRAIN_S, Context, guard_stream, guard_unary
from peer.service.server import keepalive_options
from peer.service.servicer import SyncServicer, method_handlers
from peer.settings import Limits
from peer.status import NodeStatus
from peer.store import Store
from peer.watch import Doorbell, doorbell_path

MAX_SOCKET_PATH = 100  # sockaddr_un holds 107 bytes on Linux, fewer elsewhere
STREAM_WINDOW_RECORDS = 50_000  # a stream's records read and not yet acknowledged...
STREAM_WINDOW_BYTES = 32 << 20  # ...and their bytes: past either, it reads no more
# grpc's backlog of calls arrived but not yet taken by the handler loop (defaults
# 1,000 / 3,000, past which calls are cancelled at random), and how long one may wait
# there (default 30 s): far above what one user's programs send at once
PENDING_CALLS = 1_000_000
PENDING_CALL_S = 600
StatusFn = Callable[[], Awaitable[NodeStatus]]


def local_server_options(limits: Limits) -> list[tuple[str, Any]]:
    """The local server's options: messages as large as on the sync port (our own
    client sends up to that), the sync port's keepalive (a writer's AppendStream or a
    subscriber on a hung daemon ends), and a backlog as large as memory allows."""
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        *keepalive_options(limits),
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        ("grpc.server_max_unrequested_time_in_server", PENDING_CALL_S),
    ]


@dataclass
class LocalServicer:
    """Appends as this node's host (through one group commit), and reports the
    daemon's live state."""

    commit: GroupCommit
    status: StatusFn

    async def append_records(self, request: bytes, context: Context) -> bytes:
        tag, items = decode_append_request(request)
        return encode_append_response(appended(await self.commit.append(tag, items)))

    async def append_stream(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """Submit each message as it is read; acknowledge each once durable, in order.
        On a failure, the messages already submitted are still acknowledged (those
        that became durable) before the error ends the stream."""
        stream = _Stream(self.commit)
        reader = asyncio.create_task(stream.read(requests), name="append stream")
        try:
            async for acks in stream.acks():
                yield encode_append_stream_response(acks)
            if stream.error is not None:
                with contextlib.suppress(TimeoutError):  # let the producer see the status
                    async with asyncio.timeout(DRAIN_S):
                        await asyncio.shield(reader)
                raise stream.error
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def get_status(self, request: bytes, context: Context) -> bytes:
        decode_status_request(request)
        return encode_status_response(await self.status())


def appended(written: Written) -> Appended:
    log = written.log
    return Appended(log.host, log.tag, written.first_idx, written.count, written.timestamps)


_Entry = tuple[int, int, int, "asyncio.Future[Written]"]  # seq, records, bytes, result


class _Stream:
    """One AppendStream: the messages read and submitted, waiting to be acknowledged."""

    def __init__(self, commit: GroupCommit) -> None:
        self.commit = commit
        self.error: PeerError | None = None
        self._pending: deque[_Entry] = deque()
        self._ended = False  # the reader is done: nothing more will be submitted
        self._more = asyncio.Event()
        self._freed = asyncio.Event()
        self._records = 0  # read, not yet acknowledged
        self._bytes = 0
        self._last: asyncio.Future[Written] | None = None  # the last one submitted

    async def read(self, requests: AsyncIterator[bytes]) -> None:
        """Submit each message, first waiting while the window or the commit is full.
        After a failure, read on and discard, so that the producer sees the status."""
        seq = 0
        try:
            async for raw in requests:
                if self.error is None:
                    try:
                        await self._submit(seq, raw)
                    except PeerError as error:
                        self._failed(error)
                seq += 1
        finally:
            self._ended = True
            self._more.set()

    async def _submit(self, seq: int, raw: bytes) -> None:
        tag, items = decode_append_stream_request(raw)
        size = sum(len(item) for item in items)
        await self._room(len(items), size)
        await self.commit.room(len(items), size)
        if self.error is not None:  # failed meanwhile: the acks may be over, write nothing
            return
        future = self.commit.submit(tag, items, after=self._last)
        self._last = future
        self._records += len(items)
        self._bytes += size
        self._pending.append((seq, len(items), size, future))
        self._more.set()

    def _failed(self, error: PeerError) -> None:
        if self.error is None:
            self.error = error
        self._more.set()

    async def _room(self, count: int, size: int) -> None:
        while self._records and (
            self._records + count > STREAM_WINDOW_RECORDS
            or self._bytes + size > STREAM_WINDOW_BYTES
        ):
            self._freed.clear()
            await self._freed.wait()

    async def acks(self) -> AsyncIterator[list[Ack]]:
        """Acknowledgements as messages become durable, all those already durable in
        one response. Ends at the producer's half-close, or after a failure once every
        message submitted before it is answered."""
        while True:
            while not self._pending:
                if self._ended or self.error is not None:
                    return
                self._more.clear()
                await self._more.wait()
            acks = [await self._settle(self._pending.popleft())]
            while self._pending and self._pending[0][3].done():
                acks.append(await self._settle(self._pending.popleft()))
            durable = [ack for ack in acks if ack is not None]
            if durable:
                yield durable

    async def _settle(self, entry: _Entry) -> Ack | None:
        seq, count, size, future = entry
        try:
            written = await future
        except PeerError as error:
            self._failed(error)
            return None
        finally:
            self._records -= count
            self._bytes -= size
            self._freed.set()
        log = written.log
        return Ack(seq, log.host, log.tag, written.first_idx, written.count, written.timestamps)


def _local_handlers(servicer: LocalServicer) -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        LOCAL_SERVICE_NAME,
        {
            "Append": grpc.unary_unary_rpc_method_handler(guard_unary(servicer.append_records)),
            "AppendStream": grpc.stream_stream_rpc_method_handler(
                guard_stream(servicer.append_stream)
            ),
            "GetStatus": grpc.unary_unary_rpc_method_handler(guard_unary(servicer.get_status)),
        },
    )


@dataclass
class LocalServer:
    """The running local API, its doorbell, and the socket files they own."""

    server: aio.Server
    socket: Path
    private_dir: Path | None
    doorbell: Doorbell

    async def stop(self, grace: float = 1.0) -> None:
        self.doorbell.close()
        await self.server.stop(grace)
        self.socket.unlink(missing_ok=True)
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


def socket_path(home: Path) -> tuple[Path, Path | None]:
    """Where to put the socket: in the home, or a fresh private directory if too long."""
    path = home.resolve() / "peer.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path, None
    private = Path(tempfile.mkdtemp(prefix="peer-"))  # mode 0700
    return private / "peer.sock", private


async def start_local_server(
    home: Path,
    store: Store,
    feed: Feed,
    node_id: str,
    local: LocalServicer,
    limits: Limits | None = None,
) -> LocalServer:
    """Serve LocalService and SyncService (no trust list) on the home's Unix socket,
    and wake the feed's watcher whenever the doorbell beside it is rung."""
    path, private = socket_path(home)
    path.unlink(missing_ok=True)  # a stale socket of a crashed daemon (the home is locked)
    limits = limits or Limits()
    sync = SyncServicer(store, node_id, feed, limits)
    server = aio.server(options=local_server_options(limits))
    server.add_generic_rpc_handlers((method_handlers(sync), _local_handlers(local)))
    with _private_files():
        doorbell = await _open_doorbell(doorbell_path(path), feed)
        try:
            server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            doorbell.close()
            raise UsageError(f"cannot create the local socket {path}") from exc
        await server.start()
    os.chmod(path, 0o600)
    os.chmod(doorbell.path, 0o600)
    return LocalServer(server, path, private, doorbell)


async def _open_doorbell(path: Path, feed: Feed) -> Doorbell:
    try:
        return await Doorbell.open(path, feed.watcher.wake)
    except OSError as exc:
        raise UsageError(f"cannot create the doorbell socket {path}: {exc.strerror}") from exc


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    """Create files readable by this user only (the socket must never be open to all)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)
