"""Invitation codes: everything a new device needs to pair with one command.

A code names the inviter (its node id, its sync address and its pairing address),
carries a one-time secret and an expiry, and says whether the joiner is a relay (no
sync key). Only a hash of the secret stays on the inviter.

Redeeming one takes two steps (docs/protocol.md §1.1): Join holds the invitation for
one joiner and answers it; ConfirmJoin pins that joiner and spends the code, or frees
the invitation if the joiner refused the answer. So a failed join leaves nothing to
clean up on either side. The joiner signs each step with its certificate's key.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from peer.addresses import split_address
from peer.errors import UsageError
from peer.identity import format_node_id, parse_node_id

CODE_PREFIX = "peer-invite-1:"
SECRET_LEN = 16
DEFAULT_TTL_S = 3600
REFUSED = "this invitation is not valid: it is wrong, used or expired"  # one text for all
HOLD_S = 60.0  # how long Join holds an invitation for its joiner, awaiting ConfirmJoin
# The pairing port answers anyone who can reach it, so it is bounded (protocol.md §1.1):
MAX_CONNECTIONS = 16  # open at once; more are closed at once
MAX_CALLS = 8  # calls in flight, in all; more get RESOURCE_EXHAUSTED
IDLE_S = 30.0  # a connection without calls is closed; any connection after twice that
CALL_RATE, CALL_BURST = 2.0, 10  # calls per second per address, and the burst allowed
STRIKES, BAN_S = 5, 60.0  # refusals within 60 s that cut an address off, for this long
JOIN_PROOF_PREFIX = b"peer.join.v1\x00"
CONFIRM_PROOF_PREFIX = b"peer.join.confirm.v1\x00"


@dataclass(frozen=True, slots=True)
class Invitation:
    """One pairing offer, as carried by a code."""

    node_id: bytes
    address: str
    pairing_address: str
    secret: bytes
    expires_at: int
    relay: bool = False

    @property
    def secret_hash(self) -> bytes:
        return secret_hash(self.secret)

    def to_code(self) -> str:
        body = {
            "n": format_node_id(self.node_id),
            "a": self.address,
            "p": self.pairing_address,
            "s": base64.urlsafe_b64encode(self.secret).decode().rstrip("="),
            "e": self.expires_at,
            "r": self.relay,
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return CODE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_code(cls, code: str) -> Invitation:
        code = code.strip()
        if not code.startswith(CODE_PREFIX):
            raise UsageError(f"not an invitation code: it should start with {CODE_PREFIX!r}")
        try:
            body = _unb64(code[len(CODE_PREFIX) :])
            fields = json.loads(body)
            secret = _unb64(fields["s"])
            invitation = cls(
                parse_node_id(fields["n"]),
                str(fields["a"]),
                str(fields["p"]),
                secret,
                int(fields["e"]),
                bool(fields["r"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            # OverflowError: "e" given as 1e400; RecursionError: JSON nested deep
            raise UsageError("the invitation code is damaged: copy it again, whole") from exc
        if len(secret) != SECRET_LEN:
            raise UsageError("the invitation code is damaged: copy it again, whole")
        for address in (invitation.address, invitation.pairing_address):
            _check_address(address)
        return invitation


def _check_address(address: str) -> None:
    """An address in a code is checked as `peer peers add` checks one: it gets pinned."""
    try:
        host, _ = split_address(address)
    except UsageError:
        host = ""
    if not host or not host.isprintable() or any(c.isspace() for c in host):
        raise UsageError("the invitation code names no valid HOST:PORT: ask for a new one")


def join_proof_message(secret: bytes, inviter: bytes) -> bytes:
    """What a joiner signs in Join: the secret, bound to the inviter it meant."""
    return JOIN_PROOF_PREFIX + secret + inviter


def confirm_proof_message(secret: bytes, inviter: bytes, accepted: bool) -> bytes:
    """What a joiner signs in ConfirmJoin: its verdict on the inviter's answer."""
    return CONFIRM_PROOF_PREFIX + secret + inviter + bytes([accepted])


@dataclass(frozen=True, slots=True)
class Hold:
    """An invitation held for one joiner between Join and ConfirmJoin."""

    node_id: bytes
    certificate: bytes
    name: str
    until: float
    confirmed: bool = False
    relay: bool = False  # the invitation was for a relay


class Holds:
    """Invitations held for their joiners (in memory: a restart frees them, and the
    code then still works). One holder at a time; a hold lapses after HOLD_S."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._holds: dict[bytes, Hold] = {}

    def __len__(self) -> int:
        """How many invitations are held now."""
        now = self._clock()
        return sum(1 for hold in self._holds.values() if hold.until > now)

    def take(
        self, secret_hash: bytes, node_id: bytes, certificate: bytes, name: str, relay: bool = False
    ) -> bool:
        """Hold the invitation for this joiner; False if another joiner holds it."""
        now = self._clock()
        self._holds = {k: h for k, h in self._holds.items() if h.until > now}
        held = self._holds.get(secret_hash)
        if held is not None and held.node_id != node_id:
            return False
        self._holds[secret_hash] = Hold(node_id, certificate, name, now + HOLD_S, relay=relay)
        return True

    def holder(self, secret_hash: bytes, node_id: bytes) -> Hold | None:
        """The live hold of this joiner on the invitation, if it has one."""
        held = self._holds.get(secret_hash)
        if held is None or held.node_id != node_id or held.until <= self._clock():
            return None
        return held

    def confirmed(self, secret_hash: bytes) -> None:
        """Keep the hold, marked done, so that a repeated ConfirmJoin gets the same yes."""
        held = self._holds.get(secret_hash)
        if held is not None:
            self._holds[secret_hash] = dataclasses.replace(held, confirmed=True)

    def release(self, secret_hash: bytes) -> None:
        self._holds.pop(secret_hash, None)


def new_secret() -> bytes:
    return os.urandom(SECRET_LEN)


def secret_hash(secret: bytes) -> bytes:
    return hashlib.sha256(b"peer.invite.v1\x00" + secret).digest()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
