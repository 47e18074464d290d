"""Write docs/vectors/roster-v1.json: vectors of the roster (docs/protocol.md §14).

`make vectors` runs this next to scripts/vectors.py. From fixed inputs, with the real
code (peer.roster, peer.crypto): the roster key, the bytes of each kind of event, and
a key rotation wrapped for one device. ECDSA signatures are random, so the card's
proof was made once (by peer.roster.new_card) and is an input here; the test checks
that it verifies. tests/test_roster_vectors.py checks that the committed file is what
this script writes, and re-derives the values with hashlib and cryptography alone.
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path
from typing import Any

from peer.crypto import ROSTER_KEY, EncryptionKey, SigningKey, SyncKey, wrap_sync_key
from peer.identity import node_id_of
from peer.roster import Add, Card, Revoke, Rotate, card_claim, encode

OUT = Path(__file__).resolve().parents[1] / "docs" / "vectors" / "roster-v1.json"

# A node's TLS key and certificate, made once by peer.crypto.generate_tls_identity for
# these vectors (a test key: it protects nothing).
TLS_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGTMhxfq65ZKX/0m/\n"
    "dLlFJIvOZ+fuKp3qUWn8IlwshxKhRANCAARZR+2P2ovvmqIJmPtiKk0zHFk50ZBU\n"
    "D8MdCXD31tOi7x+gxCPXelgF3mBHJLLF2FfIxR00WvswkMbsFD98eB4i\n"
    "-----END PRIVATE KEY-----\n"
)
CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBVjCB/aADAgECAhRzNXlQk+2WAj1dX3jX0NxwEIUXlzAKBggqhkjOPQQDAjAg\n"
    "MR4wHAYDVQQDDBVwZWVyLWVmZGQxNGM4MTI3NzgyYTEwIBcNMDAwMTAxMDAwMDAw\n"
    "WhgPOTk5OTEyMzEyMzU5NTlaMCAxHjAcBgNVBAMMFXBlZXItZWZkZDE0YzgxMjc3\n"
    "ODJhMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFlH7Y/ai++aogmY+2IqTTMc\n"
    "WTnRkFQPwx0JcPfW06LvH6DEI9d6WAXeYEckssXYV8jFHTRa+zCQxuwUP3x4HiKj\n"
    "EzARMA8GA1UdEQQIMAaCBHBlZXIwCgYIKoZIzj0EAwIDSAAwRQIgXqKfMxqk+VUk\n"
    "B9SOoZZrcpKtB3s4YPoA7bYjaobPCvwCIQCJpTcdp1Y6ktmh1N9XbU98E6bsREQC\n"
    "7/+b6PsYWCH7hA==\n"
    "-----END CERTIFICATE-----\n"
)
CARD_PROOF = bytes.fromhex(
    "3045022100a9ba89b9c8844c134bd94d86efa99525381ee4a3da3d5eb8e60a4b37388ec8fa"
    "02206f45fe8bc53cbce07ec9ac6af018cabd7bc46227e1ec53def20744646477e036"
)
HOST_SEED = bytes.fromhex(  # RFC 8032 §7.1 TEST 1, as in docs/protocol.md §12
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
ENCRYPTION_SEED = bytes(range(32, 64))  # the device's X25519 private key
EPHEMERAL_SEED = bytes(range(96, 128))  # the rotation's ephemeral X25519 private key
NEW_SYNC_KEY = bytes(range(64, 96))
REVOKED = bytes(range(200, 232))  # a node id


def vectors() -> dict[str, Any]:
    der = ssl.PEM_cert_to_DER_cert(CERTIFICATE)
    node_id = node_id_of(CERTIFICATE.encode())
    signing = SigningKey.from_bytes(HOST_SEED)
    encryption = EncryptionKey.from_bytes(ENCRYPTION_SEED)
    card = Card(
        der,
        signing.public_key,
        encryption.public_key,
        "device",
        "laptop",
        "192.0.2.7:7417",
        CARD_PROOF,
    )
    new = SyncKey(NEW_SYNC_KEY)
    ephemeral, wrapped = wrap_sync_key(new, {node_id: encryption.public_key}, EPHEMERAL_SEED)
    events = {
        "card": card,
        "add": Add(der, "relay", "nas"),
        "add_with_key": Add(der, "device", "phone", new.key_id),
        "revoke": Revoke(REVOKED, 3, "lost"),
        "rotate": Rotate(new.key_id, ephemeral, ((node_id, wrapped[node_id]),)),
    }
    return {
        "format": (
            "docs/protocol.md §14. Hex is lowercase. `roster_key`: the public key every "
            "roster record is sealed with (§14.1), and its key id. `node`: the TLS key "
            "(PEM, a test key), certificate (PEM) and node id of the device; `host_seed`: "
            "its Ed25519 seed; `encryption_seed`: its X25519 private key, "
            "`encryption_key` the public one. `card_claim`: the bytes the card's proof "
            "signs after the prefix `peer.roster.card.v1\\0`. `events`: each event's "
            "plaintext (§14.2). `rotation`: the new sync key, the ephemeral X25519 seed "
            "and public key, and the 48 bytes wrapped for the device (§14.4)."
        ),
        "roster_key": {"key": ROSTER_KEY.secret.hex(), "key_id": ROSTER_KEY.key_id.hex()},
        "node": {
            "tls_key": TLS_KEY,
            "certificate": CERTIFICATE,
            "node_id": node_id.hex(),
            "host_seed": HOST_SEED.hex(),
            "host_public_key": signing.public_key.hex(),
            "encryption_seed": ENCRYPTION_SEED.hex(),
            "encryption_key": encryption.public_key.hex(),
        },
        "card_claim": card_claim(card).hex(),
        "events": {name: encode(body).hex() for name, body in events.items()},
        "rotation": {
            "sync_key": NEW_SYNC_KEY.hex(),
            "key_id": new.key_id.hex(),
            "ephemeral_seed": EPHEMERAL_SEED.hex(),
            "ephemeral_key": ephemeral.hex(),
            "wrapped": wrapped[node_id].hex(),
        },
    }


def render() -> str:
    return json.dumps(vectors(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
