"""The pairing endpoint: its own port, with TLS that does not ask for a client certificate.

A joining device is not pinned yet, so the sync port (which admits pinned peers only)
would refuse it. Here the joiner checks the inviter by the node id in its code, and
proves the code's one-time secret and that it holds the key of the certificate it
sends; the inviter holds the invitation for it and answers (the sync key, unless the
invitation was for a relay). Only when the joiner confirms is it pinned and the code
spent, so a joiner that refuses the answer leaves nothing behind. Wrong, used, held and
expired secrets all get the same answer.

Anyone who can reach the node reaches this port, so it is bounded before any work: a
small message size, few connections and calls at once, the sync port's handshake
timeout, and a per-address policy that slows a caller down and cuts it off after a few
wrong secrets. The secret is checked before anything else in a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from peer.codec.pairing import (
    MAX_JOIN_MESSAGE_BYTES,
    PAIRING_SERVICE_NAME,
    JoinRequest,
    decode_confirm_join,
    decode_introduce,
    decode_join_request,
    encode_confirm_join_response,
    encode_introduce_response,
    encode_join_response,
)
from peer.crypto import check_node_certificate, verify_tls_signature
from peer.errors import PeerError, PeerRefused, ProtocolError, UsageError
from peer.identity import node_id_of
from peer.pairing import (
    BAN_S,
    CALL_BURST,
    CALL_RATE,
    IDLE_S,
    MAX_CALLS,
    MAX_CONNECTIONS,
    REFUSED,
    STRIKES,
    Holds,
    confirm_proof_message,
    join_proof_message,
    secret_hash,
)
from peer.policy import CallerPolicy
from peer.service.guards import Context, caller_id, guard_unary
from peer.service.server import HANDSHAKE_TIMEOUT_MS
from peer.store import Store, TrustedPeer
from peer.trust import Credentials

log = logging.getLogger(__name__)
NOT_PROVEN = "the joining node did not prove that it holds its certificate's key"
NOT_INTRODUCED = "this node does not wait for that certificate"


def pairing_policy() -> CallerPolicy:
    """Wrong secrets and malformed or unproven requests are the offences here."""
    return CallerPolicy(
        rate=CALL_RATE,
        burst=CALL_BURST,
        strikes_to_ban=STRIKES,
        ban_s=BAN_S,
        flood_to_ban=100,
        offences=(PeerRefused, ProtocolError),
    )


@dataclass
class PairingServicer:
    """Redeems invitations made by `peer invite` on this node."""

    store: Store
    name: str
    node_id: bytes
    sync_key_text: str | None
    after_join: Callable[[], Awaitable[None]]
    policy: CallerPolicy = field(default_factory=pairing_policy)
    holds: Holds = field(default_factory=Holds)
    # the joiner and whether it came as a relay, once pinned (the daemon adds it to the
    # roster); a failure there is logged, the join stands
    on_joined: Callable[[TrustedPeer, bool], Awaitable[None]] | None = None
    # the keys the sync key replaced (keyring), as text: a new device reads old records
    older_key_texts: tuple[str, ...] = ()

    async def join(self, raw: bytes, context: Context) -> bytes:
        request = decode_join_request(raw)
        hashed = secret_hash(request.secret)
        relay = await self.store.invitations.live(hashed, time.time_ns())
        if relay is None:
            raise PeerRefused(REFUSED)
        node_id = _proven(request, self.node_id)
        if not self.holds.take(hashed, node_id, request.certificate, request.name, relay):
            raise PeerRefused(REFUSED)  # another joiner holds it: one winner
        key = "" if relay or self.sync_key_text is None else self.sync_key_text
        return encode_join_response(key, self.name, self.older_key_texts if key else ())

    async def confirm(self, raw: bytes, context: Context) -> bytes:
        confirm = decode_confirm_join(raw)
        hashed = secret_hash(confirm.secret)
        held = self.holds.holder(hashed, confirm.node_id)
        if held is None:
            raise PeerRefused(REFUSED)
        message = confirm_proof_message(confirm.secret, self.node_id, confirm.accepted)
        if not verify_tls_signature(held.certificate, message, confirm.proof):
            raise PeerRefused(NOT_PROVEN)
        if not confirm.accepted:
            self.holds.release(hashed)  # the code works again, for a joiner that fixed it
            log.warning("a joining node refused this node's answer; the code stays valid")
        elif not held.confirmed:
            joiner = TrustedPeer(held.node_id, held.name, "", held.certificate)
            if not await self.store.invitations.redeem(hashed, time.time_ns(), joiner):
                self.holds.release(hashed)
                raise PeerRefused(REFUSED)
            self.holds.confirmed(hashed)
            await self.after_join()  # the sync port admits the new peer at once
            if self.on_joined is not None:
                try:
                    await self.on_joined(joiner, held.relay)
                except PeerError as exc:
                    log.warning("the joined node was not added to the roster: %s", exc)
        return encode_confirm_join_response()

    async def introduce(self, raw: bytes, context: Context) -> bytes:
        """Store the certificate of a node pinned by id alone (docs/protocol.md §1.2).
        Anything else gets the one fixed refusal: this says nothing of the pins."""
        certificate = decode_introduce(raw)
        try:
            check_node_certificate(certificate)
        except ProtocolError:
            raise PeerRefused(NOT_INTRODUCED) from None
        node_id = node_id_of(certificate)
        pinned = {p.node_id: p for p in await self.store.peers.all()}.get(node_id)
        if pinned is None or pinned.certificate not in (None, certificate):
            raise PeerRefused(NOT_INTRODUCED)
        if pinned.certificate is None:
            await self.store.peers.add(TrustedPeer(node_id, certificate=certificate))
            await self.after_join()  # the sync port admits it at once
        return encode_introduce_response()

    def admit(self, context: Context) -> None:
        """Throttled before the request is even parsed, if this address misbehaved."""
        self.policy.admit(caller_id(context))

    def note(self, context: Context, error: BaseException) -> None:
        if str(error) == NOT_INTRODUCED:
            return  # cheap to answer, and daemons try it after failures: no strike
        self.policy.note(caller_id(context), error)


def _proven(request: JoinRequest, inviter: bytes) -> bytes:
    """The joiner's node id, once its certificate is of the documented kind and the
    proof shows it holds that certificate's key."""
    check_node_certificate(request.certificate)
    message = join_proof_message(request.secret, inviter)
    if not verify_tls_signature(request.certificate, message, request.proof):
        raise PeerRefused(NOT_PROVEN)
    return node_id_of(request.certificate)


def _admitted(
    servicer: PairingServicer, handler: Callable[[bytes, Context], Awaitable[bytes]]
) -> Callable[[bytes, Context], Awaitable[bytes]]:
    async def admitted(request: bytes, context: Context) -> bytes:
        servicer.admit(context)
        return await handler(request, context)

    return guard_unary(admitted, servicer.note)


def server_options() -> list[tuple[str, Any]]:
    """The pairing port's bounds (docs/protocol.md §1.1)."""
    return [
        ("grpc.max_receive_message_length", MAX_JOIN_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_JOIN_MESSAGE_BYTES),
        ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
        ("grpc.http2.bdp_probe", 0),  # the flow-control window stays small: 64 KiB
        ("grpc.max_concurrent_streams", MAX_CALLS),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", int(IDLE_S * 1000)),
        ("grpc.max_connection_age_ms", int(2 * IDLE_S * 1000)),
        ("grpc.max_connection_age_grace_ms", int(IDLE_S * 1000)),
        ("grpc.so_reuseport", 0),
    ]


async def start_pairing_server(
    servicer: PairingServicer, credentials: Credentials, listen: str
) -> tuple[aio.Server, int]:
    """Serve PairingService on `listen` with server-only TLS; returns (server, port)."""
    server = aio.server(options=server_options(), maximum_concurrent_rpcs=MAX_CALLS)
    handlers = {
        "Join": grpc.unary_unary_rpc_method_handler(_admitted(servicer, servicer.join)),
        "ConfirmJoin": grpc.unary_unary_rpc_method_handler(_admitted(servicer, servicer.confirm)),
        "Introduce": grpc.unary_unary_rpc_method_handler(_admitted(servicer, servicer.introduce)),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PAIRING_SERVICE_NAME, handlers),)
    )
    tls = grpc.ssl_server_credentials([(credentials.key, credentials.certificate)])
    try:
        port = server.add_secure_port(listen, tls)
    except RuntimeError as exc:
        raise UsageError(f"cannot listen on {listen} for pairing: in use or invalid") from exc
    await server.start()
    return server, port
