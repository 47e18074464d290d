"""The pairing codec: PairingService's messages (Join, ConfirmJoin) and Introduce.

A joiner is a stranger until its code and proof check out, so every field is bounded
before anything else sees it: the pairing port's whole receive limit is
MAX_JOIN_MESSAGE_BYTES.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peer.codec.parsing import parse
from peer.errors import ProtocolError
from peer.names import clean_name
from peer.v1 import sync_pb2 as pb

PAIRING_SERVICE_NAME = "peer.v1.PairingService"
MAX_CERTIFICATE_BYTES = 16 << 10
MAX_PROOF_BYTES = 128  # an ECDSA P-256 signature in DER is at most 72
MAX_KEY_TEXT_CHARS = 1024
MAX_OLDER_KEYS = 256  # keys of a keyring sent at pairing (a rotation per revocation)
MAX_JOIN_MESSAGE_BYTES = 32 << 10  # the pairing port's receive limit: a Join is < 20 KiB


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A joiner's offer: the code's secret, its certificate, its name, and its proof."""

    secret: bytes
    certificate: bytes
    name: str
    proof: bytes


@dataclass(frozen=True, slots=True)
class ConfirmJoin:
    """A joiner's verdict on the inviter's answer, signed like its JoinRequest."""

    secret: bytes
    node_id: bytes
    accepted: bool
    proof: bytes


def encode_join_request(request: JoinRequest) -> bytes:
    message = pb.JoinRequest(
        secret=request.secret,
        certificate=request.certificate,
        name=request.name,
        proof=request.proof,
    )
    return message.SerializeToString()


def decode_join_request(raw: bytes) -> JoinRequest:
    message = parse(pb.JoinRequest, raw)
    if len(message.certificate) > MAX_CERTIFICATE_BYTES or len(message.proof) > MAX_PROOF_BYTES:
        raise ProtocolError("join request fields out of bounds")
    name = clean_name(message.name)  # stored and printed: short and printable
    return JoinRequest(message.secret, message.certificate, name, message.proof)


def encode_join_response(sync_key: str, name: str, older_keys: Sequence[str] = ()) -> bytes:
    message = pb.JoinResponse(sync_key=sync_key, name=name, older_keys=older_keys)
    return message.SerializeToString()


def decode_join_response(raw: bytes) -> tuple[str, str, list[str]]:
    """(sync key text, inviter's name, the older keys of its keyring as text)."""
    message = parse(pb.JoinResponse, raw)
    older = list(message.older_keys)
    if (
        len(message.sync_key) > MAX_KEY_TEXT_CHARS
        or len(older) > MAX_OLDER_KEYS
        or any(len(key) > MAX_KEY_TEXT_CHARS for key in older)
    ):
        raise ProtocolError("join response fields out of bounds")
    return message.sync_key, clean_name(message.name), older


def encode_confirm_join(confirm: ConfirmJoin) -> bytes:
    message = pb.ConfirmJoinRequest(
        secret=confirm.secret,
        node_id=confirm.node_id,
        accepted=confirm.accepted,
        proof=confirm.proof,
    )
    return message.SerializeToString()


def decode_confirm_join(raw: bytes) -> ConfirmJoin:
    message = parse(pb.ConfirmJoinRequest, raw)
    if len(message.node_id) != 32 or len(message.proof) > MAX_PROOF_BYTES:
        raise ProtocolError("confirm request fields out of bounds")
    return ConfirmJoin(message.secret, message.node_id, message.accepted, message.proof)


def encode_confirm_join_response() -> bytes:
    return pb.ConfirmJoinResponse().SerializeToString()


def decode_confirm_join_response(raw: bytes) -> None:
    parse(pb.ConfirmJoinResponse, raw)


def encode_introduce(certificate: bytes) -> bytes:
    return pb.IntroduceRequest(certificate=certificate).SerializeToString()


def decode_introduce(raw: bytes) -> bytes:
    """The certificate a node introduces (PEM), bounded like a joiner's."""
    message = parse(pb.IntroduceRequest, raw)
    if not 0 < len(message.certificate) <= MAX_CERTIFICATE_BYTES:
        raise ProtocolError("introduce request fields out of bounds")
    return message.certificate


def encode_introduce_response() -> bytes:
    return pb.IntroduceResponse().SerializeToString()


def decode_introduce_response(raw: bytes) -> None:
    parse(pb.IntroduceResponse, raw)
