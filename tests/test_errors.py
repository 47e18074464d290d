"""The error tree: drawn in peer/errors.py's docstring as it is defined, and carried
over the wire as itself (`codec.status`: the status code plus the class's name).

Every class is found by walking `PeerError.__subclasses__()`, so a class added to the
tree is checked here without anyone listing it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest
from grpc import aio

from peer import errors
from peer.client import call_error, channel_failure
from peer.codec import ERROR_KEY, EXPECTED_IDX_KEY, error_for, status_for
from peer.errors import (
    ForgeryError,
    ForkDetected,
    GapError,
    IntegrityError,
    PeerError,
    PeerRefused,
    PeerUnavailable,
    ProtocolError,
    StoreError,
    WrongKey,
)

DRAWN = re.compile(r"^    (?P<indent>[│├└─ ]*)(?P<name>[A-Z]\w+)\s")


def walk(kind: type[PeerError] = PeerError, depth: int = 0) -> Iterator[tuple[int, type]]:
    """Every subclass of `kind` and itself (depth, class), depth first, in definition order."""
    yield depth, kind
    for sub in kind.__subclasses__():
        yield from walk(sub, depth + 1)


def drawn() -> list[tuple[int, str]]:
    """(depth, name) of each class in the docstring's drawing: four columns a level."""
    found = [DRAWN.match(line) for line in (errors.__doc__ or "").splitlines()]
    return [(len(m["indent"]) // 4, m["name"]) for m in found if m]


EVERY_CLASS = [kind for _, kind in walk()]  # wherever made: each must cross the wire


def test_the_docstring_draws_every_class_where_it_is_in_the_tree() -> None:
    classes = [(d, kind.__name__) for d, kind in walk() if kind.__module__ == errors.__name__]
    assert drawn() == classes
    assert (2, "Throttled") in classes
    assert len(classes) >= 25


def an_instance(kind: type[PeerError]) -> PeerError:
    if issubclass(kind, GapError):
        return kind("log x: the batch starts at idx 9", 4)
    if issubclass(kind, WrongKey):
        return kind("k1", "k2")
    return kind(f"what went wrong ({kind.__name__.lower()})")


def over_the_wire(error: PeerError) -> PeerError:
    """What a caller raises for `error`, answered as the service answers it."""
    code, metadata = status_for(error)
    return error_for(code, str(error), dict(metadata), "peer-x")


@pytest.mark.parametrize("kind", EVERY_CLASS, ids=lambda kind: kind.__name__)
def test_every_error_comes_back_as_its_own_class(kind: type[PeerError]) -> None:
    error = an_instance(kind)
    back = over_the_wire(error)
    assert type(back) is type(error)
    assert str(back) == f"peer-x: {error}"
    if isinstance(error, GapError):
        assert isinstance(back, GapError) and back.expected_idx == error.expected_idx


METADATA_THAT_NAMES_NO_CLASS = [
    {},  # an older peer
    {ERROR_KEY: "NoSuchError"},  # a newer peer's class
    {ERROR_KEY: "ForkDetected"},  # a class of another code: the code wins
    {ERROR_KEY: "object"},
    {ERROR_KEY: "KeyboardInterrupt"},
    {ERROR_KEY: ""},
    {ERROR_KEY: b"ForgeryError"},  # not text
]


@pytest.mark.parametrize("metadata", METADATA_THAT_NAMES_NO_CLASS, ids=repr)
def test_a_status_without_a_usable_name_maps_by_its_code(
    metadata: dict[str, str | bytes],
) -> None:
    back = error_for(grpc.StatusCode.INVALID_ARGUMENT, "bad input", metadata, "peer-x")
    assert type(back) is ProtocolError
    assert str(back) == "peer-x: bad input"


def test_a_named_gap_without_its_idx_is_not_a_gap() -> None:
    for idx in ({}, {EXPECTED_IDX_KEY: "four"}):
        metadata = {ERROR_KEY: "GapError", **idx}
        back = error_for(grpc.StatusCode.FAILED_PRECONDITION, "x", metadata, "peer-x")
        assert type(back) is IntegrityError


def test_a_class_made_outside_the_tree_is_sent_as_the_nearest_one() -> None:
    class Elsewhere(ForgeryError):
        """Not in peer.errors: the wire knows only the tree's names."""

    code, metadata = status_for(Elsewhere("forged"))
    assert (code, dict(metadata)) == (grpc.StatusCode.INVALID_ARGUMENT, {ERROR_KEY: "ForgeryError"})
    assert type(over_the_wire(Elsewhere("forged"))) is ForgeryError
    assert type(over_the_wire(ForkDetected("fork"))) is ForkDetected


# -- failures of the channel: no peer answered, grpc says what happened in English -------

REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)
HANDSHAKE = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls "
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:10000410:SSL "
    "routines:OPENSSL_internal:SSLV3_ALERT_HANDSHAKE_FAILURE"
)


@pytest.mark.parametrize(
    ("details", "tls", "answered", "expected"),
    [
        (REFUSED, False, False, "cannot reach 127.0.0.1:1 (connection refused): is `peer serve`"),
        (HANDSHAKE, True, False, "127.0.0.1:1 refused the TLS handshake: it does not trust"),
        ("Socket closed", True, False, "127.0.0.1:1 refused the TLS handshake"),
        ("Socket closed", True, True, "lost the connection to 127.0.0.1:1 (Socket closed)"),
        (HANDSHAKE, True, True, "lost the connection to 127.0.0.1:1 (failed to connect"),
    ],
)
def test_a_channel_failure_is_named_by_what_grpc_says(
    details: str, tls: bool, answered: bool, expected: str
) -> None:
    failure = channel_failure(
        grpc.StatusCode.UNAVAILABLE, details, "127.0.0.1:1", tls=tls, answered=answered
    )
    assert failure is not None and str(failure).startswith(expected), failure
    assert isinstance(failure, PeerRefused if "refused the TLS" in expected else PeerUnavailable)


@pytest.mark.parametrize(
    ("code", "details", "tls"),
    [
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", False),  # no TLS: not a handshake
        (grpc.StatusCode.UNAVAILABLE, "the database is locked", True),  # a peer's words
        (grpc.StatusCode.INVALID_ARGUMENT, HANDSHAKE, True),  # only UNAVAILABLE is grpc's
        (grpc.StatusCode.PERMISSION_DENIED, REFUSED, True),
    ],
)
def test_a_status_that_is_not_the_channels_is_left_to_the_error_table(
    code: grpc.StatusCode, details: str, tls: bool
) -> None:
    assert channel_failure(code, details, "127.0.0.1:1", tls=tls, answered=False) is None


def test_a_status_that_names_its_class_was_the_peers_answer() -> None:
    """Whatever its text says, and after the peer answered: not a lost connection."""
    named = aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        aio.Metadata(),
        aio.Metadata((ERROR_KEY, "StoreError")),
        "the disk failed during the SSL handshake",
    )
    for answered in (False, True):
        error = call_error(named, "peer-x", tls=True, answered=answered)
        assert type(error) is StoreError
        assert str(error) == "peer-x: the disk failed during the SSL handshake"
    nameless = aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), "Socket closed"
    )
    assert "lost the connection" in str(call_error(nameless, "peer-x", tls=True, answered=True))


# -- retryable: may a later attempt succeed with nobody acting? -----------------------

RETRYABLE = {
    "GapError",  # resend from the idx expected
    "ForkDetected",  # the next session leaves the frozen log out
    "LogFrozen",
    "StoreError",  # busy, locked, I/O
    "StoreFull",  # space is freed, or the peer's cap grows
    "LimitExceeded",  # streams end, a subscriber catches up
    "Throttled",  # a ban ends
    "PeerRefused",  # a pin or a certificate read there; a reset read as a refusal
    "PeerUnavailable",
    "PeerTimeout",
}


def test_retryable_where_trying_again_may_help_with_nobody_acting() -> None:
    assert {kind.__name__ for kind in EVERY_CLASS if kind.retryable} == RETRYABLE
    drawing = (errors.__doc__ or "").splitlines()
    marked = {m["name"] for line in drawing if "↻" in line and (m := DRAWN.match(line))}
    assert marked == RETRYABLE  # the drawing marks them
