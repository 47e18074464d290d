"""Running a node on the network: serving its store, and syncing it with peers.

Plaintext gRPC is allowed only on loopback addresses (`--insecure`): nothing readable
about who talks to whom should cross a real network unauthenticated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peer.client import PeerClient
from peer.errors import PeerError, UsageError
from peer.node import Node
from peer.service import RunningServer, start_server
from peer.sync import Progress, SyncSummary, sync_with

DEFAULT_LISTEN = "127.0.0.1:7417"


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port), with a clear error when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def require_loopback(address: str) -> None:
    """Plaintext is only for this machine: refuse any non-loopback address."""
    host, _ = split_address(address)
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            f"--insecure is only allowed on a loopback address (127.0.0.1, ::1), not {host}"
        )


def require_insecure(insecure: bool) -> None:
    if not insecure:
        raise UsageError(
            "this version of peer speaks plaintext gRPC only: pass --insecure and use a "
            "loopback address (mutual TLS between devices is not built yet)"
        )


async def serve(node: Node, listen: str, on_ready: Callable[[RunningServer], None]) -> None:
    """Serve the node's store until SIGINT or SIGTERM, then stop gracefully."""
    split_address(listen)
    running = await start_server(node.store, node.identity.host.hex(), listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        on_ready(running)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await running.stop(grace=2.0)


@dataclass
class PeerResult:
    """The outcome of syncing with one peer: a summary, or the error in words."""

    target: str
    summary: SyncSummary | None = None
    error: str | None = None


async def sync_peers(
    node: Node, targets: Sequence[str], batch: int, progress: Callable[[str], Progress]
) -> list[PeerResult]:
    """Sync with each peer in turn; one failing peer does not stop the others."""
    results: list[PeerResult] = []
    for target in targets:
        split_address(target)
        try:
            async with PeerClient(target) as peer:
                summary = await sync_with(node.store, peer, batch=batch, progress=progress(target))
            results.append(PeerResult(target, summary))
        except PeerError as exc:
            results.append(PeerResult(target, error=str(exc)))
    return results
