"""The pairing endpoint: its own port, with TLS that does not ask for a client certificate.

A joining device is not pinned yet, so the sync port (which admits pinned peers only)
would refuse it. Here the joiner checks the inviter by the node id in its code, and
proves the code's one-time secret; the inviter then pins the certificate the joiner
sent, and hands over the sync key unless the invitation was for a relay. Wrong, used
and expired secrets all get the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc import aio

from peer.codec.wire import PAIRING_SERVICE_NAME, decode_join_request, encode_join_response
from peer.errors import PeerRefused, UsageError
from peer.identity import node_id_of
from peer.pairing import secret_hash
from peer.service.guards import Context, guard_unary
from peer.store import Store, TrustedPeer
from peer.trust import Credentials

REFUSED = "this invitation is not valid: it is wrong, used or expired"


@dataclass
class PairingServicer:
    """Redeems invitations made by `peer invite` on this node."""

    store: Store
    name: str
    sync_key_text: str | None
    after_join: Callable[[], Awaitable[None]]

    async def join(self, request: bytes, context: Context) -> bytes:
        secret, certificate, name = decode_join_request(request)
        node_id = node_id_of(certificate)
        relay = await self.store.invitations.redeem(secret_hash(secret), time.time_ns())
        if relay is None:
            raise PeerRefused(REFUSED)
        await self.store.peers.add(TrustedPeer(node_id, name, "", certificate))
        await self.after_join()  # the sync port admits the new peer at once
        key = "" if relay or self.sync_key_text is None else self.sync_key_text
        return encode_join_response(key, self.name)


async def start_pairing_server(
    servicer: PairingServicer, credentials: Credentials, listen: str
) -> tuple[aio.Server, int]:
    """Serve PairingService on `listen` with server-only TLS; returns (server, port)."""
    server = aio.server(
        options=[("grpc.server_handshake_timeout_ms", 5_000), ("grpc.so_reuseport", 0)]
    )
    handler = grpc.unary_unary_rpc_method_handler(guard_unary(servicer.join))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PAIRING_SERVICE_NAME, {"Join": handler}),)
    )
    tls = grpc.ssl_server_credentials([(credentials.key, credentials.certificate)])
    try:
        port = server.add_secure_port(listen, tls)
    except RuntimeError as exc:
        raise UsageError(f"cannot listen on {listen} for pairing: in use or invalid") from exc
    await server.start()
    return server, port
