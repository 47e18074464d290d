"""Node identities: the hash of a node's TLS certificate, in a form people can read.

A node id is SHA-256 of the certificate (DER). It is shown as 52 base32 letters in
four blocks of 13, each followed by a check letter (Luhn mod 32), grouped by seven:
`MFRGGZD-...`. It is accepted back in any case, with or without dashes and spaces;
a mistyped letter fails its block's check instead of pinning the wrong node.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl

from peer.errors import PeerUnavailable, UsageError

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
BLOCK = 13
FETCH_TIMEOUT_S = 5.0


def certificate_der(pem: bytes) -> bytes:
    try:
        return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError("not a PEM certificate") from exc


def node_id_of(certificate_pem: bytes) -> bytes:
    """The 32-byte node id of a certificate."""
    return hashlib.sha256(certificate_der(certificate_pem)).digest()


def format_node_id(node_id: bytes) -> str:
    letters = base64.b32encode(node_id).decode().rstrip("=")
    blocks = [letters[i : i + BLOCK] for i in range(0, len(letters), BLOCK)]
    checked = "".join(block + _luhn32(block) for block in blocks)
    return "-".join(checked[i : i + 7] for i in range(0, len(checked), 7))


def parse_node_id(text: str) -> bytes:
    """A node id from its printed form; UsageError naming the problem otherwise."""
    letters = "".join(text.split()).replace("-", "").upper()
    if len(letters) != 4 * (BLOCK + 1) or any(c not in ALPHABET for c in letters):
        raise UsageError(f"{text!r} is not a node id (56 letters A-Z and digits 2-7)")
    blocks = [letters[i : i + BLOCK + 1] for i in range(0, len(letters), BLOCK + 1)]
    for number, block in enumerate(blocks, 1):
        if _luhn32(block[:-1]) != block[-1]:
            raise UsageError(f"node id {text!r} fails the check of block {number} (a typo?)")
    return base64.b32decode("".join(b[:-1] for b in blocks) + "====")


def _luhn32(block: str) -> str:
    factor, total = 2, 0
    for char in reversed(block):
        addend = factor * ALPHABET.index(char)
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


async def fetch_certificate(address: str, expected: bytes | None = None) -> bytes:
    """The certificate a node serves at HOST:PORT (PEM), checked against a pinned id.

    No certificate checks happen here beyond the pin, which is the point: the pin is
    what we trust, and it is checked before the certificate is used. Asynchronous (no
    thread), so a daemon that stops is never held up by a peer that does not answer.
    """
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_S):
            _, writer = await asyncio.open_connection(
                host.strip("[]"), int(port), ssl=context, server_hostname=None
            )
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
    except (OSError, ValueError, TimeoutError) as exc:
        reason = str(exc) or "no answer"
        raise PeerUnavailable(
            f"cannot reach {address} to read its certificate ({reason}): "
            "is `peer serve` running there?"
        ) from exc
    if der is None:
        raise PeerUnavailable(f"{address} presented no certificate")
    if expected is not None and hashlib.sha256(der).digest() != expected:
        raise UsageError(
            f"the node at {address} is {format_node_id(hashlib.sha256(der).digest())}, "
            f"not {format_node_id(expected)}: check the address and the id"
        )
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")
