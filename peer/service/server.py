"""The sync server around the servicer: options, mutual TLS, health and reflection,
and the trust list followed live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from peer.codec.wire import SERVICE_NAME
from peer.errors import UsageError
from peer.feed import Feed
from peer.service.servicer import SyncServicer, method_handlers
from peer.settings import KEEPALIVE_S, KEEPALIVE_TIMEOUT_S, Limits
from peer.store import Store
from peer.trust import Credentials, Trust
from peer.watch import TRUST_POLL_S, StoreWatcher, Watch

HANDSHAKE_TIMEOUT_MS = 5_000  # a connection that does not finish TLS by then is closed
PUSH_WINDOW_BYTES = 256 << 10  # HTTP/2 window of a stream to us (what a pusher has in flight)


def keepalive_options(limits: Limits) -> list[tuple[str, Any]]:
    """A server's keepalive: it pings quiet callers, and lets them ping it as often as
    our clients do (`client.channel_options`) without a GOAWAY."""
    return [
        ("grpc.keepalive_time_ms", int(KEEPALIVE_S * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
        # keepalive_timeout alone does not end it
        ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(limits.min_ping_interval * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options(limits: Limits) -> list[tuple[str, Any]]:
    """Channel options of the server; the client's keepalive must agree with them."""
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        *keepalive_options(limits),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", 600_000),
        ("grpc.so_reuseport", 0),  # a port another daemon serves is in use, not shared
        ("grpc.max_concurrent_streams", 100),  # bounds the calls in flight per connection
        # What a pusher may have in flight to us: a fixed 256 KiB window, not one grown
        # by BDP probes to megabytes. A push racing the peer's pull of the same records
        # (both start a round at once) duplicates at most that much, and a push's bytes
        # wait in the sender, not in our memory. Pull responses are the client's window.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", PUSH_WINDOW_BYTES),
    ]


@dataclass
class RunningServer:
    """A started server: its port, and what to close when it stops."""

    server: aio.Server
    port: int
    feed: Feed
    servicer: SyncServicer | None = None
    trust_watch: Watch | None = None  # the trust list followed (with TLS only)

    async def refresh_trust(self) -> None:
        """Re-read the trust list now (e.g. right after a pairing pinned a peer)."""
        if self.servicer is not None and self.servicer.trust is not None:
            peers = await self.servicer.store.peers.all()
            self.servicer.drop(self.servicer.trust.update(peers))

    async def stop(self, grace: float = 1.0) -> None:
        if self.trust_watch is not None:
            await self.trust_watch.close()
        await self.server.stop(grace)
        await self.feed.close()


async def start_server(
    store: Store,
    node_id: str,
    listen: str,
    limits: Limits | None = None,
    credentials: Credentials | None = None,
    watcher: StoreWatcher | None = None,
    own_host: bytes | None = None,
) -> RunningServer:
    """Serve `store` on `listen` (HOST:PORT; port 0 picks one) with health and reflection.

    With `credentials`, mutual TLS admits only the pinned peers of the store's trust
    list, followed live; without, plaintext (the caller checks that it is loopback).
    `watcher` is the store's, shared by the feed and the trust list (one of its own
    if not given). `own_host`: this node's host id, whose logs `Follow` feeds.
    """
    limits = limits or Limits()
    trust = Trust(credentials) if credentials is not None else None
    feed = Feed(store, watcher or StoreWatcher(store), limits.subscriber_queue)
    await feed.start()
    servicer = SyncServicer(store, node_id, feed, limits, trust, own_host)
    server = aio.server(options=server_options(limits))
    server.add_generic_rpc_handlers((method_handlers(servicer),))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    try:
        if trust is None:
            port = server.add_insecure_port(listen)
        else:
            trust.update(await store.peers.all())
            port = server.add_secure_port(listen, _server_credentials(trust))
    except RuntimeError as exc:
        await feed.close()
        raise UsageError(f"cannot listen on {listen}: the address is in use or invalid") from exc
    running = RunningServer(server, port, feed, servicer)
    if trust is not None:  # `peer peers` in another process takes effect within ~1 s
        running.trust_watch = feed.watcher.watch(
            "trust list", running.refresh_trust, every=TRUST_POLL_S
        )
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return running


def _server_credentials(trust: Trust) -> grpc.ServerCredentials:
    """mTLS whose trusted roots are re-read at every new connection (when changed)."""
    served = {"version": -1}

    def configuration() -> grpc.ServerCertificateConfiguration:
        served["version"] = trust.version
        own = (trust.own.key, trust.own.certificate)
        return grpc.ssl_server_certificate_configuration([own], root_certificates=trust.roots())

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        return configuration() if trust.version != served["version"] else None

    return grpc.dynamic_ssl_server_credentials(
        configuration(),
        fetch,  # type: ignore[arg-type]  # grpc accepts None for "no change"
        require_client_authentication=True,
    )
