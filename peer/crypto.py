"""Sync key, sealing, host signing keys and record chains: the only user of `cryptography`.

- Payloads: a fresh 32-byte content key per record seals the payload with
  AES-256-GCM (nonce zero: the key is used once), the record's canonical metadata as
  associated data. The content key is sealed with the sync key (random nonce, same
  associated data) into `wrapped_key` = 0x01 | key id[8] | nonce[12] | ciphertext[48].
- Chains: the record hash is SHA-256 of `records.hash_input`; `prev` links each record
  to the hash of the one before. The host signs the hash (Ed25519) of every record at
  idx = k*SIGN_EVERY - 1 and of the last record of every append, so one verified
  signature authenticates everything before it and any batch can end on a signature.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes as _hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from peer.errors import (
    CryptoError,
    DecryptionFailed,
    ForgeryError,
    InvalidRecord,
    KeyFormatError,
    ProtocolError,
    WrongKey,
)
from peer.records import (
    AAD_PREFIX_V1,
    HASH_PREFIX_V1,
    HOST_LEN,
    MAX_PAYLOAD,
    Head,
    Record,
    associated_data,
    hash_input,
    metadata_encoder,
    new_record_ids,
)
from peer.relay import NO_SYNC_KEY
from peer.segment import Checked, Segment, check, entry

if TYPE_CHECKING:
    from cryptography import x509

SYNC_KEY_LEN = 32
KEY_ID_LEN = 8
SIGN_EVERY = 256
MAX_PLAINTEXT = MAX_PAYLOAD - 16  # the AEAD tag takes 16 bytes of the payload bound
SIGN_BYTES = 1 << 20  # also sign once this much payload is unsigned, so batches stay small
# The payload of a run (the records after a signed one, up to the next signed one) is at
# most this: a run always fits one message. SIGN_BYTES keeps a writer's runs under it.
RUN_PAYLOAD_BYTES = 2 << 20
KEY_TEXT_PREFIX = "peer-key-1:"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
WRAP_V1 = 0x01
WRAPPED_KEY_LEN = 1 + KEY_ID_LEN + 12 + SYNC_KEY_LEN + 16
_ZERO_NONCE = bytes(12)
_WRAPPED_KEY_LEN_BYTE = bytes((WRAPPED_KEY_LEN,))
_U32 = struct.Struct(">I")
_FRESH = 10 + SYNC_KEY_LEN + 12  # per record: id randomness, content key, wrapping nonce


@dataclass(frozen=True, slots=True, repr=False)
class SyncKey:
    """The 32-byte secret shared by one user's devices; it never leaves them in clear."""

    secret: bytes
    # the keys this one replaced (`peer key rotate`), so records sealed before still open
    older: tuple[SyncKey, ...] = field(default=(), compare=False)
    key_id: bytes = field(init=False, compare=False)
    aead: AESGCM = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != SYNC_KEY_LEN:
            raise KeyFormatError(f"a sync key is {SYNC_KEY_LEN} bytes, got {len(self.secret)}")
        key_id = hashlib.sha256(b"peer.key-id.v1\x00" + self.secret).digest()[:KEY_ID_LEN]
        object.__setattr__(self, "key_id", key_id)  # a public fingerprint of the key
        object.__setattr__(self, "aead", AESGCM(self.secret))

    @classmethod
    def generate(cls) -> SyncKey:
        return cls(os.urandom(SYNC_KEY_LEN))

    @property
    def key_id_text(self) -> str:
        return self.key_id.hex()

    def to_text(self) -> str:
        """One line, with a checksum so a mistyped key is refused, not used."""
        check = hashlib.sha256(self.secret).digest()[:4]
        return KEY_TEXT_PREFIX + base64.urlsafe_b64encode(self.secret + check).decode().rstrip("=")

    @classmethod
    def from_text(cls, text: str) -> SyncKey:
        text = text.strip()
        if not text.startswith(KEY_TEXT_PREFIX):
            raise KeyFormatError(f"not a peer sync key: it should start with {KEY_TEXT_PREFIX!r}")
        body = text[len(KEY_TEXT_PREFIX) :].rstrip("=")
        if not _BASE64URL.fullmatch(body):  # the decoder would drop strangers silently
            raise KeyFormatError("not a peer sync key: the text is damaged")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError as exc:
            raise KeyFormatError("not a peer sync key: the text is damaged") from exc
        secret, check = raw[:SYNC_KEY_LEN], raw[SYNC_KEY_LEN:]
        if len(raw) != SYNC_KEY_LEN + 4 or hashlib.sha256(secret).digest()[:4] != check:
            raise KeyFormatError("not a peer sync key: the checksum does not match (typo?)")
        return cls(secret)

    def __repr__(self) -> str:
        return f"SyncKey(id={self.key_id_text})"

    @property
    def ring(self) -> tuple[SyncKey, ...]:
        """Every key this node holds: the current one first, then the older ones."""
        return (self, *self.older)

    def find(self, key_id_text: str) -> SyncKey | None:
        """The key of the ring with this id, if held."""
        for key in self.ring:
            if key.key_id_text == key_id_text:
                return key
        return None

    def rotated_to(self, new: SyncKey) -> SyncKey:
        """`new` as the current key, with every key of this ring kept as older."""
        kept = [key for key in self.ring if key.key_id != new.key_id]
        kept += [key for key in new.older if all(k.key_id != key.key_id for k in kept)]
        return SyncKey(new.secret, tuple(SyncKey(k.secret) for k in kept))


class SigningKey:
    """A host's Ed25519 key: it signs the host's own logs, and names the host."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes_raw()
        self.host = host_id(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise KeyFormatError("a host signing key file holds exactly 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def to_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    def sign(self, digest: bytes) -> bytes:
        return self._private.sign(digest)

    def __repr__(self) -> str:
        return f"SigningKey(host={self.host.hex()})"


def host_id(public_key: bytes) -> bytes:
    """The host id is derived from the public key, so anyone can check the pairing."""
    return hashlib.sha256(b"peer.host.v1\x00" + public_key).digest()[:HOST_LEN]


def record_hash(record: Record) -> bytes:
    """SHA-256 over every field but the signature (so it covers `prev`, the whole past).

    The one definition. `Author.write` alone hashes a record's parts instead
    (`records.hash_input_of`, reusing the metadata it encoded for the AEAD): 2-5 % of
    writing a record, 1-2 % of a bulk append; tests/test_crypto.py proves the two equal.
    """
    return hashlib.sha256(hash_input(record)).digest()


def must_sign(idx: int) -> bool:
    """Records every SIGN_EVERY idx carry a signature, so any batch can end on one."""
    return (idx + 1) % SIGN_EVERY == 0


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


# The Ed25519 rules of docs/protocol.md §6.1 that OpenSSL does not enforce itself. OpenSSL
# verifies cofactorless ([S]B = R + [k]A), refuses S >= L, and refuses an R not in
# canonical form (it compares R's bytes with the encoding of [S]B - [k]A). It loads any
# 32 bytes as a key, and accepts a key A or an R of small order: with such an A, anyone
# can sign (A = identity: R = [s]B, S = s verifies for every message). So a host key
# must be a canonical encoding of a curve point not of small order (`host_key_problem`),
# and R must not be of small order. tests/test_ed25519_rules.py shows each rule.
_P = 2**255 - 19  # the field of edwards25519
_D = -121665 * pow(121666, -1, _P) % _P  # the curve: -x^2 + y^2 = 1 + d x^2 y^2
_SMALL_ORDER = frozenset(  # the 8 points of order 1, 2, 4 and 8, canonically encoded
    bytes.fromhex(point)
    for point in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    )
)


def host_key_problem(public_key: bytes) -> str | None:
    """Why `public_key` cannot be a host's Ed25519 key, in words; None if it can.

    It must encode a point canonically (RFC 8032 §5.1.3: y < p, and no sign bit when
    x = 0), the point must be on the curve, and not of small order. About 0.1 ms (one
    modular exponentiation), once per key: `_public_key` keeps the keys it loaded.
    """
    if len(public_key) != 32:
        return f"an Ed25519 public key is 32 bytes, not {len(public_key)}"
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P  # x^2 = u / v
    if y >= _P or (public_key[31] >> 7 and u == 0):
        return "it is not the canonical encoding of a point"
    if public_key in _SMALL_ORDER:
        return "it is a point of small order, for which anyone can make signatures"
    if pow(u * v, (_P - 1) // 2, _P) == _P - 1:  # u / v is not a square: no x
        return "it is not a point of the curve"
    return None


def check_host_key(public_key: bytes) -> None:
    """Raise ForgeryError if `public_key` cannot be a host key (`host_key_problem`)."""
    problem = host_key_problem(public_key)
    if problem is not None:
        raise ForgeryError(f"the public key {public_key[:8].hex()}… is refused: {problem}")


@lru_cache(maxsize=1024)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    check_host_key(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: bytes, digest: bytes, sig: bytes, where: str) -> None:
    """Raise ForgeryError unless `sig` is the host's signature of `digest`, under the
    rules of docs/protocol.md §6.1 (OpenSSL's, and the two it leaves to us)."""
    key = _public_key(public_key)
    if sig[:32] in _SMALL_ORDER:
        raise ForgeryError(f"{where}: the signature's R is a point of small order")
    try:
        key.verify(sig, digest)
    except (InvalidSignature, ValueError) as exc:
        raise ForgeryError(f"{where}: the signature does not verify") from exc


def verify_segment(segment: Segment, public_key: bytes) -> Checked:
    """Authenticate a segment of one log (its bytes checked by `segment.check`): every
    signature present verifies, one sits every SIGN_EVERY idx, on the last record, and
    within RUN_PAYLOAD_BYTES of payload; the rules `ChainCheck` applies to records.
    Linking the first record to what comes before is the caller's job."""
    checked = check(segment)
    _public_key(public_key)  # the key first: ForgeryError if it is weak
    if host_id(public_key) != segment.host:
        raise ForgeryError(
            f"record {segment.log}#{segment.first_idx}: the public key does not match the host"
        )
    signed, hashes = checked.signed, checked.hashes
    for position, sig in signed.items():
        where = f"record {segment.log}#{segment.first_idx + position}"
        verify_signature(public_key, hashes[position], sig, where)
    first = segment.first_idx
    for idx in range(first + (-(first + 1)) % SIGN_EVERY, segment.end, SIGN_EVERY):
        if idx - first not in signed:
            raise ForgeryError(f"record {segment.log}#{idx}: a signature is required here")
    run = 0
    for position, payload in enumerate(checked.payloads):
        run += payload
        if run > RUN_PAYLOAD_BYTES:
            raise InvalidRecord(
                f"record {segment.log}#{first + position}: over {RUN_PAYLOAD_BYTES:,} bytes of "
                "payload since the last signature (such a run fits no message)"
            )
        if position in signed:
            run = 0
    if segment.count - 1 not in signed:
        raise ForgeryError(
            f"record {segment.log}#{segment.end - 1}: a batch must end on a signed record"
        )
    return checked


def verify_chain(records: Sequence[Record], public_key: bytes) -> list[bytes]:
    """Authenticate a batch of one log; returns each record's hash.

    The records must be consecutive, each `prev` the hash of the one before; every
    signature present must verify, one is required every SIGN_EVERY idx, on the last
    record, and within RUN_PAYLOAD_BYTES of payload. Linking the first record to what
    is already stored is the caller's job.
    """
    check = ChainCheck(public_key)
    hashes = check.feed(records)
    check.finish()
    return hashes


class ChainCheck:
    """Verifies one log incrementally, batch after batch (for `peer verify` and sync)."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key
        self.last: Record | None = None
        self.last_hash = b""
        self.run = 0  # payload bytes since the last signed record

    def feed(self, records: Sequence[Record]) -> list[bytes]:
        """Check the links and signatures of `records`, which continue what was fed.

        The link test is inline: this loop runs for every record received.
        """
        hashes: list[bytes] = []
        keep = hashes.append
        last, last_hash, run = self.last, self.last_hash, self.run
        for record in records:
            if last is None:
                _public_key(self.public_key)  # the key first: ForgeryError if it is weak
                if host_id(self.public_key) != record.host:
                    raise ForgeryError(f"{_where(record)}: the public key does not match the host")
            elif not (
                record.prev == last_hash
                and record.idx == last.idx + 1
                and record.host == last.host
                and record.tag == last.tag
            ):
                _explain_link(last, last_hash, record)
            digest = record_hash(record)
            run += len(record.payload)
            if run > RUN_PAYLOAD_BYTES:
                raise InvalidRecord(
                    f"{_where(record)}: over {RUN_PAYLOAD_BYTES:,} bytes of payload since "
                    "the last signature (such a run fits no message)"
                )
            if record.sig:
                verify_signature(self.public_key, digest, record.sig, _where(record))
                run = 0
            elif must_sign(record.idx):
                raise ForgeryError(f"{_where(record)}: a signature is required here")
            keep(digest)
            last, last_hash = record, digest
        self.last, self.last_hash, self.run = last, last_hash, run
        return hashes

    def finish(self) -> None:
        """The chain must end on a signature, which authenticates everything before it."""
        if self.last is not None and not self.last.sig:
            raise ForgeryError(
                f"record {self.last.log}#{self.last.idx}: a batch must end on a signed record"
            )


def _explain_link(before: Record, before_hash: bytes, record: Record) -> None:
    if record.log != before.log or record.idx != before.idx + 1:
        raise InvalidRecord(f"{_where(record)}: a batch must hold consecutive records of one log")
    raise ForgeryError(
        f"{_where(record)}: prev is not the hash of record #{before.idx} "
        "(one of the two was altered)"
    )


def _where(record: Record) -> str:
    return f"record {record.log}#{record.idx}"


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
    from cryptography.hazmat.primitives.serialization import Encoding
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
        self.public_key = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

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
    public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
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
