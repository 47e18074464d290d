"""Chains and signatures: the record hash, which records carry a signature, and what
a receiver checks of a host's key, its signatures and its records' chain."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from peer.crypto.keys import host_id
from peer.errors import ForgeryError, InvalidRecord
from peer.records import Record, hash_input
from peer.segment import Checked, Segment, check

SIGN_EVERY = 256
SIGN_BYTES = 1 << 20  # also sign once this much payload is unsigned, so batches stay small
# The payload of a run (the records after a signed one, up to the next signed one) is at
# most this: a run always fits one message. SIGN_BYTES keeps a writer's runs under it.
RUN_PAYLOAD_BYTES = 2 << 20


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
    if checked.longest_run > RUN_PAYLOAD_BYTES:
        _too_long_a_run(segment, signed)
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


def _too_long_a_run(segment: Segment, signed: Mapping[int, bytes]) -> NoReturn:
    """Raise InvalidRecord at the record where payload since the last signature
    passes RUN_PAYLOAD_BYTES (the slow path: `check` found that one does)."""
    run = 0
    for position, record in enumerate(segment.records()):
        run += len(record.payload)
        if run > RUN_PAYLOAD_BYTES:
            raise InvalidRecord(
                f"record {segment.log}#{segment.first_idx + position}: over "
                f"{RUN_PAYLOAD_BYTES:,} bytes of payload since the last signature (such a "
                "run fits no message)"
            )
        if position in signed:
            run = 0
    raise InvalidRecord(
        f"segment of {segment.log}: a run of payload without a signature is too long"
    )
