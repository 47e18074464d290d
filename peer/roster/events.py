"""Roster events: what a membership record says (a card, an add, a revocation, a key
rotation), and its byte layout (docs/protocol.md §14.2): encoding, decoding with every
field bounded, and the card's proof of its TLS key.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from functools import lru_cache

from peer.crypto import (
    ENCRYPTION_KEY_LEN,
    KEY_ID_LEN,
    WRAPPED_SYNC_KEY_LEN,
    host_id,
    sign_with_tls_key,
    verify_tls_signature,
)
from peer.errors import ProtocolError
from peer.identity import certificate_der, node_id_of

ROSTER_TAG = "peer.roster"
EVENT_PREFIX = b"peer.roster.v1\x00"
CARD_PROOF_PREFIX = b"peer.roster.card.v1\x00"
DEVICE, RELAY = "device", "relay"
ROLES = (DEVICE, RELAY)
CARD, ADD, REVOKE, ROTATE = 1, 2, 3, 4
NO_KEY = bytes(KEY_ID_LEN)
MAX_CERTIFICATE = 16 * 1024
MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class Card:
    """A node says who it is: certificate, host key, encryption key (none for a relay),
    role, name and address, proven with its certificate's key (`proof`)."""

    certificate: bytes  # DER
    host_key: bytes
    encryption_key: bytes
    role: str
    name: str
    address: str
    proof: bytes = b""

    @property
    def node_id(self) -> bytes:
        return node_id_of(_pem(self.certificate))


@dataclass(frozen=True, slots=True)
class Add:
    """A member adds a node (by its certificate); `key_id`: the sync key it handed the
    newcomer at pairing, NO_KEY if none."""

    certificate: bytes  # DER
    role: str
    name: str
    key_id: bytes = NO_KEY

    @property
    def node_id(self) -> bytes:
        return node_id_of(_pem(self.certificate))


@dataclass(frozen=True, slots=True)
class Revoke:
    """A member revokes a node; `seen`: how much of that node's roster log it held."""

    node_id: bytes
    seen: int
    reason: str


@dataclass(frozen=True, slots=True)
class Rotate:
    """A new sync key, wrapped for each device member (node id -> 48 bytes)."""

    key_id: bytes
    ephemeral: bytes
    wrapped: tuple[tuple[bytes, bytes], ...]

    @property
    def recipients(self) -> frozenset[bytes]:
        return frozenset(node for node, _ in self.wrapped)


Body = Card | Add | Revoke | Rotate


@dataclass(frozen=True, slots=True)
class Event:
    """One roster record: its author's host, where it sits, and what it says."""

    host: bytes
    idx: int
    timestamp: int
    hash: bytes
    body: Body

    @property
    def order(self) -> tuple[int, bytes]:
        return (self.timestamp, self.hash)


# -- the byte layout (docs/protocol.md §14.2) -------------------------------------------


def _pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > MAX_TEXT:
        raise ProtocolError(f"a roster text is at most {MAX_TEXT} bytes")
    return _u(len(raw), 1) + raw


def _role(role: str) -> bytes:
    return _u(ROLES.index(role), 1)


def card_claim(card: Card) -> bytes:
    """What a card's proof signs: the card's bytes before the proof."""
    return (
        _u(len(card.certificate), 2)
        + card.certificate
        + card.host_key
        + _u(len(card.encryption_key), 1)
        + card.encryption_key
        + _role(card.role)
        + _text(card.name)
        + _text(card.address)
    )


def encode(body: Body) -> bytes:
    """The plaintext of a roster record."""
    if isinstance(body, Card):
        return EVENT_PREFIX + _u(CARD, 1) + card_claim(body) + _u(len(body.proof), 2) + body.proof
    if isinstance(body, Add):
        cert = body.certificate
        return (
            EVENT_PREFIX
            + _u(ADD, 1)
            + _u(len(cert), 2)
            + cert
            + _role(body.role)
            + _text(body.name)
            + body.key_id
        )
    if isinstance(body, Revoke):
        return EVENT_PREFIX + _u(REVOKE, 1) + body.node_id + _u(body.seen, 8) + _text(body.reason)
    wrapped = sorted(body.wrapped)
    return (
        EVENT_PREFIX
        + _u(ROTATE, 1)
        + body.key_id
        + body.ephemeral
        + _u(len(wrapped), 2)
        + b"".join(node + key for node, key in wrapped)
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise ProtocolError("a roster event is cut short")
        part = self.data[self.at : self.at + size]
        self.at += size
        return part

    def int(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def text(self) -> str:
        try:
            return self.take(self.int(1)).decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("a roster text is not UTF-8") from exc

    def role(self) -> str:
        number = self.int(1)
        if number >= len(ROLES):
            raise ProtocolError(f"unknown roster role {number}")
        return ROLES[number]

    def certificate(self) -> bytes:
        size = self.int(2)
        if not 0 < size <= MAX_CERTIFICATE:
            raise ProtocolError("a roster certificate is empty or too large")
        return self.take(size)

    def end(self) -> None:
        if self.at != len(self.data):
            raise ProtocolError("a roster event has bytes past its end")


def decode(data: bytes) -> Body:
    """A roster event from its plaintext; ProtocolError if it is not one."""
    if not data.startswith(EVENT_PREFIX):
        raise ProtocolError("not a roster event")
    reader = _Reader(data[len(EVENT_PREFIX) :])
    kind = reader.int(1)
    body: Body
    if kind == CARD:
        cert, host_key = reader.certificate(), reader.take(32)
        enc = reader.take(reader.int(1))
        if len(enc) not in (0, ENCRYPTION_KEY_LEN):
            raise ProtocolError("an encryption key is 32 bytes")
        role, name, address = reader.role(), reader.text(), reader.text()
        body = Card(cert, host_key, enc, role, name, address, reader.take(reader.int(2)))
    elif kind == ADD:
        cert, role, name = reader.certificate(), reader.role(), reader.text()
        body = Add(cert, role, name, reader.take(KEY_ID_LEN))
    elif kind == REVOKE:
        body = Revoke(reader.take(32), reader.int(8), reader.text())
    elif kind == ROTATE:
        key_id, ephemeral, count = reader.take(KEY_ID_LEN), reader.take(32), reader.int(2)
        pairs = tuple((reader.take(32), reader.take(WRAPPED_SYNC_KEY_LEN)) for _ in range(count))
        body = Rotate(key_id, ephemeral, pairs)
    else:
        raise ProtocolError(f"unknown roster event kind {kind}")
    reader.end()
    return body


def new_card(
    key_pem: bytes,
    certificate_pem: bytes,
    host_key: bytes,
    encryption_key: bytes,
    role: str,
    name: str,
    address: str = "",
) -> Card:
    """This node's card, proven with its TLS key."""
    der = certificate_der(certificate_pem)
    card = Card(der, host_key, encryption_key, role, name, address)
    proof = sign_with_tls_key(key_pem, CARD_PROOF_PREFIX + card_claim(card))
    return dataclasses.replace(card, proof=proof)


@lru_cache(maxsize=4096)
def card_is_proven(card: Card, author: bytes) -> bool:
    """A card counts only in its own host's log, proven by its certificate's key."""
    if host_id(card.host_key) != author:
        return False
    return verify_tls_signature(
        _pem(card.certificate), CARD_PROOF_PREFIX + card_claim(card), card.proof
    )
