"""docs/vectors/v1.json, the machine-readable test vectors, checked three ways.

1. The committed file is byte for byte what scripts/vectors.py writes from the code.
2. As another implementer would: every value re-derived from the file alone with
   hashlib and cryptography's primitives (Ed25519, AES-GCM), and the batches decoded with
   the generated protobuf code, following the file's own `format` text, not peer's code.
3. The real receiver and reader refuse each `invalid` entry with the error it names,
   and take the valid log, key texts and node ids.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer import codec
from peer.crypto import (
    Author,
    SigningKey,
    SyncKey,
    check_node_certificate,
    open_record,
    record_hash,
)
from peer.errors import CryptoError, GapError, PeerError, WrongKey
from peer.identity import format_node_id, node_id_of, parse_node_id
from peer.records import Head, LogKey, Record
from peer.store import InsertResult, Store
from peer.v1 import sync_pb2 as pb
from scripts import vectors as script
from tests.test_protocol_vectors import VECTOR

Json = dict[str, Any]
FILE = Path(__file__).resolve().parents[1] / "docs" / "vectors" / "v1.json"
V: Json = json.loads(FILE.read_text(encoding="utf-8"))
LOG: list[Json] = V["records"]["log"]
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def x(text: str) -> bytes:
    return bytes.fromhex(text)


def fields(entry: Json) -> Json:
    """The Record fields of a `records.log` entry."""
    i, o = entry["inputs"], entry["outputs"]
    keys = ("id", "host", "tag", "idx", "timestamp", "version")
    return {
        **{k: o.get(k, i.get(k)) for k in keys},
        **{k: o[k] for k in ("payload", "wrapped_key", "prev", "sig")},
    }


# -- 1. the file is what the code writes --------------------------------------------------


def test_the_file_is_what_scripts_vectors_writes() -> None:
    assert FILE.read_text(encoding="utf-8") == script.render(), (
        "docs/vectors/v1.json differs from what the code makes: run `make vectors` "
        "(and commit the file if the change is meant: a changed output is a new version)"
    )


def test_the_file_explains_every_section() -> None:
    sections = set(V) - {"description", "format"}
    assert sections == {"sync_key", "host", "node_id", "uuid7", "records", "batches", "invalid"}
    assert sections <= set(V["format"])
    for name in ("sync_key", "host", "node_id"):
        assert set(V[name]) <= set(V["format"][name]), name


def test_keys_and_host_are_those_of_the_markdown_vector() -> None:
    """docs/protocol.md §12 and this file start from the same key and seed."""
    assert V["sync_key"]["key"] == VECTOR["sync_key"]
    assert V["sync_key"]["key_id"] == VECTOR["key_id"]
    assert V["sync_key"]["text"] == VECTOR["sync_key_text"]
    assert V["host"]["ed25519_seed"] == VECTOR["ed25519_seed"]
    assert V["host"]["public_key"] == VECTOR["public_key"]
    assert V["host"]["host"] == VECTOR["host"]


# -- 2. an implementer's check: hashlib, cryptography and the file -------------------------


def metadata_of(f: Json) -> bytes:
    tag, version = f["tag"].encode(), f["version"].encode()
    return b"".join(
        (
            x(f["id"]),
            x(f["host"]),
            bytes((len(tag),)),
            tag,
            struct.pack(">QQ", f["idx"], f["timestamp"]),
            bytes((len(version),)),
            version,
        )
    )


def hash_input_of(f: Json) -> bytes:
    payload, wrapped = x(f["payload"]), x(f["wrapped_key"])
    return b"".join(
        (
            b"peer.record.v1\0",
            metadata_of(f),
            struct.pack(">I", len(payload)),
            payload,
            bytes((len(wrapped),)),
            wrapped,
            x(f["prev"]),
        )
    )


def uuid7_of(unix_ms: int, r: bytes) -> bytes:
    return (
        unix_ms.to_bytes(6, "big")
        + bytes((0x70 | (r[0] & 0x0F), r[1], 0x80 | (r[2] & 0x3F)))
        + r[3:10]
    )


def check_letter(block: str) -> str:
    total = 0
    for n, char in enumerate(reversed(block)):
        addend = (2 if n % 2 == 0 else 1) * B32.index(char)
        total += addend // 32 + addend % 32
    return B32[-total % 32]


def printed_node_id(raw: bytes) -> str:
    letters = base64.b32encode(raw).decode().rstrip("=")
    checked = "".join(b + check_letter(b) for b in (letters[i : i + 13] for i in range(0, 52, 13)))
    return "-".join(checked[i : i + 7] for i in range(0, 56, 7))


def open_payload(sync_key: bytes, f: Json) -> tuple[bytes, bytes]:
    """(content key, plaintext) of a record, opened as the format says."""
    wrapped, aad = x(f["wrapped_key"]), b"peer.aad.v1\0" + metadata_of(f)
    assert len(wrapped) == 69 and wrapped[0] == 0x01
    assert wrapped[1:9] == hashlib.sha256(b"peer.key-id.v1\0" + sync_key).digest()[:8]
    content_key = AESGCM(sync_key).decrypt(wrapped[9:21], wrapped[21:], aad)
    return content_key, AESGCM(content_key).decrypt(bytes(12), x(f["payload"]), aad)


def test_sync_key_id_and_text() -> None:
    s = V["sync_key"]
    key = x(s["key"])
    assert x(s["key_id_input"]) == b"peer.key-id.v1\0" + key
    assert s["key_id"] == hashlib.sha256(x(s["key_id_input"])).hexdigest()[:16]
    assert s["checksum"] == hashlib.sha256(key).hexdigest()[:8]
    body = base64.urlsafe_b64encode(key + x(s["checksum"])).decode().rstrip("=")
    assert s["text"] == "peer-key-1:" + body
    assert len(s["text"]) == 11 + 48


def test_public_key_and_host() -> None:
    h = V["host"]
    public = Ed25519PrivateKey.from_private_bytes(x(h["ed25519_seed"])).public_key()
    assert public.public_bytes_raw().hex() == h["public_key"]
    assert x(h["host_input"]) == b"peer.host.v1\0" + x(h["public_key"])
    assert h["host"] == hashlib.sha256(x(h["host_input"])).hexdigest()[:32]


def test_node_ids_print_as_the_format_says() -> None:
    n = V["node_id"]
    assert n["node_id"] == hashlib.sha256(x(n["certificate_der"])).hexdigest()
    assert n["text"] == printed_node_id(x(n["node_id"]))
    assert n["examples"][0]["node_id"] == n["node_id"]
    for example in n["examples"]:
        raw = x(example["node_id"])
        assert example["base32"] == base64.b32encode(raw).decode().rstrip("=")
        assert example["text"] == printed_node_id(raw)


def test_uuid7s() -> None:
    assert len(V["uuid7"]) >= 3
    for case in V["uuid7"]:
        assert uuid7_of(case["unix_ms"], x(case["random"])).hex() == case["id"]


def test_each_record_seals_hashes_and_signs_as_documented() -> None:
    sync_key = x(V["sync_key"]["key"])
    key_id = x(V["sync_key"]["key_id"])
    for entry in LOG:
        i, o, f = entry["inputs"], entry["outputs"], fields(entry)
        assert f["host"] == V["host"]["host"]
        assert o["id"] == uuid7_of(i["unix_ms"], x(i["id_random"])).hex()
        assert o["metadata"] == metadata_of(f).hex()
        aad = b"peer.aad.v1\0" + x(o["metadata"])
        assert o["aad"] == aad.hex()
        content_key, nonce = x(i["content_key"]), x(i["wrap_nonce"])
        payload = AESGCM(content_key).encrypt(bytes(12), x(i["plaintext"]), aad)
        wrapped = b"\x01" + key_id + nonce + AESGCM(sync_key).encrypt(nonce, content_key, aad)
        assert (o["payload"], o["wrapped_key"]) == (payload.hex(), wrapped.hex())
        assert open_payload(sync_key, f) == (content_key, x(i["plaintext"]))
        assert o["hash_input"] == hash_input_of(f).hex()
        assert o["hash"] == hashlib.sha256(x(o["hash_input"])).hexdigest()


def test_the_log_chains_and_its_signatures_verify() -> None:
    public = Ed25519PublicKey.from_public_bytes(x(V["host"]["public_key"]))
    appends = V["records"]["appends"]
    assert [e["inputs"]["idx"] for e in LOG] == list(range(len(LOG)))
    assert [idx for append in appends for idx in append] == list(range(len(LOG)))
    prev = "00" * 32
    for entry in LOG:
        o = entry["outputs"]
        assert o["prev"] == prev
        prev = o["hash"]
        last_of_append = any(entry["inputs"]["idx"] == append[-1] for append in appends)
        assert o["signed"] == last_of_append == bool(o["sig"])
        if o["signed"]:
            public.verify(x(o["sig"]), x(o["hash"]))  # raises InvalidSignature
    assert V["records"]["head"] == {"next_idx": len(LOG), "head_hash": prev}


def test_the_batches_decode_to_the_records() -> None:
    host_key = {"host": V["host"]["host"], "public_key": V["host"]["public_key"]}
    for stream in V["batches"]["streams"]:
        request = pb.PullRecordsRequest.FromString(x(stream["request_protobuf"]))
        assert request.max_batch == stream["request"]["max_batch"]
        (wanted,) = stream["request"]["ranges"]
        (asked,) = request.ranges
        assert (asked.host.hex(), asked.tag, asked.start, asked.end) == (
            wanted["host"],
            wanted["tag"],
            wanted["start"],
            wanted["end"],
        )
        sent: list[int] = []
        for number, message in enumerate(stream["messages"]):
            decoded = pb.PullRecordsResponse.FromString(x(message["protobuf"]))
            assert [r.idx for r in decoded.records] == message["idx"]
            for got in decoded.records:
                f = fields(LOG[got.idx])
                for name in ("id", "host", "payload", "wrapped_key", "prev", "sig"):
                    assert getattr(got, name).hex() == f[name], (got.idx, name)
                for name in ("tag", "idx", "timestamp", "version"):
                    assert getattr(got, name) == f[name], (got.idx, name)
            assert LOG[message["idx"][-1]]["outputs"]["signed"], "a message ends signed"
            keys = [{"host": k.host.hex(), "public_key": k.public_key.hex()} for k in decoded.hosts]
            assert keys == message["hosts"] == ([host_key] if number == 0 else [])
            sent += message["idx"]
        check_segments(message)
        assert pb.PullRecordsRequest.FromString(x(stream["request_protobuf_1_2"])).segments
        assert sent == list(range(wanted["start"], sent[-1] + 1))
        assert sent[-1] + 1 >= wanted["end"]


def check_segments(message: Json) -> None:
    """Since 1.2 a message carries the same records as segments: each record's hash
    input (§3.3, rebuilt here by hand) and signature, length-prefixed, concatenated."""
    decoded = pb.PullRecordsResponse.FromString(x(message["segments_protobuf"]))
    assert not decoded.records
    wanted = [
        {
            "host": s.host.hex(),
            "tag": s.tag,
            "first_idx": s.first_idx,
            "count": s.count,
            "data": s.data.hex(),
        }
        for s in decoded.segments
    ]
    assert wanted == message["segments"]
    idx = [
        i for s in message["segments"] for i in range(s["first_idx"], s["first_idx"] + s["count"])
    ]
    assert idx == message["idx"]
    for entry in message["segments"]:
        data = b""
        for i in range(entry["first_idx"], entry["first_idx"] + entry["count"]):
            digest_input, sig = hash_input_of(fields(LOG[i])), x(LOG[i]["outputs"]["sig"])
            data += len(digest_input).to_bytes(4, "big") + digest_input + bytes((len(sig),)) + sig
        assert data.hex() == entry["data"]


def test_the_open_entries_fail_to_open_by_hand() -> None:
    """What an implementer's reader sees: another key id, or a tag that fails."""
    for entry in (e for e in V["invalid"] if e["check"] == "open"):
        f = entry["records"][-1]
        sync_key = x(entry["sync_key"])
        wrapped = x(f["wrapped_key"])
        if entry["name"] == "wrong_key":
            own = hashlib.sha256(b"peer.key-id.v1\0" + sync_key).hexdigest()[:16]
            assert (wrapped[1:9].hex(), own) == (entry["record_key_id"], entry["local_key_id"])
            assert entry["record_key_id"] != entry["local_key_id"]
        elif wrapped[0] == 0x01:
            with pytest.raises(InvalidTag):
                open_payload(sync_key, f)


# -- 3. the real code -----------------------------------------------------------------------


def record_of(f: Json) -> Record:
    return Record(
        x(f["id"]),
        x(f["host"]),
        f["tag"],
        f["idx"],
        f["timestamp"],
        f["version"],
        x(f["payload"]),
        x(f["wrapped_key"]),
        x(f["prev"]),
        x(f["sig"]),
    )


def keys_of(entries: list[Json]) -> dict[bytes, bytes]:
    return {x(k["host"]): x(k["public_key"]) for k in entries}


HOST_KEY = {x(V["host"]["host"]): x(V["host"]["public_key"])}
RECORDS = [record_of(fields(entry)) for entry in LOG]


async def receive(store: Store, records: list[Record], keys: dict[bytes, bytes]) -> InsertResult:
    """What a node does with a message: decode and bounds-check it, then verify and
    store it in one transaction."""
    raw = codec.encode_batch(pb.PullRecordsResponse, records, keys)
    return await store.insert_batch(*codec.decode_batch(pb.PullRecordsResponse, raw), checked=True)


def named(entry: Json) -> str:
    return str(entry["name"])


def test_the_log_is_signed_where_a_real_writer_signs() -> None:
    """Appends of the same sizes by peer's writer (its own random values) sign the same
    records, and its records open to the same plaintexts."""
    author = Author(
        SigningKey.from_bytes(x(V["host"]["ed25519_seed"])), SyncKey(x(V["sync_key"]["key"]))
    )
    head, written = Head(0), []
    for append in V["records"]["appends"]:
        entries = [LOG[idx]["inputs"] for idx in append]
        records = author.write(
            V["records"]["tag"],
            head,
            [e["timestamp"] for e in entries],
            [x(e["plaintext"]) for e in entries],
        )
        head = Head(records[-1].idx + 1, record_hash(records[-1]))
        written += records
    assert [bool(r.sig) for r in written] == [e["outputs"]["signed"] for e in LOG]
    assert [open_record(author.sync, r).hex() for r in written] == [
        e["inputs"]["plaintext"] for e in LOG
    ]


def test_the_code_makes_and_opens_the_log() -> None:
    sync = SyncKey(x(V["sync_key"]["key"]))
    for entry, record in zip(LOG, RECORDS, strict=True):
        assert record_hash(record).hex() == entry["outputs"]["hash"]
        assert open_record(sync, record).hex() == entry["inputs"]["plaintext"]


async def test_a_receiver_takes_every_stream_of_the_log(tmp_path: Path) -> None:
    for number, stream in enumerate(V["batches"]["streams"]):
        store = await Store.open(tmp_path / f"stream{number}.db")
        try:
            for message in stream["messages"]:
                records, keys = codec.decode_batch(pb.PullRecordsResponse, x(message["protobuf"]))
                assert records == [RECORDS[idx] for idx in message["idx"]]
                await store.insert_batch(records, keys, checked=True)
            last = stream["messages"][-1]["idx"][-1]
            head = (await store.index())[RECORDS[0].log]
            assert (head.next_idx, head.head_hash.hex()) == (last + 1, LOG[last]["outputs"]["hash"])
        finally:
            await store.close()


@pytest.mark.parametrize("entry", [e for e in V["invalid"] if e["check"] == "receive"], ids=named)
async def test_a_receiver_refuses(entry: Json, tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "receiver.db")
    try:
        if entry["stored"]:
            await receive(store, [RECORDS[idx] for idx in entry["stored"]], HOST_KEY)
        before = await store.index()
        records = [record_of(f) for f in entry["records"]]
        with pytest.raises(PeerError) as caught:
            await receive(store, records, keys_of(entry["host_keys"]))
        assert type(caught.value).__name__ == entry["error"], caught.value
        assert codec.code_for(type(caught.value)).name == entry["status"]
        if isinstance(caught.value, GapError):
            assert caught.value.expected_idx == entry["expected_idx"]
        assert await store.index() == before, "nothing of a refused message is stored"
        frozen = LogKey(records[0].host, records[0].tag) in await store.frozen_logs()
        assert frozen == (entry["error"] == "ForkDetected")
    finally:
        await store.close()


@pytest.mark.parametrize("entry", [e for e in V["invalid"] if e["check"] == "open"], ids=named)
async def test_a_reader_cannot_open(entry: Json, tmp_path: Path) -> None:
    records = [record_of(f) for f in entry["records"]]
    store = await Store.open(tmp_path / "reader.db")
    try:
        result = await receive(store, records, keys_of(entry["host_keys"]))
        assert result.added == len(records), "the records are authentic: a receiver stores them"
    finally:
        await store.close()
    with pytest.raises(CryptoError) as caught:
        open_record(SyncKey(x(entry["sync_key"])), records[-1])
    assert type(caught.value).__name__ == entry["error"], caught.value
    if isinstance(caught.value, WrongKey):
        assert caught.value.record_key_id == entry["record_key_id"]
        assert caught.value.node_key_id == entry["local_key_id"]


def test_the_invalid_entries_differ_from_the_log_only_as_they_say() -> None:
    """Each refused message is the valid log with one defect: unchanged records are
    the log's own, so the refusal comes from the defect."""
    changed = {
        "prev_broken": {1},
        "metadata_tampered": {0},
        "payload_tampered": {2},
        "sig_bad": {2},
        "first_prev_not_zero": {0},
        "fork": {2},
        "aad_tampered": {0},
        "unknown_wrapping": {2},
    }
    for entry in V["invalid"]:
        for f in entry["records"]:
            same = record_of(f) == RECORDS[f["idx"]]
            assert same == (f["idx"] not in changed.get(entry["name"], set())), entry["name"]


def test_the_code_reads_the_key_texts_as_stated() -> None:
    key = x(V["sync_key"]["key"])
    assert SyncKey.from_text(V["sync_key"]["text"]).secret == key
    assert SyncKey(key).to_text() == V["sync_key"]["text"]
    for case in V["sync_key"]["accepted_texts"]:
        assert SyncKey.from_text(case["text"]).secret == key, case["why"]
    for case in V["sync_key"]["invalid_texts"]:
        with pytest.raises(PeerError) as caught:
            SyncKey.from_text(case["text"])
        assert type(caught.value).__name__ == case["error"], case["why"]


def test_the_code_reads_the_node_ids_as_stated() -> None:
    n = V["node_id"]
    pem = ssl.DER_cert_to_PEM_cert(x(n["certificate_der"])).encode("ascii")
    check_node_certificate(pem)  # a node certificate as this implementation makes them
    assert node_id_of(pem).hex() == n["node_id"]
    for example in n["examples"]:
        assert format_node_id(x(example["node_id"])) == example["text"]
        assert parse_node_id(example["text"]).hex() == example["node_id"]
    for case in n["accepted_texts"]:
        assert parse_node_id(case["text"]).hex() == n["node_id"], case["why"]
    for case in n["invalid_texts"]:
        with pytest.raises(PeerError) as caught:
            parse_node_id(case["text"])
        assert type(caught.value).__name__ == case["error"], case["why"]
