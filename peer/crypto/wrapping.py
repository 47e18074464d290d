"""The roster's keys (docs/protocol.md §14): the public key its records are sealed
with, each device's X25519 encryption key, and a rotated sync key wrapped for each."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes as _hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from peer.crypto.keys import SYNC_KEY_LEN, SyncKey
from peer.errors import DecryptionFailed, KeyFormatError

_ZERO_NONCE = bytes(12)  # each key-encryption key seals one message


# The roster (docs/protocol.md §14) is sealed like any log, with a key everyone knows:
# members that are relays read it too. Its records are authenticated by their
# signatures, not kept secret.
ROSTER_KEY = SyncKey(hashlib.sha256(b"peer.roster.key.v1\x00").digest())
ENCRYPTION_KEY_LEN = 32
WRAPPED_SYNC_KEY_LEN = SYNC_KEY_LEN + 16
_REKEY = b"peer.rekey.v1\x00"


class EncryptionKey:
    """A device's X25519 key: a rotated sync key is wrapped for its public half."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> EncryptionKey:
        if len(raw) != ENCRYPTION_KEY_LEN:
            raise KeyFormatError("an encryption key file holds exactly 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    def __repr__(self) -> str:
        return f"EncryptionKey(public={self.public_key[:8].hex()})"


def _key_encryption_key(shared: bytes, key_id: bytes, node_id: bytes, ephemeral: bytes) -> AESGCM:
    info = _REKEY + key_id + node_id + ephemeral
    return AESGCM(HKDF(_hashes.SHA256(), SYNC_KEY_LEN, salt=None, info=info).derive(shared))


def wrap_sync_key(
    sync: SyncKey, recipients: Mapping[bytes, bytes], ephemeral_seed: bytes | None = None
) -> tuple[bytes, dict[bytes, bytes]]:
    """Wrap `sync` for each recipient (node id -> X25519 public key): returns the
    ephemeral public key and node id -> 48 bytes (docs/protocol.md §14.4)."""
    ephemeral = (
        X25519PrivateKey.generate()
        if ephemeral_seed is None
        else X25519PrivateKey.from_private_bytes(ephemeral_seed)
    )
    public = ephemeral.public_key().public_bytes_raw()
    wrapped: dict[bytes, bytes] = {}
    for node_id, recipient in recipients.items():
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
        except ValueError as exc:
            raise KeyFormatError("a device's encryption key is not a usable X25519 key") from exc
        kek = _key_encryption_key(shared, sync.key_id, node_id, public)
        wrapped[node_id] = kek.encrypt(_ZERO_NONCE, sync.secret, _REKEY + sync.key_id + node_id)
    return public, wrapped


def unwrap_sync_key(
    own: EncryptionKey, ephemeral: bytes, key_id: bytes, node_id: bytes, wrapped: bytes
) -> SyncKey:
    """The sync key a rotation wrapped for this device; DecryptionFailed otherwise."""
    try:
        shared = own._private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        kek = _key_encryption_key(shared, key_id, node_id, ephemeral)
        secret = kek.decrypt(_ZERO_NONCE, wrapped, _REKEY + key_id + node_id)
    except (ValueError, InvalidTag) as exc:
        raise DecryptionFailed("the rotated key wrapped for this device does not open") from exc
    key = SyncKey(secret)
    if key.key_id != key_id:
        raise DecryptionFailed("the rotated key does not have the id its rotation names")
    return key
