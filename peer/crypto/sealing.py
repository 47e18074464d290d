"""Sealing and opening records, and writing a host's own: a fresh 32-byte content key
per record seals the payload with AES-256-GCM (nonce zero: the key is used once), the
record's canonical metadata as associated data; the content key is sealed with the sync
key (random nonce, same associated data) into `wrapped_key` = 0x01 | key id[8] |
nonce[12] | ciphertext[48]."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer.crypto.chain import SIGN_BYTES, must_sign
from peer.crypto.keys import KEY_ID_LEN, SYNC_KEY_LEN, SigningKey, SyncKey
from peer.errors import CryptoError, DecryptionFailed, InvalidRecord, WrongKey
from peer.records import (
    AAD_PREFIX_V1,
    HASH_PREFIX_V1,
    MAX_PAYLOAD,
    Head,
    Record,
    associated_data,
    metadata_encoder,
    new_record_ids,
)
from peer.relay import NO_SYNC_KEY
from peer.segment import entry

MAX_PLAINTEXT = MAX_PAYLOAD - 16  # the AEAD tag takes 16 bytes of the payload bound
WRAP_V1 = 0x01
WRAPPED_KEY_LEN = 1 + KEY_ID_LEN + 12 + SYNC_KEY_LEN + 16
_ZERO_NONCE = bytes(12)
_WRAPPED_KEY_LEN_BYTE = bytes((WRAPPED_KEY_LEN,))
_U32 = struct.Struct(">I")
_FRESH = 10 + SYNC_KEY_LEN + 12  # per record: id randomness, content key, wrapping nonce


def seal(sync: SyncKey, record: Record, plaintext: bytes) -> tuple[bytes, bytes]:
    """Encrypt `plaintext` for `record`'s metadata; returns (payload, wrapped_key)."""
    return _seal(sync, associated_data(record), plaintext)


def _seal(
    sync: SyncKey, aad: bytes, plaintext: bytes, fresh: bytes | None = None
) -> tuple[bytes, bytes]:
    """`fresh`: 44 random bytes (content key, wrapping nonce), drawn in bulk by writers."""
    fresh = fresh or os.urandom(SYNC_KEY_LEN + 12)
    content_key, nonce = fresh[:SYNC_KEY_LEN], fresh[SYNC_KEY_LEN:]
    payload = AESGCM(content_key).encrypt(_ZERO_NONCE, plaintext, aad)
    wrapped = sync.aead.encrypt(nonce, content_key, aad)
    return payload, bytes((WRAP_V1,)) + sync.key_id + nonce + wrapped


def record_key_id(record: Record) -> str:
    """The id of the sync key a record was sealed with, read without any key."""
    if len(record.wrapped_key) != WRAPPED_KEY_LEN or record.wrapped_key[0] != WRAP_V1:
        raise DecryptionFailed(f"record {record.log}#{record.idx} has an unknown key wrapping")
    return record.wrapped_key[1 : 1 + KEY_ID_LEN].hex()


def open_record(sync: SyncKey, record: Record) -> bytes:
    """The plaintext of `record`; WrongKey before any decryption if the key ids differ."""
    key_id = record_key_id(record)
    held = sync.find(key_id)
    if held is None:
        raise WrongKey(key_id, sync.key_id_text)
    sync = held
    aad = associated_data(record)
    nonce = record.wrapped_key[1 + KEY_ID_LEN : 1 + KEY_ID_LEN + 12]
    try:
        content_key = sync.aead.decrypt(nonce, record.wrapped_key[21:], aad)
        return AESGCM(content_key).decrypt(_ZERO_NONCE, record.payload, aad)
    except InvalidTag as exc:
        raise DecryptionFailed(
            f"record {record.log}#{record.idx} does not decrypt: it was altered after sealing"
        ) from exc


def open_or_why(sync: SyncKey | None, record: Record) -> tuple[bytes, None] | tuple[None, str]:
    """(plaintext, None), or (None, why it cannot be read, in words): on a relay (no
    key), under another key, or altered. For listing records (tail, verify, the API,
    the views), where one unreadable record is shown as such and stops nothing."""
    if sync is None:
        return None, NO_SYNC_KEY
    try:
        return open_record(sync, record), None
    except CryptoError as exc:
        return None, str(exc)


class Author:
    """Writes this host's records: seals payloads, chains hashes, signs checkpoints."""

    def __init__(self, signing: SigningKey, sync: SyncKey, version: str = "v1") -> None:
        self.signing = signing
        self.sync = sync
        self.version = version
        self.host = signing.host

    def write(
        self, tag: str, head: Head, timestamps: Sequence[int], plaintexts: Sequence[bytes]
    ) -> list[Record]:
        """Records that continue a log at `head`; the last one is always signed."""
        return self.write_entries(tag, head, timestamps, plaintexts)[0]

    def write_entries(
        self, tag: str, head: Head, timestamps: Sequence[int], plaintexts: Sequence[bytes]
    ) -> tuple[list[Record], list[bytes]]:
        """`write`, and each record's segment entry (`segment.entry`) from the bytes it
        hashed: the store writes those, not encoding each record a second time."""
        for plaintext in plaintexts:
            if len(plaintext) > MAX_PLAINTEXT:
                raise InvalidRecord(
                    f"a record of {len(plaintext):,} bytes is over the limit of "
                    f"{MAX_PLAINTEXT:,} bytes"
                )
        # One loop for every record written, its steps inline (no call per step):
        # `_seal`, `new_record_id`, `metadata_of` and `hash_input_of` as they are.
        count = len(plaintexts)
        randomness = os.urandom(_FRESH * count)  # one system call, not three each
        ids = new_record_ids(randomness, _FRESH, count)
        encode_meta = metadata_encoder(self.host, tag, self.version)
        wrap_prefix = bytes((WRAP_V1,)) + self.sync.key_id
        wrap = self.sync.aead.encrypt
        sha256, join, u32, sign = hashlib.sha256, b"".join, _U32.pack, self.signing.sign
        host, version, first = self.host, self.version, head.next_idx
        records: list[Record] = []
        keep = records.append
        encoded: list[bytes] = []
        keep_entry = encoded.append
        prev = head.head_hash
        last = first + count - 1
        unsigned = 0
        for n, (timestamp, plaintext) in enumerate(zip(timestamps, plaintexts, strict=True)):
            idx = first + n
            fresh = randomness[n * _FRESH + 10 : (n + 1) * _FRESH]
            content_key, nonce = fresh[:SYNC_KEY_LEN], fresh[SYNC_KEY_LEN:]
            meta = encode_meta(ids[n], idx, timestamp)
            aad = AAD_PREFIX_V1 + meta
            payload = AESGCM(content_key).encrypt(_ZERO_NONCE, plaintext, aad)
            wrapped_key = wrap_prefix + nonce + wrap(nonce, content_key, aad)
            # record_hash of the record being built, from the metadata already encoded
            # for the AEAD (tests/test_crypto.py holds the two equal for any record)
            hashed = join(
                (
                    HASH_PREFIX_V1,
                    meta,
                    u32(len(payload)),
                    payload,
                    _WRAPPED_KEY_LEN_BYTE,
                    wrapped_key,
                    prev,
                )
            )
            digest = sha256(hashed).digest()
            unsigned += len(payload)
            signs = idx == last or must_sign(idx) or unsigned >= SIGN_BYTES
            sig = sign(digest) if signs else b""
            unsigned = 0 if signs else unsigned
            keep(
                Record(ids[n], host, tag, idx, timestamp, version, payload, wrapped_key, prev, sig)
            )
            keep_entry(entry(hashed, sig))
            prev = digest
        return records, encoded
