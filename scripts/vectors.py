"""Write docs/vectors/v1.json: the protocol's test vectors, for another implementation.

`make vectors` runs this. The outputs come from the real code (peer.records,
peer.crypto, peer.identity, peer.codec, and a real store serving a pull), from fixed
inputs, including the random values, so the file is the same at every run.
tests/test_vectors_json.py checks that the committed file is what this script writes,
re-derives every value from the file with hashlib and cryptography alone, and runs the
`invalid` entries through the real receiver and reader.

Sealing with fixed randomness is `seal_fixed` here: the documented layout (§5) written
with AESGCM directly, because the code's sealer draws its own random values. The code
then opens what it sealed (`open_record`); tests/test_protocol_vectors.py uses it too.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer import codec
from peer.crypto import SigningKey, SyncKey, host_id, must_sign, open_record, record_hash
from peer.identity import format_node_id, node_id_of
from peer.outbound import Outbound
from peer.records import (
    ZERO_HASH,
    Range,
    Record,
    associated_data,
    hash_input,
    metadata,
    uuid7,
)
from peer.segment import Segment, Segments
from peer.store import Store
from peer.v1 import sync_pb2 as pb

Json = dict[str, Any]
OUT = Path(__file__).resolve().parents[1] / "docs" / "vectors" / "v1.json"

# -- the fixed inputs ---------------------------------------------------------------------

SYNC_KEY = bytes(range(32))  # as in docs/protocol.md §12
OTHER_SYNC_KEY = bytes(range(32, 64))
SEED = bytes.fromhex(  # RFC 8032 §7.1 TEST 1, as in §12
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
OTHER_SEED = bytes.fromhex(  # RFC 8032 §7.1 TEST 2
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
)
TAG = "journal"
VERSION = "v1"
T0 = 1_764_400_000_000_000_000
T1 = T0 + 60_000_000_000
# Two appends, of three records then two: the last record of each is signed (§6).
APPENDS: list[list[tuple[int, bytes, str]]] = [
    [
        (T0, b"buy milk", "text"),
        (T0 + 1, b"", "an empty plaintext: the payload is the 16-byte AEAD tag alone"),
        (
            T0 + 2,
            b'{"op":"set","key":"color","value":"blue"}',
            "a kv app operation (compact UTF-8 JSON)",
        ),
    ],
    [
        (T1, bytes.fromhex("00ff80fe"), "bytes that are not UTF-8"),
        (T1 + 1, "café ☕".encode(), "UTF-8 text beyond ASCII"),
    ],
]

# A certificate made once by peer.crypto.generate_tls_identity (ECDSA signatures are
# random, so a fresh one would differ at every run); the test checks that the code
# accepts it as a node certificate.
CERTIFICATE_DER = bytes.fromhex(
    "308201563081fda00302010202145975faf647687a83cd0f2b3ff214356a002249c4300a06082a86"
    "48ce3d0403023020311e301c06035504030c15706565722d6365386135303034613535643265353830"
    "20170d3030303130313030303030305a180f39393939313233313233353935395a3020311e301c0603"
    "5504030c15706565722d636538613530303461353564326535383059301306072a8648ce3d020106"
    "082a8648ce3d03010703420004d1506fbca75c1b2fd0763352676347abf5fbb7914e0b05eda04ed2"
    "4e945c428fb4964c45a62b10a7ad3a10f8d86f04251d33cf59eef49628c4eb7a7d43544279a31330"
    "11300f0603551d1104083006820470656572300a06082a8648ce3d04030203480030450221"
    "00de7dd6f6c86fe4243cb1a18865fef7cf04c09561113d0cb8bb3041a86add7a95022014c8f200"
    "28d0d779d31ea7c63e52797a9e1513c6b8a8c20f7800a99e9f81fa58"
)


def fixed(name: str, size: int) -> bytes:
    """A fixed stand-in for `size` random bytes (at most 32), named so each is distinct."""
    return hashlib.sha256(b"peer.vectors.v1\x00" + name.encode()).digest()[:size]


def seal_fixed(
    sync_key: bytes,
    key_id: bytes,
    aad: bytes,
    plaintext: bytes,
    content_key: bytes,
    wrap_nonce: bytes,
) -> tuple[bytes, bytes]:
    """(payload, wrapped_key) as docs/protocol.md §5 lays them out, with the random
    content key and wrapping nonce given. Independent of peer.crypto on purpose."""
    payload = AESGCM(content_key).encrypt(bytes(12), plaintext, aad)
    sealed_key = AESGCM(sync_key).encrypt(wrap_nonce, content_key, aad)
    return payload, b"\x01" + key_id + wrap_nonce + sealed_key


# -- the log ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Written:
    """One record of the log with the inputs it was made from."""

    record: Record
    append: int
    plaintext: bytes
    content_key: bytes
    wrap_nonce: bytes
    id_random: bytes
    note: str


def sealed(sync: SyncKey, record: Record, plaintext: bytes, name: str) -> Record:
    """`record` with its payload and wrapped key, from the fixed randomness `name`."""
    payload, wrapped = seal_fixed(
        sync.secret,
        sync.key_id,
        associated_data(record),
        plaintext,
        fixed(name + ".content_key", 32),
        fixed(name + ".wrap_nonce", 12),
    )
    done = dataclasses.replace(record, payload=payload, wrapped_key=wrapped)
    if open_record(sync, done) != plaintext:  # the code opens what the layout sealed
        raise AssertionError(f"{name} does not open")
    return done


def signed(record: Record, signing: SigningKey) -> Record:
    return dataclasses.replace(record, sig=signing.sign(record_hash(record)))


def write_log(sync: SyncKey, signing: SigningKey) -> list[Written]:
    """The log as a writer makes it: each record chained to the one before, the last
    of each append signed (and any record whose idx + 1 is a multiple of 256)."""
    log: list[Written] = []
    prev = ZERO_HASH
    for number, append in enumerate(APPENDS):
        for position, (timestamp, plaintext, note) in enumerate(append):
            idx = len(log)
            name = f"r{idx}"
            id_random = fixed(name + ".id_random", 10)
            rid = uuid7(timestamp // 1_000_000, id_random)
            bare = Record(rid, signing.host, TAG, idx, timestamp, VERSION, b"", b"", prev)
            record = sealed(sync, bare, plaintext, name)
            if position == len(append) - 1 or must_sign(idx):
                record = signed(record, signing)
            log.append(
                Written(
                    record,
                    number,
                    plaintext,
                    fixed(name + ".content_key", 32),
                    fixed(name + ".wrap_nonce", 12),
                    id_random,
                    note,
                )
            )
            prev = record_hash(record)
    return log


def record_json(r: Record) -> Json:
    return {
        "id": r.id.hex(),
        "host": r.host.hex(),
        "tag": r.tag,
        "idx": r.idx,
        "timestamp": r.timestamp,
        "version": r.version,
        "payload": r.payload.hex(),
        "wrapped_key": r.wrapped_key.hex(),
        "prev": r.prev.hex(),
        "sig": r.sig.hex(),
    }


def written_json(w: Written) -> Json:
    r = w.record
    return {
        "append": w.append,
        "note": w.note,
        "inputs": {
            "unix_ms": r.timestamp // 1_000_000,
            "id_random": w.id_random.hex(),
            "host": r.host.hex(),
            "tag": r.tag,
            "idx": r.idx,
            "timestamp": r.timestamp,
            "version": r.version,
            "plaintext": w.plaintext.hex(),
            "content_key": w.content_key.hex(),
            "wrap_nonce": w.wrap_nonce.hex(),
        },
        "outputs": {
            "id": r.id.hex(),
            "metadata": metadata(r).hex(),
            "aad": associated_data(r).hex(),
            "prev": r.prev.hex(),
            "payload": r.payload.hex(),
            "wrapped_key": r.wrapped_key.hex(),
            "hash_input": hash_input(r).hex(),
            "hash": record_hash(r).hex(),
            "signed": bool(r.sig),
            "sig": r.sig.hex(),
        },
    }


# -- the sections -------------------------------------------------------------------------


def sync_key_section() -> Json:
    sync = SyncKey(SYNC_KEY)
    text = sync.to_text()
    body = text.split(":", 1)[1]
    typo = body[:5] + ("B" if body[5] != "B" else "C") + body[6:]
    return {
        "key": SYNC_KEY.hex(),
        "key_id_input": (b"peer.key-id.v1\x00" + SYNC_KEY).hex(),
        "key_id": sync.key_id.hex(),
        "checksum": hashlib.sha256(SYNC_KEY).digest()[:4].hex(),
        "text": text,
        "accepted_texts": [
            {"text": f"  {text}\n", "why": "surrounding whitespace is stripped"},
            {"text": f"{text}==", "why": "padding is accepted (and ignored)"},
        ],
        "invalid_texts": [
            {
                "text": "peer-key-2:" + body,
                "why": "another prefix",
                "error": "KeyFormatError",
            },
            {
                "text": "peer-key-1:" + typo,
                "why": "one character changed: the checksum does not match",
                "error": "KeyFormatError",
            },
            {
                "text": "peer-key-1:" + body[:-8],
                "why": "30 decoded bytes, not 36",
                "error": "KeyFormatError",
            },
            {
                "text": "peer-key-1:" + body[:20] + "!" + body[20:],
                "why": "a character outside the base64url alphabet",
                "error": "KeyFormatError",
            },
        ],
    }


def host_section(signing: SigningKey) -> Json:
    return {
        "ed25519_seed": signing.to_bytes().hex(),
        "public_key": signing.public_key.hex(),
        "host_input": (b"peer.host.v1\x00" + signing.public_key).hex(),
        "host": signing.host.hex(),
    }


def node_id_section() -> Json:
    pem = ssl.DER_cert_to_PEM_cert(CERTIFICATE_DER).encode("ascii")
    node_id = node_id_of(pem)
    text = format_node_id(node_id)
    flat = text.replace("-", "")
    wrong_check = flat[:13] + ("A" if flat[13] != "A" else "B") + flat[14:]
    examples = [node_id, bytes(32), b"\xff" * 32, bytes(range(32))]
    return {
        "certificate_der": CERTIFICATE_DER.hex(),
        "node_id": node_id.hex(),
        "text": text,
        "examples": [
            {
                "node_id": raw.hex(),
                "base32": _b32(raw),
                "text": format_node_id(raw),
            }
            for raw in examples
        ],
        "accepted_texts": [
            {"text": text.lower(), "why": "any case"},
            {"text": flat, "why": "without dashes"},
            {"text": " ".join(text.split("-")), "why": "spaces instead of dashes"},
        ],
        "invalid_texts": [
            {
                "text": "-".join(wrong_check[i : i + 7] for i in range(0, 56, 7)),
                "why": "the check letter of block 1 is wrong",
                "error": "UsageError",
            },
            {
                "text": text[:-1],
                "why": "55 letters, not 56",
                "error": "UsageError",
            },
            {
                "text": "1" + text[1:],
                "why": "a character outside the base32 alphabet",
                "error": "UsageError",
            },
        ],
    }


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def uuid7_section(log: Sequence[Written]) -> list[Json]:
    cases = [(w.record.timestamp // 1_000_000, w.id_random) for w in log]
    cases += [(0, bytes(10)), (2**48 - 1, b"\xff" * 10)]
    return [{"unix_ms": ms, "random": rnd.hex(), "id": uuid7(ms, rnd).hex()} for ms, rnd in cases]


def records_section(log: Sequence[Written]) -> Json:
    last = log[-1].record
    return {
        "tag": TAG,
        "version": VERSION,
        "appends": [[w.record.idx for w in log if w.append == n] for n in range(len(APPENDS))],
        "log": [written_json(w) for w in log],
        "head": {"next_idx": last.idx + 1, "head_hash": record_hash(last).hex()},
    }


# What is pulled: the ranges, max_batch, and why the case is here.
PULLS: list[tuple[tuple[int, int], int, str]] = [
    ((0, 5), 1000, "the whole log in one message, with the host key"),
    (
        (0, 5),
        3,
        "max_batch 3: two messages, each ending on a signed record; the host key is "
        "sent once per stream, in the first message",
    ),
    (
        (0, 2),
        1000,
        "a range whose end - 1 is not signed is extended to the next signed record "
        "(idx 2): a receiver stores the extra record like any other",
    ),
]


async def batches_section(log: Sequence[Record], public_key: bytes) -> Json:
    """The pull streams a real store serves (as the SyncService does) for PULLS."""
    host = log[0].host
    streams: list[Json] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "vectors.db")
        try:
            await store.insert_batch(log, {host: public_key})
            for (start, end), max_batch, why in PULLS:
                ranges = [Range(host, TAG, start, end)]
                messages = [
                    {
                        "idx": [r.idx for r in batch],
                        "hosts": keys_json(keys),
                        "protobuf": codec.encode_batch(pb.PullRecordsResponse, batch, keys).hex(),
                        "segments": [segment_json(part) for part in Segments.of(batch).parts],
                        "segments_protobuf": codec.encode_batch(
                            pb.PullRecordsResponse, batch, keys, segments=True
                        ).hex(),
                    }
                    async for batch, keys in Outbound(store, max_batch).ranges(ranges)
                ]
                streams.append(
                    {
                        "why": why,
                        "request": {
                            "ranges": [
                                {"host": host.hex(), "tag": TAG, "start": start, "end": end}
                            ],
                            "max_batch": max_batch,
                        },
                        "request_protobuf": codec.encode_pull_request(ranges, max_batch).hex(),
                        "request_protobuf_1_2": codec.encode_pull_request(
                            ranges, max_batch, segments=True
                        ).hex(),
                        "messages": messages,
                    }
                )
        finally:
            await store.close()
    return {
        "note": (
            "Protobuf serialization is not canonical: a decoder MUST read these bytes to "
            "the records of the `records` section, but an encoder MAY produce other bytes "
            "for the same messages. Hashes and signatures never cover protobuf bytes."
        ),
        "streams": streams,
    }


def segment_json(part: Segment) -> Json:
    return {
        "host": part.host.hex(),
        "tag": part.tag,
        "first_idx": part.first_idx,
        "count": part.count,
        "data": part.data.hex(),
    }


def flip(data: bytes, at: int) -> bytes:
    """`data` with one bit of byte `at` flipped."""
    return data[:at] + bytes((data[at] ^ 0x01,)) + data[at + 1 :]


def invalid_section(log: Sequence[Written], sync: SyncKey, signing: SigningKey) -> list[Json]:
    r = [w.record for w in log]
    key = {signing.host: signing.public_key}
    other_sync = SyncKey(OTHER_SYNC_KEY)
    tampered_time = dataclasses.replace(r[0], timestamp=r[0].timestamp + 1)
    fork_id = uuid7(r[2].timestamp // 1_000_000, fixed("fork.id_random", 10))
    fork_bare = dataclasses.replace(r[2], id=fork_id, payload=b"", wrapped_key=b"", sig=b"")
    fork = signed(sealed(sync, fork_bare, b"another value", "fork"), signing)
    odd_prev = dataclasses.replace(r[0], prev=b"\x01" * 32)
    odd_wrap = dataclasses.replace(r[2], wrapped_key=b"\x02" + r[2].wrapped_key[1:], sig=b"")
    return [
        refused(
            "prev_broken",
            "record 1's prev is not the hash of record 0",
            "ForgeryError",
            [r[0], dataclasses.replace(r[1], prev=flip(r[1].prev, 31)), r[2]],
            key,
        ),
        refused(
            "metadata_tampered",
            "record 0's timestamp was changed after it was written: its hash changed, so "
            "record 1's prev no longer matches it",
            "ForgeryError",
            [tampered_time, r[1], r[2]],
            key,
        ),
        refused(
            "payload_tampered",
            "one bit of record 2's payload was flipped: its hash changed, so its signature "
            "no longer verifies",
            "ForgeryError",
            [r[0], r[1], dataclasses.replace(r[2], payload=flip(r[2].payload, 0))],
            key,
        ),
        refused(
            "sig_bad",
            "one bit of record 2's signature was flipped",
            "ForgeryError",
            [r[0], r[1], dataclasses.replace(r[2], sig=flip(r[2].sig, 0))],
            key,
        ),
        refused(
            "ends_unsigned",
            "the log's run in the message ends on an unsigned record (idx 1)",
            "ForgeryError",
            [r[0], r[1]],
            key,
        ),
        refused(
            "not_consecutive",
            "the records of one log in a message must be consecutive (here idx 0, then 2)",
            "InvalidRecord",
            [r[0], r[2]],
            key,
        ),
        refused(
            "first_prev_not_zero",
            "the record at idx 0 must have 32 zero bytes as prev: a bounds check, made "
            "when the message is decoded (this record is signed over its odd prev)",
            "ProtocolError",
            [signed(odd_prev, signing)],
            key,
        ),
        refused(
            "wrong_host_key",
            "the public key offered for the host is another key (RFC 8032 TEST 2): its "
            "host id is not the records' host",
            "ForgeryError",
            r[:3],
            {signing.host: SigningKey.from_bytes(OTHER_SEED).public_key},
        ),
        refused(
            "no_host_key",
            "no public key is offered, and the receiver knows none for this host",
            "UnknownHost",
            r[:3],
            {},
        ),
        refused(
            "gap",
            "the receiver holds nothing of the log and the run starts at idx 3: the "
            "refusal names the idx expected (trailing metadata peer-expected-idx)",
            "GapError",
            [r[3], r[4]],
            key,
            expected_idx=0,
        ),
        refused(
            "fork",
            "the receiver holds idx 0-2; this is another record at idx 2, signed by the "
            "same host: the receiver keeps it as evidence, freezes the log and refuses",
            "ForkDetected",
            [fork],
            key,
            stored=[0, 1, 2],
        ),
        unopenable(
            "wrong_key",
            "the reader holds another sync key: the key ids differ, so it refuses without "
            "decrypting, and names both ids",
            "WrongKey",
            r[:3],
            key,
            sync_key=other_sync.secret,
            record_key_id=sync.key_id.hex(),
            local_key_id=other_sync.key_id.hex(),
        ),
        unopenable(
            "aad_tampered",
            "record 0 with its timestamp changed, then hashed and signed again (so a "
            "receiver stores it): the associated data is not the one it was sealed with, "
            "so unwrapping the content key fails",
            "DecryptionFailed",
            [signed(tampered_time, signing)],
            key,
        ),
        unopenable(
            "unknown_wrapping",
            "record 2 with wrapped_key[0] = 0x02, not 0x01 (hashed and signed again, so a "
            "receiver stores it): the wrapping is unknown",
            "DecryptionFailed",
            [r[0], r[1], signed(odd_wrap, signing)],
            key,
        ),
    ]


def refused(
    name: str,
    why: str,
    error: str,
    records: Sequence[Record],
    keys: dict[bytes, bytes],
    *,
    stored: Sequence[int] = (),
    **extra: object,
) -> Json:
    """An `invalid` entry that a receiver refuses."""
    return {
        "name": name,
        "check": "receive",
        "why": why,
        "error": error,
        "status": codec.code_for(codec.ERROR_NAMES[error]).name,
        "stored": list(stored),
        "records": [record_json(x) for x in records],
        "host_keys": keys_json(keys),
        **extra,
    }


def unopenable(
    name: str,
    why: str,
    error: str,
    records: Sequence[Record],
    keys: dict[bytes, bytes],
    *,
    sync_key: bytes = SYNC_KEY,
    **extra: object,
) -> Json:
    """An `invalid` entry that a receiver stores and a reader cannot open (the last record)."""
    return {
        "name": name,
        "check": "open",
        "why": why,
        "error": error,
        "records": [record_json(x) for x in records],
        "host_keys": keys_json(keys),
        "sync_key": sync_key.hex(),
        **extra,
    }


def keys_json(keys: dict[bytes, bytes]) -> list[Json]:
    return [{"host": h.hex(), "public_key": k.hex()} for h, k in keys.items()]


# -- the file -------------------------------------------------------------------------------

CONVENTIONS = (
    "Bytes are lowercase hex strings; an empty string is zero bytes. Text values (tag, "
    "version, key and node id texts) are JSON strings. Integers are JSON numbers: "
    "timestamps exceed 2^53, so read them as 64-bit integers, not as doubles. `||` is "
    "concatenation; u8, u32 and u64 are unsigned big-endian integers of 1, 4 and 8 bytes; "
    '"text\\0" is the ASCII bytes of text and one zero byte. SHA-256(x)[:n] is the first n '
    "bytes of the digest. Every value here was made by the code of this repository "
    "(scripts/vectors.py, `make vectors`) and is checked by tests/test_vectors_json.py. "
    "The random values (content keys, wrapping nonces, id randomness) are fixed inputs: "
    "take them as given. An implementation MUST reproduce every output byte for byte, "
    "except protobuf bytes (see batches.note)."
)

FORMAT: Json = {
    "conventions": CONVENTIONS,
    "sync_key": {
        "about": "The sync key shared by one user's devices (32 bytes), its id and text form.",
        "key": "the 32-byte sync key",
        "key_id_input": '"peer.key-id.v1\\0" || key',
        "key_id": "SHA-256(key_id_input)[:8]: public, carried in every wrapped_key",
        "checksum": "SHA-256(key)[:4]",
        "text": '"peer-key-1:" || base64url without padding (RFC 4648 §5, alphabet A-Z a-z '
        "0-9 - _) of key || checksum: always 11 + 48 characters",
        "accepted_texts": "texts a reader MUST read as `key` (why: what differs)",
        "invalid_texts": "texts a reader MUST refuse and never use as a key; error: the "
        "class this implementation raises",
    },
    "host": {
        "about": "A host signs its own logs with an Ed25519 key (RFC 8032, pure Ed25519).",
        "ed25519_seed": "the 32-byte private key (RFC 8032 §7.1 TEST 1)",
        "public_key": "the raw 32-byte public key",
        "host_input": '"peer.host.v1\\0" || public_key',
        "host": "the host id: SHA-256(host_input)[:16]",
    },
    "node_id": {
        "about": "A node's TLS identity: SHA-256 of its certificate (DER) and its printed form.",
        "certificate_der": "a node certificate (ECDSA P-256, self-signed, valid 2000-01-01 "
        "to 9999-12-31, CN=peer-<16 hex>, SAN DNS:peer)",
        "node_id": "SHA-256(certificate_der): 32 bytes",
        "text": "the printed form of node_id, see examples",
        "examples": "node_id (32 bytes) -> base32: RFC 4648 base32 (A-Z 2-7), padding "
        "removed, 52 letters -> text: the 52 letters cut into 4 blocks of 13, each block "
        "followed by its check letter (56 letters), then cut into groups of 7 joined by "
        '"-". Check letter of a block (Luhn mod 32): value(c) = index of c in '
        '"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"; walking the block from its last letter to '
        "its first with factor 2, 1, 2, 1, ...: addend = factor * value, sum += addend "
        "div 32 + addend mod 32; the check letter has value (32 - sum mod 32) mod 32",
        "accepted_texts": "texts a reader MUST read as node_id: any case, dashes and "
        "whitespace ignored",
        "invalid_texts": "texts a reader MUST refuse; error: the class this implementation raises",
    },
    "uuid7": {
        "about": "Record ids (writers' rule; receivers check only the length, 16 bytes). Each "
        "case: unix_ms and 10 random bytes r[0..9] -> id = u48 unix_ms (6 bytes big-endian) "
        "|| (0x70 | (r[0] & 0x0f)) || r[1] || (0x80 | (r[2] & 0x3f)) || r[3..9]. The "
        "records of the log use unix_ms = timestamp div 10^6 (a writer uses its clock).",
    },
    "records": {
        "about": "A small log of one host (see host) and one tag, written by two appends, "
        "sealed with sync_key.key. The last record of each append is signed, and so is "
        "any record whose (idx + 1) is a multiple of 256 (none here); the others have an "
        "empty sig.",
        "tag": "the log's tag, 1-64 characters of [a-z0-9._-]",
        "version": "the payload version of every record, 1-16 characters of [a-z0-9._-]",
        "appends": "the idx of the records written by each append, in order",
        "head": "what a node holding the log advertises: next_idx (records held) and "
        "head_hash (hash of the last record)",
        "log": "the records by idx; each has append (which append wrote it), note, "
        "inputs and outputs",
        "log.inputs": "unix_ms and id_random (the id's inputs, see uuid7), host, tag, idx, "
        "timestamp (nanoseconds since the Unix epoch), version, plaintext, content_key (32 "
        "random bytes, fresh for every record), wrap_nonce (12 random bytes)",
        "log.outputs.id": "uuid7(unix_ms, id_random)",
        "log.outputs.metadata": "id[16] || host[16] || u8 len(tag) || tag || u64 idx || "
        "u64 timestamp || u8 len(version) || version",
        "log.outputs.aad": '"peer.aad.v1\\0" || metadata: the associated data of both '
        "AEAD operations",
        "log.outputs.prev": "32 zero bytes at idx 0, else the hash of the record at idx - 1",
        "log.outputs.payload": "AES-256-GCM(key = content_key, nonce = 12 zero bytes)"
        ".encrypt(plaintext, aad): ciphertext || 16-byte tag",
        "log.outputs.wrapped_key": "0x01 || key_id[8] || wrap_nonce[12] || AES-256-GCM(key = "
        "sync key, nonce = wrap_nonce).encrypt(content_key, aad)[48]: 69 bytes. To open: "
        "check wrapped_key[0] = 0x01 and length 69 (else the wrapping is unknown), check "
        "wrapped_key[1:9] = your key id (else the record was written with another key: do "
        "not decrypt), decrypt wrapped_key[21:] with the sync key and nonce "
        "wrapped_key[9:21] to get content_key, then the payload with it and the zero nonce",
        "log.outputs.hash_input": '"peer.record.v1\\0" || metadata || u32 len(payload) || '
        "payload || u8 len(wrapped_key) || wrapped_key || prev[32]: every field but sig",
        "log.outputs.hash": "SHA-256(hash_input): the record hash",
        "log.outputs.signed": "whether the record carries a signature",
        "log.outputs.sig": "empty, or Ed25519-sign(ed25519_seed, hash): the message "
        "signed is the 32-byte hash itself (Ed25519 is deterministic)",
    },
    "batches": {
        "about": "The PullRecordsResponse messages (proto/peer/v1/sync.proto, package peer.v1) "
        "that a node holding the log sends for a PullRecordsRequest. Each log's run in a "
        "message ends on a signed record, and each host key is sent once per stream.",
        "note": "about protobuf bytes",
        "streams": "each: why (what it shows), request (ranges [start, end) and "
        "max_batch), request_protobuf (the PullRecordsRequest), messages in stream order",
        "streams.messages": "each: idx (the records of the log it carries, in order), hosts "
        "(the HostKey entries), protobuf (the PullRecordsResponse bytes), segments (since "
        "1.2: the same records as Segment entries: host, tag, first_idx, count, data; data "
        "is each record's u32 len(hash_input) || hash_input || u8 len(sig) || sig), "
        "segments_protobuf (the PullRecordsResponse a 1.2 server sends for "
        "request_protobuf_1_2, the request with segments = true)",
    },
    "invalid": {
        "about": "Records a node MUST refuse, each built from the log. check = receive: a node "
        "that holds the records listed by idx in stored (of records.log) receives a "
        "message with records and host_keys and MUST refuse the whole message, storing "
        "nothing of it. check = open: the records are authentic (a receiver holding "
        "nothing of the log stores them), but a reader holding sync_key MUST NOT return "
        "a plaintext for the last one: an unreadable record is not an error of the log.",
        "name": "a short name",
        "why": "what is wrong",
        "error": "the peer.errors class this implementation raises (the names of "
        "docs/protocol.md §11, sent as trailing metadata peer-error)",
        "status": "receive only: the gRPC status a server answers with",
        "stored": "receive only: the idx of the records of records.log that the receiver "
        "holds first",
        "records": "the records of the message, with the fields of the protobuf Record",
        "host_keys": "the host keys offered with them",
        "sync_key": "open only: the sync key of the reader",
        "expected_idx": "gap only: the idx the receiver expects (peer-expected-idx)",
        "record_key_id": "wrong_key only: the key id in the record's wrapped_key",
        "local_key_id": "wrong_key only: the key id of the reader's sync key",
    },
}


def vectors() -> Json:
    sync = SyncKey(SYNC_KEY)
    signing = SigningKey.from_bytes(SEED)
    if host_id(signing.public_key) != signing.host:
        raise AssertionError("host id")
    log = write_log(sync, signing)
    records = [w.record for w in log]
    return {
        "description": (
            "Test vectors of the peer sync protocol, version 1 (docs/protocol.md), for "
            "checking another implementation without reading Markdown. `format` explains "
            "every section and field."
        ),
        "format": FORMAT,
        "sync_key": sync_key_section(),
        "host": host_section(signing),
        "node_id": node_id_section(),
        "uuid7": uuid7_section(log),
        "records": records_section(log),
        "batches": asyncio.run(batches_section(records, signing.public_key)),
        "invalid": invalid_section(log, sync, signing),
    }


def render() -> str:
    return json.dumps(vectors(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
