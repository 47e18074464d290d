"""docs/protocol.md cannot drift from the code: its test vector and tables are checked here.

The test vector (docs/protocol.md §12) is duplicated below as constants, and the doc must
hold exactly these values. Every one is recomputed here: sealing independently with
`cryptography`'s AESGCM following the documented layout (`scripts/vectors.seal_fixed`,
which also makes docs/vectors/v1.json: the code's sealer draws random keys), then
opened, hashed, signed, verified, decoded and stored by the real code.
The doc's limit, error and status tables are checked against the code's constants.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import import_module
from pathlib import Path

import grpc
import pytest

from peer import codec, pairing
from peer.crypto import (
    SigningKey,
    SyncKey,
    host_id,
    must_sign,
    open_record,
    record_hash,
    verify_chain,
    verify_signature,
)
from peer.records import (
    AAD_PREFIX_V1,
    HASH_PREFIX_V1,
    TAG_RE,
    VERSION_RE,
    Record,
    associated_data,
    hash_input,
    uuid7,
)
from peer.store import Store
from peer.v1 import sync_pb2 as pb
from scripts.vectors import seal_fixed

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

# docs/protocol.md §12 "Test vector". DO NOT CHANGE one side without the other; a change
# of an output (not an input) means a canonical encoding changed: that is a new version.
VECTOR: dict[str, str] = {
    "sync_key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "key_id": "b9301a642aa66eea",
    "sync_key_text": "peer-key-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9jDc0p",
    "ed25519_seed": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "host": "d032ffde6a75f310fd4df0fa76866ca4",
    "tag": "notes",
    "version": "v1",
    "r0.id": "019ace6f6c007071b273747576777879",
    "r0.idx": "0",
    "r0.timestamp": "1764400000000000000",
    "r0.plaintext": "68656c6c6f2c2070656572",
    "r0.content_key": "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
    "r0.wrap_nonce": "606162636465666768696a6b",
    "r0.prev": "00" * 32,
    "r0.aad": (
        "706565722e6161642e763100019ace6f6c007071b273747576777879d032ffde"
        "6a75f310fd4df0fa76866ca4056e6f7465730000000000000000187c6873a9b3"
        "0000027631"
    ),
    "r0.payload": "32515c14fb44f2dbbdeeea7046bebb6122bf81aab02d24a948bbff",
    "r0.wrapped_key": (
        "01b9301a642aa66eea606162636465666768696a6baa9ad916ff05c528345fb3"
        "603ec08f0c7624dbdad031648efbf8da3720afa9577513b4af4bd1d6e4553bda"
        "dffdfdadb4"
    ),
    "r0.hash_input": (
        "706565722e7265636f72642e763100019ace6f6c007071b273747576777879d0"
        "32ffde6a75f310fd4df0fa76866ca4056e6f7465730000000000000000187c68"
        "73a9b300000276310000001b32515c14fb44f2dbbdeeea7046bebb6122bf81aa"
        "b02d24a948bbff4501b9301a642aa66eea606162636465666768696a6baa9ad9"
        "16ff05c528345fb3603ec08f0c7624dbdad031648efbf8da3720afa9577513b4"
        "af4bd1d6e4553bdadffdfdadb400000000000000000000000000000000000000"
        "00000000000000000000000000"
    ),
    "r0.hash": "eeeeb75fd352be65c7d1f9c4e8b21fc4ee1eebe8ac739435c4a4b0ba2224d63f",
    "r0.sig": (
        "5e25c2968b813301fdade2b1be333a371db4ff30726df3e39da6cf8dc06a2414"
        "c011d19967ad7f109d643791b248faea43156a0e04e8124eb8fce665a8462b09"
    ),
    "r1.id": "019ace6f6c007a7bbc7d7e7f80818283",
    "r1.idx": "1",
    "r1.timestamp": "1764400000000000001",
    "r1.plaintext": "7365636f6e64207265636f7264",
    "r1.content_key": "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    "r1.wrap_nonce": "a0a1a2a3a4a5a6a7a8a9aaab",
    "r1.prev": "eeeeb75fd352be65c7d1f9c4e8b21fc4ee1eebe8ac739435c4a4b0ba2224d63f",
    "r1.aad": (
        "706565722e6161642e763100019ace6f6c007a7bbc7d7e7f80818283d032ffde"
        "6a75f310fd4df0fa76866ca4056e6f7465730000000000000001187c6873a9b3"
        "0001027631"
    ),
    "r1.payload": "0420958e284fd4254e421848159161a882207428f87119550b94a27339",
    "r1.wrapped_key": (
        "01b9301a642aa66eeaa0a1a2a3a4a5a6a7a8a9aaab6699feaec14e8438eaec0d"
        "588bf74e51e03dcb830622d4fb0497bc1de336eb9e515dcd581845e2caa0e705"
        "e521b18555"
    ),
    "r1.hash_input": (
        "706565722e7265636f72642e763100019ace6f6c007a7bbc7d7e7f80818283d0"
        "32ffde6a75f310fd4df0fa76866ca4056e6f7465730000000000000001187c68"
        "73a9b300010276310000001d0420958e284fd4254e421848159161a882207428"
        "f87119550b94a273394501b9301a642aa66eeaa0a1a2a3a4a5a6a7a8a9aaab66"
        "99feaec14e8438eaec0d588bf74e51e03dcb830622d4fb0497bc1de336eb9e51"
        "5dcd581845e2caa0e705e521b18555eeeeb75fd352be65c7d1f9c4e8b21fc4ee"
        "1eebe8ac739435c4a4b0ba2224d63f"
    ),
    "r1.hash": "25e24eb3d837d2439362a0d7d381f887d2a6ce84c193c4c49b6d44196856132c",
    "r1.sig": (
        "b409e76743626e73478e9d261abdf76c66c9719d061774dff3eafa13eb071cd1"
        "f0bb2a0274efe8a062d237cded3982ccd4c48bfe0080cb435f545875fc46dd08"
    ),
    "pull_response": (
        "0a81020a10019ace6f6c007071b2737475767778791210d032ffde6a75f310fd"
        "4df0fa76866ca41a056e6f746573288080cccdba8e9abe18320276313a1b3251"
        "5c14fb44f2dbbdeeea7046bebb6122bf81aab02d24a948bbff424501b9301a64"
        "2aa66eea606162636465666768696a6baa9ad916ff05c528345fb3603ec08f0c"
        "7624dbdad031648efbf8da3720afa9577513b4af4bd1d6e4553bdadffdfdadb4"
        "4a20000000000000000000000000000000000000000000000000000000000000"
        "000052405e25c2968b813301fdade2b1be333a371db4ff30726df3e39da6cf8d"
        "c06a2414c011d19967ad7f109d643791b248faea43156a0e04e8124eb8fce665"
        "a8462b090a85020a10019ace6f6c007a7bbc7d7e7f808182831210d032ffde6a"
        "75f310fd4df0fa76866ca41a056e6f7465732001288180cccdba8e9abe183202"
        "76313a1d0420958e284fd4254e421848159161a882207428f87119550b94a273"
        "39424501b9301a642aa66eeaa0a1a2a3a4a5a6a7a8a9aaab6699feaec14e8438"
        "eaec0d588bf74e51e03dcb830622d4fb0497bc1de336eb9e515dcd581845e2ca"
        "a0e705e521b185554a20eeeeb75fd352be65c7d1f9c4e8b21fc4ee1eebe8ac73"
        "9435c4a4b0ba2224d63f5240b409e76743626e73478e9d261abdf76c66c9719d"
        "061774dff3eafa13eb071cd1f0bb2a0274efe8a062d237cded3982ccd4c48bfe"
        "0080cb435f545875fc46dd0812340a10d032ffde6a75f310fd4df0fa76866ca4"
        "1220d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707"
        "511a"
    ),
}


def b(name: str) -> bytes:
    return bytes.fromhex(VECTOR[name])


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_section(heading: str) -> str:
    """The text of the doc's section (## or ###) whose heading starts with `heading`."""
    text = doc_text()
    match = re.search(rf"^(#+) {re.escape(heading)}.*?$", text, re.MULTILINE)
    assert match, f"docs/protocol.md has no section {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def parse_vector(text: str) -> dict[str, str]:
    """`name = value` lines between the vector markers; indented lines continue a hex value."""
    block = text.split("<!-- vector:begin", 1)[1].split("<!-- vector:end -->", 1)[0]
    values: dict[str, str] = {}
    name = None
    for line in block.splitlines()[1:]:
        if not line.strip() or line.startswith("```"):
            continue
        if line[0].isspace():
            assert name is not None and re.fullmatch(r"[0-9a-f]+", line.strip()), line
            values[name] += line.strip()
            continue
        match = re.fullmatch(r"([a-z0-9_.]+)\s*=\s*(\S*)", line)
        assert match, f"unparsable vector line: {line!r}"
        name, value = match.groups()
        assert name not in values, f"{name} twice in the vector"
        values[name] = value
    return values


def table_rows(text: str) -> list[list[str]]:
    """Markdown table rows as lists of stripped cells (header separators left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def unsigned(index: int) -> Record:
    """Record `index` of the vector with the documented inputs and outputs, no signature."""
    r = f"r{index}."
    return Record(
        id=b(r + "id"),
        host=b("host"),
        tag=VECTOR["tag"],
        idx=int(VECTOR[r + "idx"]),
        timestamp=int(VECTOR[r + "timestamp"]),
        version=VECTOR["version"],
        payload=b(r + "payload"),
        wrapped_key=b(r + "wrapped_key"),
        prev=b(r + "prev"),
    )


def signed(index: int) -> Record:
    return dataclasses.replace(unsigned(index), sig=b(f"r{index}.sig"))


# -- the doc holds exactly this vector ---------------------------------------------------


def test_the_doc_holds_exactly_this_vector() -> None:
    assert parse_vector(doc_text()) == VECTOR


def test_the_annotated_aad_table_adds_up_to_the_vector() -> None:
    hex_cells = [
        "".join(re.findall(r"`([0-9a-f]+)`", row[1])) for row in table_rows(doc_section("3.2"))[1:]
    ]
    assert "".join(hex_cells) == VECTOR["r0.aad"]


def test_the_doc_names_the_prefixes_and_patterns_the_code_uses() -> None:
    text = doc_text()
    for prefix in (AAD_PREFIX_V1, HASH_PREFIX_V1, b"peer.host.v1\x00", b"peer.key-id.v1\x00"):
        assert '"' + prefix.decode().replace("\x00", "\\0") + '"' in text
    assert f'"{VECTOR["sync_key_text"].split(":")[0]}:"' in text
    assert TAG_RE.pattern in text
    assert VERSION_RE.pattern in text
    assert codec.SERVICE_NAME in text
    assert codec.EXPECTED_IDX_KEY in text


def test_the_pairing_section_names_what_the_code_signs_and_sends() -> None:
    text = doc_section("1.1 Pairing")
    prefixes = (b"peer.invite.v1\x00", pairing.JOIN_PROOF_PREFIX, pairing.CONFIRM_PROOF_PREFIX)
    for prefix in prefixes:
        assert '"' + prefix.decode().replace("\x00", "\\0") + '"' in text, prefix
    assert f"`{pairing.CODE_PREFIX}`" in text
    assert pairing.REFUSED in " ".join(text.split())
    secret, inviter = bytes(range(16)), bytes(range(32, 64))
    assert pairing.join_proof_message(secret, inviter) == b"peer.join.v1\0" + secret + inviter
    confirm = pairing.confirm_proof_message(secret, inviter, accepted=True)
    assert confirm == b"peer.join.confirm.v1\0" + secret + inviter + b"\x01"
    assert pairing.secret_hash(secret) == hashlib.sha256(b"peer.invite.v1\0" + secret).digest()


# -- keys and identifiers ------------------------------------------------------------------


def test_key_id_and_text_form() -> None:
    sync = SyncKey(b("sync_key"))
    assert sync.key_id.hex() == VECTOR["key_id"]
    assert sync.to_text() == VECTOR["sync_key_text"]
    assert SyncKey.from_text(VECTOR["sync_key_text"]).secret == b("sync_key")


def test_public_key_and_host_id() -> None:
    signing = SigningKey.from_bytes(b("ed25519_seed"))
    assert signing.public_key.hex() == VECTOR["public_key"]
    assert host_id(signing.public_key).hex() == VECTOR["host"]
    assert signing.host.hex() == VECTOR["host"]


def test_the_ids_are_the_documented_uuid7s() -> None:
    unix_ms = int(VECTOR["r0.timestamp"]) // 1_000_000
    assert uuid7(unix_ms, bytes(range(0x70, 0x7A))).hex() == VECTOR["r0.id"]
    assert uuid7(unix_ms, bytes(range(0x7A, 0x84))).hex() == VECTOR["r1.id"]


# -- sealing, hashing, signing ---------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_sealing_follows_the_documented_layout(index: int) -> None:
    r = f"r{index}."
    sync = SyncKey(b("sync_key"))
    aad = associated_data(unsigned(index))
    assert aad.hex() == VECTOR[r + "aad"]
    # Independent of peer.crypto: AES-256-GCM, content key once with a zero nonce, then
    # the content key wrapped as 0x01 | key id | nonce | ciphertext+tag, same AAD.
    payload, wrapped = seal_fixed(
        b("sync_key"),
        b("key_id"),
        aad,
        b(r + "plaintext"),
        b(r + "content_key"),
        b(r + "wrap_nonce"),
    )
    assert payload.hex() == VECTOR[r + "payload"]
    assert wrapped.hex() == VECTOR[r + "wrapped_key"]
    assert len(wrapped) == 69
    assert open_record(sync, unsigned(index)) == b(r + "plaintext")


@pytest.mark.parametrize("index", [0, 1])
def test_record_hash_and_signature(index: int) -> None:
    r = f"r{index}."
    record = unsigned(index)
    assert hash_input(record).hex() == VECTOR[r + "hash_input"]
    digest = record_hash(record)
    assert digest.hex() == VECTOR[r + "hash"]
    signing = SigningKey.from_bytes(b("ed25519_seed"))
    assert signing.sign(digest).hex() == VECTOR[r + "sig"]  # Ed25519 is deterministic
    verify_signature(b("public_key"), digest, b(r + "sig"), "vector")
    assert record_hash(signed(index)) == digest  # the signature is not hashed


def test_the_records_chain_and_verify_as_a_receiver_would() -> None:
    assert VECTOR["r0.prev"] == "00" * 32
    assert VECTOR["r1.prev"] == VECTOR["r0.hash"]
    hashes = verify_chain([signed(0), signed(1)], b("public_key"))
    assert [h.hex() for h in hashes] == [VECTOR["r0.hash"], VECTOR["r1.hash"]]


def test_which_records_must_be_signed() -> None:
    assert [idx for idx in range(1024) if must_sign(idx)] == [255, 511, 767, 1023]


# -- the wire ---------------------------------------------------------------------------------


def test_the_pull_response_decodes_to_the_vector() -> None:
    records, keys = codec.decode_batch(pb.PullRecordsResponse, b("pull_response"))
    assert records == [signed(0), signed(1)]
    assert keys == {b("host"): b("public_key")}


def test_the_pull_response_is_what_this_encoder_writes() -> None:
    raw = codec.encode_batch(
        pb.PullRecordsResponse, [signed(0), signed(1)], {b("host"): b("public_key")}
    )
    assert raw.hex() == VECTOR["pull_response"]


async def test_a_store_accepts_the_vector_and_holds_its_head(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "vector.db")
    try:
        result = await store.insert_batch([signed(0), signed(1)], {b("host"): b("public_key")})
        assert (result.added, result.duplicates) == (2, 0)
        head = (await store.index())[signed(1).log]
        assert (head.next_idx, head.head_hash.hex()) == (2, VECTOR["r1.hash"])
    finally:
        await store.close()


# -- the doc's tables -------------------------------------------------------------------------


def resolve(reference: str) -> object:
    """`module.NAME` or `module.Class.field` (a dataclass default) under `peer`."""
    module_name, *path = reference.split(".")
    value: object = import_module(f"peer.{module_name}")
    for part in path:
        value = getattr(value, part)
        if isinstance(value, type):
            value = value()
    return value


def test_every_limit_in_the_doc_is_the_code_constant() -> None:
    checked = 0
    for row in table_rows(doc_section("10. Limits")):
        reference = re.fullmatch(r"`([a-z]+\.[A-Za-z_.]+)`", row[-1])
        if reference is None:
            continue
        number = re.match(r"[\d,]+", row[-2])
        assert number, f"no number in {row}"
        assert int(number.group().replace(",", "")) == resolve(reference.group(1)), row
        checked += 1
    assert checked >= 20


def test_the_error_table_is_the_code_table() -> None:
    rows = [row for row in table_rows(doc_section("11. Errors")) if len(row) == 3]
    documented = [
        (re.sub(r"`", "", error), re.sub(r"`", "", status))
        for error, status, _ in rows
        if error.startswith("`")
    ]
    assert documented == [(kind.__name__, code.name) for kind, code in codec.STATUS_FOR_ERROR]


def test_the_client_status_table_is_the_code_table() -> None:
    rows = [row for row in table_rows(doc_section("11. Errors")) if len(row) == 2]
    documented: dict[str, str] = {}
    for status, error in rows:
        if status.startswith("`"):
            documented[status.strip("`")] = error.split("`")[1]
    expected = {code.name: kind.__name__ for code, kind in codec.ERROR_FOR_STATUS.items()}
    assert documented == expected
    assert grpc.StatusCode.UNKNOWN not in codec.ERROR_FOR_STATUS


def test_the_error_names_in_the_doc_are_the_classes_sent() -> None:
    section = doc_section("11. Errors")
    assert f"metadata key `{codec.ERROR_KEY}`" in " ".join(section.split())
    names = re.search(r"tree of `peer\.errors`: (.*?)\. A subclass", section, re.DOTALL)
    assert names, "§11 lists no `peer-error` names"
    listed = re.findall(r"`(\w+)`", names.group(1))
    assert sorted(listed) == sorted(codec.ERROR_NAMES)
