"""Keys: the sync key a user's devices share, and each host's signing key (its id)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer.errors import KeyFormatError
from peer.records import HOST_LEN

SYNC_KEY_LEN = 32
KEY_ID_LEN = 8
KEY_TEXT_PREFIX = "peer-key-1:"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True, repr=False)
class SyncKey:
    """The 32-byte secret shared by one user's devices; it never leaves them in clear."""

    secret: bytes
    # the keys this one replaced (`peer key rotate`), so records sealed before still open
    older: tuple[SyncKey, ...] = field(default=(), compare=False)
    key_id: bytes = field(init=False, compare=False)
    aead: AESGCM = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != SYNC_KEY_LEN:
            raise KeyFormatError(f"a sync key is {SYNC_KEY_LEN} bytes, got {len(self.secret)}")
        key_id = hashlib.sha256(b"peer.key-id.v1\x00" + self.secret).digest()[:KEY_ID_LEN]
        object.__setattr__(self, "key_id", key_id)  # a public fingerprint of the key
        object.__setattr__(self, "aead", AESGCM(self.secret))

    @classmethod
    def generate(cls) -> SyncKey:
        return cls(os.urandom(SYNC_KEY_LEN))

    @property
    def key_id_text(self) -> str:
        return self.key_id.hex()

    def to_text(self) -> str:
        """One line, with a checksum so a mistyped key is refused, not used."""
        check = hashlib.sha256(self.secret).digest()[:4]
        return KEY_TEXT_PREFIX + base64.urlsafe_b64encode(self.secret + check).decode().rstrip("=")

    @classmethod
    def from_text(cls, text: str) -> SyncKey:
        text = text.strip()
        if not text.startswith(KEY_TEXT_PREFIX):
            raise KeyFormatError(f"not a peer sync key: it should start with {KEY_TEXT_PREFIX!r}")
        body = text[len(KEY_TEXT_PREFIX) :].rstrip("=")
        if not _BASE64URL.fullmatch(body):  # the decoder would drop strangers silently
            raise KeyFormatError("not a peer sync key: the text is damaged")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError as exc:
            raise KeyFormatError("not a peer sync key: the text is damaged") from exc
        secret, check = raw[:SYNC_KEY_LEN], raw[SYNC_KEY_LEN:]
        if len(raw) != SYNC_KEY_LEN + 4 or hashlib.sha256(secret).digest()[:4] != check:
            raise KeyFormatError("not a peer sync key: the checksum does not match (typo?)")
        return cls(secret)

    def __repr__(self) -> str:
        return f"SyncKey(id={self.key_id_text})"

    @property
    def ring(self) -> tuple[SyncKey, ...]:
        """Every key this node holds: the current one first, then the older ones."""
        return (self, *self.older)

    def find(self, key_id_text: str) -> SyncKey | None:
        """The key of the ring with this id, if held."""
        for key in self.ring:
            if key.key_id_text == key_id_text:
                return key
        return None

    def rotated_to(self, new: SyncKey) -> SyncKey:
        """`new` as the current key, with every key of this ring kept as older."""
        kept = [key for key in self.ring if key.key_id != new.key_id]
        kept += [key for key in new.older if all(k.key_id != key.key_id for k in kept)]
        return SyncKey(new.secret, tuple(SyncKey(k.secret) for k in kept))


class SigningKey:
    """A host's Ed25519 key: it signs the host's own logs, and names the host."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes_raw()
        self.host = host_id(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise KeyFormatError("a host signing key file holds exactly 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def to_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    def sign(self, digest: bytes) -> bytes:
        return self._private.sign(digest)

    def __repr__(self) -> str:
        return f"SigningKey(host={self.host.hex()})"


def host_id(public_key: bytes) -> bytes:
    """The host id is derived from the public key, so anyone can check the pairing."""
    return hashlib.sha256(b"peer.host.v1\x00" + public_key).digest()[:HOST_LEN]
