"""A node's TLS identity: its key and self-signed certificate (the pin, not a CA, is
the trust), the checks a pinned certificate must pass, and signatures by the TLS key."""

from __future__ import annotations

import datetime
import os
import re
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from peer.errors import KeyFormatError, ProtocolError

if TYPE_CHECKING:
    from cryptography import x509


TLS_SERVER_NAME = "peer"  # every node's certificate names this; identity is the pin
_VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_VALID_UNTIL = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_NODE_CN = re.compile(r"peer-[0-9a-f]{16}")


def generate_tls_identity() -> tuple[bytes, bytes]:
    """A node's TLS key and self-signed certificate, as PEM (key, certificate).

    ECDSA P-256 (grpc's handshake refuses Ed25519 certificates [M7]); valid from 2000
    to 9999 so that no clock skew ever breaks TLS [M8]: the pin, not the dates, is the
    security. The subject is unique per node, because TLS looks trusted certificates
    up by subject name: two pinned certificates with one name would shadow each other.
    """
    # Imported here: x509 costs ~40 ms at start-up, and only `init` makes certificates
    # (a shell hook running `peer history add` must start fast).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"peer-{os.urandom(8).hex()}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_VALID_FROM)
        .not_valid_after(_VALID_UNTIL)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return key_pem, certificate.public_bytes(Encoding.PEM)


def check_node_certificate(pem: bytes) -> None:
    """Refuse (ProtocolError) a certificate that is not what `generate_tls_identity`
    makes: one PEM certificate, self-signed with an ECDSA P-256 key, valid 2000 to
    9999, subject `CN=peer-<16 hex>`, SAN `DNS:peer` (docs/protocol.md §1). A joiner's
    certificate is pinned as it is, so nothing else may get onto a trust list."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        certificate = x509.load_pem_x509_certificate(pem)
        key = certificate.public_key()
        problem = _certificate_problem(certificate, key)
        if problem is None and isinstance(key, ec.EllipticCurvePublicKey):
            certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ProtocolError("the certificate is not a peer node certificate") from exc
    if problem is not None:
        raise ProtocolError(f"the certificate is not a peer node certificate: {problem}")


def _certificate_problem(certificate: x509.Certificate, key: object) -> str | None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return "its key is not ECDSA P-256"
    if (certificate.not_valid_before_utc, certificate.not_valid_after_utc) != (
        _VALID_FROM,
        _VALID_UNTIL,
    ):
        return "it is not valid from 2000-01-01 to 9999-12-31"
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not _NODE_CN.fullmatch(str(names[0].value)):
        return "its subject is not CN=peer-<16 hex>"
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return f"it does not name DNS:{TLS_SERVER_NAME}"
    if san.value.get_values_for_type(x509.DNSName) != [TLS_SERVER_NAME]:
        return f"it does not name DNS:{TLS_SERVER_NAME}"
    return None


def sign_with_tls_key(key_pem: bytes, message: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 signature (DER) of `message` by a node's TLS key: how a
    joiner proves it holds the key of the certificate it asks to have pinned."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFormatError("the node's TLS key is not an ECDSA key")
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_tls_signature(certificate_pem: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is the certificate key's ECDSA P-256 / SHA-256 of `message`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = x509.load_pem_x509_certificate(certificate_pem).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
