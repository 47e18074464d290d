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
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer.crypto.chain import SIGN_BYTES, must_sign
from peer.crypto.keys import KEY_ID_LEN, SYNC_KEY_LEN, SigningKey, SyncKey
from peer.errors import CryptoError, DecryptionFailed, InvalidRecord, WrongKey
from peer.records import (
    AAD_PREFIX_V1,
    HASH_PREFIX_V1,
    MAX_PAYLOAD,
    SIG_LEN,
    Head,
    LogKey,
    Record,
    Written,
    associated_data,
    metadata_encoder,
    new_record_ids,
)
from peer.relay import NO_SYNC_KEY
from peer.segment import decode

MAX_PLAINTEXT = MAX_PAYLOAD - 16  # the AEAD tag takes 16 bytes of the payload bound
WRAP_V1 = 0x01
WRAPPED_KEY_LEN = 1 + KEY_ID_LEN + 12 + SYNC_KEY_LEN + 16
_ZERO_NONCE = bytes(12)
_WRAPPED_KEY_LEN_BYTE = bytes((WRAPPED_KEY_LEN,))
_U32 = struct.Struct(">I")
_SIG_LEN_BYTE = bytes((SIG_LEN,))  # an entry's u8 length of its signature...
_UNSIGNED = bytes((0,))  # ...and of none
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


@dataclass(frozen=True, slots=True)
class Sealed:
    """Records `Author.seal` wrote: consecutive records of one log as their segment
    entries, which of them are signed, and the hash of the last (the log's new head)."""

    after: Head  # the head they continue
    written: Written  # their log, idx and timestamps
    entries: list[bytes]
    signed: list[int]  # positions of the signed records
    head_hash: bytes

    @property
    def count(self) -> int:
        return len(self.entries)

    def records(self) -> list[Record]:
        """The records, decoded from their entries."""
        return decode(b"".join(self.entries)) if self.entries else []


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
        return self.seal(tag, head, timestamps, plaintexts).records()

    def seal(
        self, tag: str, head: Head, timestamps: Sequence[int], plaintexts: Sequence[bytes]
    ) -> Sealed:
        """Records that continue a log at `head`, as their segment entries
        (`segment.entry`, from the bytes each was hashed from): what the store writes
        and the wire carries. No Record is built (a bulk append paid a fifth of its
        time for them); `Sealed.records()` decodes them for callers that want them."""
        for plaintext in plaintexts:
            if len(plaintext) > MAX_PLAINTEXT:
                raise InvalidRecord(
                    f"a record of {len(plaintext):,} bytes is over the limit of "
                    f"{MAX_PLAINTEXT:,} bytes"
                )
        # One loop for every record written, its steps inline (no call per step):
        # `_seal`, `new_record_id`, `metadata_of`, `hash_input_of` and `entry` as they are.
        count = len(plaintexts)
        randomness = os.urandom(_FRESH * count)  # one system call, not three each
        ids = new_record_ids(randomness, _FRESH, count)
        encode_meta = metadata_encoder(self.host, tag, self.version)
        wrap_prefix = bytes((WRAP_V1,)) + self.sync.key_id
        wrap = self.sync.aead.encrypt
        sha256, join, u32, sign = hashlib.sha256, b"".join, _U32.pack, self.signing.sign
        first = head.next_idx
        encoded: list[bytes] = []
        keep_entry = encoded.append
        signed: list[int] = []
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
            prev = sha256(hashed).digest()
            unsigned += len(payload)
            if idx == last or must_sign(idx) or unsigned >= SIGN_BYTES:
                keep_entry(join((u32(len(hashed)), hashed, _SIG_LEN_BYTE, sign(prev))))
                signed.append(n)
                unsigned = 0
            else:
                keep_entry(join((u32(len(hashed)), hashed, _UNSIGNED)))
        written = Written(LogKey(self.host, tag), first, tuple(timestamps))
        return Sealed(head, written, encoded, signed, prev)
