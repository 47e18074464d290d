"""A flood of connections that never start TLS is closed by the handshake timeout [M9],
and an honest pinned peer is served meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from peer.client import ClientTls, PeerClient
from peer.crypto import generate_tls_identity
from peer.identity import node_id_of
from peer.service import start_server
from peer.store import TrustedPeer
from peer.trust import Credentials
from tests.conftest import open_store

SILENT = 100
WAIT_S = 15.0


async def _closed_by_server(port: int, deadline: float) -> float | None:
    """Connect and say nothing; seconds until the server hangs up (None: it never did)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(1024), deadline - time.monotonic())
            except TimeoutError:
                return None
            if not data:
                return time.monotonic() - started
        return None
    finally:
        writer.close()


async def test_silent_connections_are_closed_and_honest_peers_still_served(
    tmp_path: Path,
) -> None:
    server_key, server_cert = generate_tls_identity()
    client_key, client_cert = generate_tls_identity()
    store = await open_store(tmp_path / "server.db")
    await store.peers.add(TrustedPeer(node_id_of(client_cert), "honest", "", client_cert))
    running = await start_server(
        store, "server", "127.0.0.1:0", credentials=Credentials(server_key, server_cert)
    )
    try:
        deadline = time.monotonic() + WAIT_S
        flood = [
            asyncio.create_task(_closed_by_server(running.port, deadline)) for _ in range(SILENT)
        ]
        await asyncio.sleep(0.5)
        tls = ClientTls(Credentials(client_key, client_cert), server_cert)
        started = time.monotonic()
        async with PeerClient(f"127.0.0.1:{running.port}", tls=tls) as peer:
            await peer.get_index()
        honest_s = time.monotonic() - started
        closed = await asyncio.gather(*flood)
        times = sorted(t for t in closed if t is not None)
        print(
            f"{len(times)}/{SILENT} silent connections closed by the server, the last after "
            f"{times[-1] if times else float('nan'):.1f} s; an honest call took {honest_s:.2f} s"
        )
        assert len(times) == SILENT
        assert times[-1] < 10.0
        assert honest_s < 5.0
    finally:
        await running.stop()
        await store.close()
