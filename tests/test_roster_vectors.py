"""docs/vectors/roster-v1.json: what scripts/roster_vectors.py writes, and right by
docs/protocol.md §14 when re-derived with hashlib and cryptography alone."""

from __future__ import annotations

import hashlib
import json
import ssl
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import load_pem_x509_certificate

from peer.roster import Add, Card, Revoke, Rotate, card_is_proven, decode

ROOT = Path(__file__).resolve().parents[1]
V: dict[str, Any] = json.loads((ROOT / "docs" / "vectors" / "roster-v1.json").read_text())
x = bytes.fromhex


def test_the_committed_file_is_what_the_script_writes() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import roster_vectors
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert roster_vectors.render() == (ROOT / "docs" / "vectors" / "roster-v1.json").read_text()


def test_the_roster_key_is_the_hash_of_its_label() -> None:
    key = hashlib.sha256(b"peer.roster.key.v1\x00").digest()
    assert V["roster_key"]["key"] == key.hex()
    assert (
        V["roster_key"]["key_id"] == hashlib.sha256(b"peer.key-id.v1\x00" + key).digest()[:8].hex()
    )


def test_the_card_is_laid_out_as_documented_and_its_proof_verifies() -> None:
    node = V["node"]
    der = ssl.PEM_cert_to_DER_cert(node["certificate"])
    assert hashlib.sha256(der).hexdigest() == node["node_id"]
    claim = (
        len(der).to_bytes(2, "big")
        + der
        + x(node["host_public_key"])
        + b"\x20"
        + x(node["encryption_key"])
        + b"\x00"
        + b"\x06laptop"
        + b"\x0e192.0.2.7:7417"
    )
    assert V["card_claim"] == claim.hex()
    event = x(V["events"]["card"])
    assert event[:16] == b"peer.roster.v1\x00\x01"
    proof_len = int.from_bytes(event[16 + len(claim) : 18 + len(claim)], "big")
    proof = event[18 + len(claim) :]
    assert event[16 : 16 + len(claim)] == claim and len(proof) == proof_len
    key = load_pem_x509_certificate(node["certificate"].encode()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(proof, b"peer.roster.card.v1\x00" + claim, ec.ECDSA(hashes.SHA256()))
    card = decode(event)
    assert isinstance(card, Card)
    host = hashlib.sha256(b"peer.host.v1\x00" + x(node["host_public_key"])).digest()[:16]
    assert card_is_proven(card, host) and not card_is_proven(card, bytes(16))


def test_adds_revokes_and_rotations_are_laid_out_as_documented() -> None:
    der = ssl.PEM_cert_to_DER_cert(V["node"]["certificate"])
    head = len(der).to_bytes(2, "big") + der
    assert x(V["events"]["add"]) == b"peer.roster.v1\x00\x02" + head + b"\x01\x03nas" + bytes(8)
    key_id = x(V["rotation"]["key_id"])
    assert x(V["events"]["add_with_key"]) == (
        b"peer.roster.v1\x00\x02" + head + b"\x00\x05phone" + key_id
    )
    revoke = (
        b"peer.roster.v1\x00\x03" + bytes(range(200, 232)) + (3).to_bytes(8, "big") + b"\x04lost"
    )
    assert x(V["events"]["revoke"]) == revoke
    rotation = V["rotation"]
    assert x(V["events"]["rotate"]) == (
        b"peer.roster.v1\x00\x04"
        + key_id
        + x(rotation["ephemeral_key"])
        + (1).to_bytes(2, "big")
        + x(V["node"]["node_id"])
        + x(rotation["wrapped"])
    )
    bodies = [decode(x(V["events"][name])) for name in ("add", "add_with_key", "revoke", "rotate")]
    assert [type(b) for b in bodies] == [Add, Add, Revoke, Rotate]


def test_the_rotated_key_unwraps_as_documented() -> None:
    rotation, node = V["rotation"], V["node"]
    ephemeral = X25519PrivateKey.from_private_bytes(x(rotation["ephemeral_seed"]))
    public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public.hex() == rotation["ephemeral_key"]
    device = X25519PrivateKey.from_private_bytes(x(node["encryption_seed"]))
    assert (
        device.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        == node["encryption_key"]
    )
    shared = device.exchange(X25519PublicKey.from_public_bytes(public))
    key_id, node_id = x(rotation["key_id"]), x(node["node_id"])
    info = b"peer.rekey.v1\x00" + key_id + node_id + public
    kek = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared)
    secret = AESGCM(kek).decrypt(
        bytes(12), x(rotation["wrapped"]), b"peer.rekey.v1\x00" + key_id + node_id
    )
    assert secret.hex() == rotation["sync_key"]
    assert hashlib.sha256(b"peer.key-id.v1\x00" + secret).digest()[:8] == key_id


def test_the_protocol_names_the_roster_key_id() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert f"(key id {V['roster_key']['key_id']})" in text
