"""The Ed25519 verification rules of docs/protocol.md §6.1, shown on hostile input.

Each input goes through the code receivers run: `verify_signature` (what `ChainCheck`
calls for every signed record), `check_host_key`, and `Store.insert_batch`. Next to
it, what OpenSSL alone does with the same input (through `cryptography`, with none of
our checks), so a change in OpenSSL shows up here and not as a split between peers.

The inputs: the 12 cases of ed25519-speccheck (Chalkias, Garillot, Nikolaenko, "Taming
the many EdDSAs", 2020; github.com/novifinancial/ed25519-speccheck, cases.txt),
whose messages are 32 bytes like our record hashes; and inputs made here with a small
edwards25519 written from RFC 8032 §5.1 for these tests only (slow, variable time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from peer.crypto import (
    SigningKey,
    check_host_key,
    host_id,
    host_key_problem,
    record_hash,
    verify_chain,
    verify_signature,
)
from peer.errors import ForgeryError
from peer.records import Head
from tests.conftest import new_author, open_store

# -- a reference edwards25519 (RFC 8032 §5.1), to make and to classify inputs ---------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z
IDENTITY: Point = (0, 1, 1, 0)


def add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(n: int, p: Point) -> Point:
    result = IDENTITY
    while n:
        if n & 1:
            result = add(result, p)
        p, n = add(p, p), n >> 1
    return result


def neg(p: Point) -> Point:
    return (-p[0] % P, p[1], p[2], -p[3] % P)


def same(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def decode(raw: bytes, *, strict: bool) -> Point | None:
    """RFC 8032 §5.1.3 if `strict`; else also y >= p (taken mod p) and x = 0 with the
    sign bit set (the lenient decoding of ref10, OpenSSL and ZIP 215)."""
    n = int.from_bytes(raw, "little")
    y, sign = n & ((1 << 255) - 1), n >> 255
    if y >= P and strict:
        return None
    y %= P
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P or (x == 0 and sign and strict):
        return None
    if x & 1 != sign:
        x = -x % P
    return (x, y, 1, x * y % P)


def encode(p: Point) -> bytes:
    z = pow(p[2], -1, P)
    x, y = p[0] * z % P, p[1] * z % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def point(raw: bytes) -> Point:
    decoded = decode(raw, strict=False)
    assert decoded is not None
    return decoded


BASE = point(bytes.fromhex("58" + "66" * 31))


def order(p: Point) -> str:
    """'small' (1, 2, 4 or 8), 'L' (the prime-order subgroup), or 'mixed' (neither)."""
    if same(mul(8, p), IDENTITY):
        return "small"
    return "L" if same(mul(L, p), IDENTITY) else "mixed"


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    """k = SHA-512(R || A || M) mod L, over the bytes as given."""
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def equations(a: bytes, sig: bytes, message: bytes) -> tuple[bool, bool]:
    """Whether [S]B = R + [k]A (cofactorless) and [8][S]B = [8]R + [8][k]A (cofactored)
    hold, with A and R decoded leniently and k over the bytes as given."""
    s = int.from_bytes(sig[32:], "little")
    gap = add(
        mul(s, BASE), neg(add(point(sig[:32]), mul(challenge(sig[:32], a, message), point(a))))
    )
    return same(gap, IDENTITY), same(mul(8, gap), IDENTITY)


def secret_scalar(seed: bytes) -> int:
    h = hashlib.sha512(seed).digest()
    return (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | 1 << 254


def sign_with_r(a: int, public: bytes, r_bytes: bytes, r: int, message: bytes) -> bytes:
    """A signature with a chosen R (encoded as `r_bytes`, its nonce `r`): S = r + k a."""
    return r_bytes + ((r + challenge(r_bytes, public, message) * a) % L).to_bytes(32, "little")


def le(n: int) -> bytes:
    return n.to_bytes(32, "little")


def y_bytes(y: int, sign: int = 0) -> bytes:
    return le(y | sign << 255)


ORDER_8 = point(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))
SMALL_ORDER = [encode(mul(i, ORDER_8)) for i in range(8)]  # all 8 (E[8] is cyclic), canonical
# The other encodings of those 8 points: y >= p (y = p is y = 0, y = p + 1 is y = 1),
# and x = 0 with the sign bit set (y = 1, the identity; y = p - 1, of order 2).
SMALL_ORDER_NON_CANONICAL = [
    y_bytes(P, 0),
    y_bytes(P, 1),
    y_bytes(P + 1, 0),
    y_bytes(P + 1, 1),
    y_bytes(1, 1),
    y_bytes(P - 1, 1),
]


def openssl_verifies(public: bytes, sig: bytes, message: bytes) -> bool:
    """OpenSSL alone: load the key and verify, no check of ours."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, message)
    except InvalidSignature:
        return False
    return True


def peer_refusal(public: bytes, sig: bytes, message: bytes) -> str | None:
    """Our verifier: None if it accepts, else its ForgeryError's message."""
    try:
        verify_signature(public, message, sig, "case")
    except ForgeryError as exc:
        return str(exc)
    return None


def test_the_reference_curve_is_edwards25519_and_signs_as_openssl_does(
    rng: random.Random,
) -> None:
    assert same(mul(L, BASE), IDENTITY) and not same(BASE, IDENTITY)
    assert encode(BASE) == bytes.fromhex("58" + "66" * 31)
    for _ in range(3):
        seed, message = rng.randbytes(32), rng.randbytes(32)
        a = secret_scalar(seed)
        public = encode(mul(a, BASE))
        private = Ed25519PrivateKey.from_private_bytes(seed)
        assert public == private.public_key().public_bytes_raw()
        nonce = hashlib.sha512(hashlib.sha512(seed).digest()[32:] + message).digest()
        r = int.from_bytes(nonce, "little") % L
        assert sign_with_r(a, public, encode(mul(r, BASE)), r, message) == private.sign(message)


def test_the_small_order_points_are_the_eight_known_encodings() -> None:
    assert [order(point(raw)) for raw in SMALL_ORDER] == ["small"] * 8
    assert len(set(SMALL_ORDER)) == 8
    assert SMALL_ORDER[0] == bytes.fromhex("01" + "00" * 31)  # the identity
    assert SMALL_ORDER[4] == bytes.fromhex("ec" + "ff" * 30 + "7f")  # order 2
    for raw in SMALL_ORDER_NON_CANONICAL:
        assert decode(raw, strict=True) is None
        assert encode(point(raw)) in SMALL_ORDER


# -- the 12 speccheck cases ---------------------------------------------------------------


class Case(NamedTuple):
    number: int
    message: str
    public_key: str
    signature: str
    # What the case is, checked below with the reference curve: S against L; A's and
    # R's order and whether they are encoded canonically; which equation holds when k
    # hashes the bytes as given (as every library here does).
    s: str
    a: tuple[str, bool]
    r: tuple[str, bool]
    cofactorless: bool
    cofactored: bool
    openssl: bool  # OpenSSL alone accepts (the paper's OpenSSL-3.0 and PyCA rows)
    refused: str | None  # our ForgeryError says this; None: we accept


SPECCHECK = [
    Case(
        0,
        "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
        "0000000000000000000000000000000000000000000000000000000000000000",
        "S = 0",
        ("small", True),
        ("small", True),
        True,
        True,
        True,
        "small order",
    ),
    Case(
        1,
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        "S < L",
        ("small", True),
        ("mixed", True),
        True,
        True,
        True,
        "small order",
    ),
    Case(
        2,
        "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
        "8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
        "S < L",
        ("mixed", True),
        ("small", True),
        True,
        True,
        True,
        "R is a point of small order",
    ),
    Case(
        3,
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
        "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
        "S < L",
        ("mixed", True),
        ("mixed", True),
        True,
        True,
        True,
        None,
    ),
    Case(
        4,
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed512"
        "5ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
        "S < L",
        ("mixed", True),
        ("mixed", True),
        False,
        True,
        False,
        "does not verify",
    ),
    Case(
        5,
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7"
        "e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
        "S < L",
        ("mixed", True),
        ("L", True),
        False,
        True,
        False,
        "does not verify",
    ),
    Case(
        6,
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e"
        "547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
        "L <= S < 2^253",
        ("L", True),
        ("L", True),
        True,
        True,
        False,
        "does not verify",
    ),
    Case(
        7,
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa1942"
        "7e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
        "S >= 2^253",
        ("L", True),
        ("L", True),
        True,
        True,
        False,
        "does not verify",
    ),
    Case(  # R = (-0, -1) with the sign bit; S made for k over R re-encoded
        8,
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
        "S < L",
        ("mixed", True),
        ("small", False),
        False,
        False,
        False,
        "does not verify",  # OpenSSL compares R's bytes: a non-canonical R never matches
    ),
    Case(  # the same R; S made for k over R as given
        9,
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "ca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
        "S < L",
        ("mixed", True),
        ("small", False),
        True,
        True,
        False,
        "does not verify",
    ),
    Case(  # A = (-0, -1) with the sign bit; S made for k over A re-encoded
        10,
        "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        "S < L",
        ("small", False),
        ("mixed", True),
        False,
        True,
        False,
        "not the canonical encoding",
    ),
    Case(  # the same A; the message chosen so that k over A as given works
        11,
        "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        "S < L",
        ("small", False),
        ("mixed", True),
        True,
        True,
        True,
        "not the canonical encoding",
    ),
]


def _s_class(s: int) -> str:
    if s == 0:
        return "S = 0"
    if s < L:
        return "S < L"
    return "L <= S < 2^253" if s < 2**253 else "S >= 2^253"


def _class(raw: bytes) -> tuple[str, bool]:
    return order(point(raw)), decode(raw, strict=True) is not None


@pytest.mark.parametrize("case", SPECCHECK, ids=lambda c: f"case{c.number}")
def test_each_speccheck_case_is_what_the_paper_says(case: Case) -> None:
    message, public, sig = (bytes.fromhex(h) for h in case[1:4])
    assert _s_class(int.from_bytes(sig[32:], "little")) == case.s
    assert (_class(public), _class(sig[:32])) == (case.a, case.r)
    assert equations(public, sig, message) == (case.cofactorless, case.cofactored)


@pytest.mark.parametrize("case", SPECCHECK, ids=lambda c: f"case{c.number}")
def test_openssl_alone_on_each_speccheck_case(case: Case) -> None:
    """V V V V X X X X X X X V: the paper's row for OpenSSL 3.0 (and for PyCA)."""
    message, public, sig = (bytes.fromhex(h) for h in case[1:4])
    assert openssl_verifies(public, sig, message) is case.openssl


@pytest.mark.parametrize("case", SPECCHECK, ids=lambda c: f"case{c.number}")
def test_peer_on_each_speccheck_case(case: Case) -> None:
    """X X X V X X X X X X X X: the paper's rows for libsodium and ed25519-dalek's
    verify_strict."""
    message, public, sig = (bytes.fromhex(h) for h in case[1:4])
    refusal = peer_refusal(public, sig, message)
    if case.refused is None:
        assert refusal is None
    else:
        assert refusal is not None and case.refused in refusal


# -- public keys: refused when loaded, before any signature ---------------------------------


def forge_for(public: bytes, rng: random.Random) -> tuple[bytes, bytes]:
    """A (message, signature) that verifies for a key A of small order n, made without
    any secret: R = [s]B and S = s, for a message where n divides k (so [k]A = 0)."""
    n = next(n for n in (1, 2, 4, 8) if same(mul(n, point(public)), IDENTITY))
    s = rng.randrange(1, L)
    r = encode(mul(s, BASE))
    while True:
        message = rng.randbytes(32)
        if challenge(r, public, message) % n == 0:
            return message, r + le(s)


@pytest.mark.parametrize("public", SMALL_ORDER + SMALL_ORDER_NON_CANONICAL, ids=bytes.hex)
def test_a_small_order_key_lets_anyone_sign_so_it_is_refused(
    public: bytes, rng: random.Random
) -> None:
    message, forged = forge_for(public, rng)
    assert openssl_verifies(public, forged, message)  # OpenSSL alone takes the forgery
    assert host_key_problem(public) is not None
    with pytest.raises(ForgeryError, match=r"small order|canonical"):
        check_host_key(public)
    with pytest.raises(ForgeryError, match="is refused"):
        verify_signature(public, message, forged, "forged")


def test_with_the_identity_as_key_one_signature_verifies_for_every_message(
    rng: random.Random,
) -> None:
    identity = SMALL_ORDER[0]
    s = rng.randrange(1, L)
    forged = encode(mul(s, BASE)) + le(s)
    messages = [rng.randbytes(32) for _ in range(20)]
    assert all(openssl_verifies(identity, forged, m) for m in messages)
    assert all(peer_refusal(identity, forged, m) for m in messages)


async def test_a_store_refuses_a_small_order_host_key_and_its_forged_records(
    tmp_path: Path, rng: random.Random
) -> None:
    """The path receivers run: the key comes with the batch (HostKey), the records
    are forged for its host id, and OpenSSL alone would take every signature."""
    identity = SMALL_ORDER[0]
    s = rng.randrange(1, L)
    forged_sig = encode(mul(s, BASE)) + le(s)  # verifies for every digest under A = 0
    (honest,) = new_author().write("notes", Head(0), [1_000], [b"hello"])
    record = dataclasses.replace(honest, host=host_id(identity), sig=forged_sig)
    assert openssl_verifies(identity, forged_sig, record_hash(record))
    with pytest.raises(ForgeryError, match="small order"):
        verify_chain([record], identity)
    store = await open_store(tmp_path / "s.db")
    try:
        with pytest.raises(ForgeryError, match="small order"):
            await store.insert_batch([record], {record.host: identity})
        assert await store.host_keys([record.host]) == {}
        assert await store.index() == {}
    finally:
        await store.close()


@pytest.mark.parametrize("y", [2, 7, 8, 11, 12, 13, 17])
def test_a_key_that_is_not_a_curve_point_is_refused_when_loaded(y: int) -> None:
    public = y_bytes(y)
    assert decode(public, strict=False) is None  # no x: not on the curve
    Ed25519PublicKey.from_public_bytes(public)  # OpenSSL alone loads it all the same
    with pytest.raises(ForgeryError, match="not a point of the curve"):
        check_host_key(public)


@pytest.mark.parametrize("y", [3, 4, 5, 6, 9, 10, 14, 15, 16, 18])
@pytest.mark.parametrize("sign", [0, 1])
def test_a_key_with_y_at_or_above_p_is_refused_even_for_a_point_of_large_order(
    y: int, sign: int
) -> None:
    """y + p encodes the point with y: here points with a large-order part. No one
    can sign for them (it takes a discrete logarithm), but the rule is the encoding."""
    public = y_bytes(P + y, sign)
    assert order(point(public)) == "mixed" and decode(public, strict=True) is None
    Ed25519PublicKey.from_public_bytes(public)  # OpenSSL alone loads it
    with pytest.raises(ForgeryError, match="not the canonical encoding"):
        check_host_key(public)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_key_of_the_wrong_size_is_a_forgery_error_not_a_crash(size: int) -> None:
    with pytest.raises(ForgeryError, match="32 bytes"):
        check_host_key(bytes(size))
    with pytest.raises(ForgeryError, match="32 bytes"):
        verify_signature(bytes(size), bytes(32), bytes(64), "short key")


def test_the_key_check_agrees_with_strict_decoding_on_random_bytes(rng: random.Random) -> None:
    """Accepted exactly when RFC 8032 decoding succeeds and the point is not of small
    order; real keys always are."""
    for _ in range(300):
        raw = rng.randbytes(32)
        decoded = decode(raw, strict=True)
        expected = decoded is not None and raw not in SMALL_ORDER
        assert (host_key_problem(raw) is None) is expected, raw.hex()
    for _ in range(20):
        assert host_key_problem(SigningKey.generate().public_key) is None


# -- signatures by an honest key --------------------------------------------------------------


class Honest(NamedTuple):
    a: int
    public: bytes
    message: bytes

    def sign(self, r_bytes: bytes, r: int) -> bytes:
        return sign_with_r(self.a, self.public, r_bytes, r, self.message)


@pytest.fixture
def honest(rng: random.Random) -> Honest:
    seed = rng.randbytes(32)
    a = secret_scalar(seed)
    return Honest(a, SigningKey.from_bytes(seed).public_key, rng.randbytes(32))


def test_an_honest_signature_verifies(honest: Honest, rng: random.Random) -> None:
    r = rng.randrange(1, L)
    sig = honest.sign(encode(mul(r, BASE)), r)
    assert openssl_verifies(honest.public, sig, honest.message)
    assert peer_refusal(honest.public, sig, honest.message) is None


def test_s_at_or_above_l_is_refused(honest: Honest, rng: random.Random) -> None:
    """S + nL verifies the same equation; refusing it makes a signature non-malleable."""
    r = rng.randrange(1, L)
    sig = honest.sign(encode(mul(r, BASE)), r)
    s = int.from_bytes(sig[32:], "little")
    for n in range(1, (2**256 - s) // L + 1):  # every S + nL that fits 32 bytes
        bigger = sig[:32] + le(s + n * L)
        assert equations(honest.public, bigger, honest.message) == (True, True)
        assert not openssl_verifies(honest.public, bigger, honest.message)
        assert "does not verify" in (peer_refusal(honest.public, bigger, honest.message) or "")


@pytest.mark.parametrize(
    "r_bytes",
    [y_bytes(P + 1), y_bytes(P + 1, 1), y_bytes(1, 1)],
    ids=["y=p+1", "y=p+1,sign", "x=-0"],
)
def test_a_non_canonical_r_is_refused(honest: Honest, r_bytes: bytes) -> None:
    """R = the identity, written three non-canonical ways, S = k a: a verifier that
    decodes R and compares points would accept; OpenSSL compares R's bytes."""
    sig = honest.sign(r_bytes, 0)
    assert equations(honest.public, sig, honest.message) == (True, True)
    assert not openssl_verifies(honest.public, sig, honest.message)
    assert "does not verify" in (peer_refusal(honest.public, sig, honest.message) or "")


def test_a_small_order_r_is_refused(honest: Honest) -> None:
    """R = the identity, S = k a: only the key's holder can make it (never by signing
    honestly). OpenSSL accepts it; libsodium and dalek's verify_strict refuse it."""
    sig = honest.sign(SMALL_ORDER[0], 0)
    assert openssl_verifies(honest.public, sig, honest.message)
    assert "R is a point of small order" in (peer_refusal(honest.public, sig, honest.message) or "")


def test_verification_is_cofactorless(honest: Honest, rng: random.Random) -> None:
    """R = [r]B + T with T of order 8 and S = r + k a: the cofactored equation holds,
    the cofactorless one does not, and both verifiers refuse."""
    r = rng.randrange(1, L)
    sig = honest.sign(encode(add(mul(r, BASE), ORDER_8)), r)
    assert equations(honest.public, sig, honest.message) == (False, True)
    assert not openssl_verifies(honest.public, sig, honest.message)
    assert "does not verify" in (peer_refusal(honest.public, sig, honest.message) or "")


def test_a_mixed_order_key_is_accepted_when_the_cofactorless_equation_holds(
    rng: random.Random,
) -> None:
    """A = [a]B + T (T of order 8) is no honest key, but only its holder can sign,
    and every cofactorless library accepts it (speccheck case 3): so do we. Whether a
    signature verifies depends on k mod 8, the same way everywhere."""
    a = rng.randrange(1, L)
    public = encode(add(mul(a, BASE), ORDER_8))
    assert order(point(public)) == "mixed"
    check_host_key(public)
    seen: set[bool] = set()
    while seen != {True, False}:
        message, r = rng.randbytes(32), rng.randrange(1, L)
        sig = sign_with_r(a, public, encode(mul(r, BASE)), r, message)
        holds = challenge(sig[:32], public, message) % 8 == 0
        assert equations(public, sig, message) == (holds, True)
        assert openssl_verifies(public, sig, message) is holds
        assert (peer_refusal(public, sig, message) is None) is holds
        seen.add(holds)


@pytest.mark.parametrize("size", [0, 1, 32, 63, 65, 128])
def test_a_signature_of_the_wrong_size_is_a_forgery_error(honest: Honest, size: int) -> None:
    r = 12345
    sig = (honest.sign(encode(mul(r, BASE)), r) * 2)[:size]
    assert "does not verify" in (peer_refusal(honest.public, sig, honest.message) or "")
