"""Invitation codes: everything a new device needs to pair with one command.

A code names the inviter (its node id, its sync address and its pairing address),
carries a one-time secret and an expiry, and says whether the joiner is a relay (no
sync key). Only a hash of the secret stays on the inviter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

from peer.errors import UsageError
from peer.identity import format_node_id, parse_node_id

CODE_PREFIX = "peer-invite-1:"
SECRET_LEN = 16
DEFAULT_TTL_S = 3600


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
        return invitation


def new_secret() -> bytes:
    return os.urandom(SECRET_LEN)


def secret_hash(secret: bytes) -> bytes:
    return hashlib.sha256(b"peer.invite.v1\x00" + secret).digest()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
