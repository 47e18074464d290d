"""The local API: a node's own programs talk to its daemon over a Unix socket.

The socket lives in the node's home (or a private temporary directory when the home's
path is too long for a socket address) with mode 0600, so the file system decides who
may connect: the user who owns the home. No TLS is needed there. Besides
LocalService (append, live status), the socket serves SyncService without a trust
list, so programs read the index and subscribe exactly as a peer does. Beside it, also
0600, is the daemon's doorbell (`peer.watch`): a process that wrote to the store
directly rings it, and the live feed publishes at once rather than at the next poll.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from peer.codec.local import (
    LOCAL_SERVICE_NAME,
    Appended,
    decode_append_request,
    decode_status_request,
    encode_append_response,
    encode_status_response,
)
from peer.errors import UsageError
from peer.feed import Feed
from peer.service.guards import Context, guard_unary
from peer.service.servicer import SyncServicer, method_handlers
from peer.settings import Limits
from peer.status import NodeStatus
from peer.store import Store
from peer.watch import Doorbell, doorbell_path

MAX_SOCKET_PATH = 100  # sockaddr_un holds 107 bytes on Linux, fewer elsewhere
AppendFn = Callable[[str, list[bytes]], Awaitable[Appended]]
StatusFn = Callable[[], Awaitable[NodeStatus]]


@dataclass
class LocalServicer:
    """Appends as this node's host, and reports the daemon's live state."""

    append: AppendFn
    status: StatusFn

    async def append_records(self, request: bytes, context: Context) -> bytes:
        tag, items = decode_append_request(request)
        return encode_append_response(await self.append(tag, items))

    async def get_status(self, request: bytes, context: Context) -> bytes:
        decode_status_request(request)
        return encode_status_response(await self.status())


def _local_handlers(servicer: LocalServicer) -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        LOCAL_SERVICE_NAME,
        {
            "Append": grpc.unary_unary_rpc_method_handler(guard_unary(servicer.append_records)),
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
    sync = SyncServicer(store, node_id, feed, limits or Limits())
    server = aio.server()
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
