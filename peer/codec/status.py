"""Peer errors <-> gRPC status codes, translated at the boundary without losing the class.

A node answers a peer error with `status_for`: the code of the first row of
STATUS_FOR_ERROR its class falls under, and the class's name in the trailing metadata
`peer-error`. The caller's `error_for` raises that class again if the name is one of the
tree and its code is the code received (the code stays authoritative); a status that
names no class (an older peer, grpc itself) falls back to ERROR_FOR_STATUS.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from peer.errors import (
    CryptoError,
    ForgeryError,
    ForkDetected,
    GapError,
    IntegrityError,
    InvalidRecord,
    KeyFormatError,
    LimitExceeded,
    LogFrozen,
    PeerError,
    PeerRefused,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
    StoreError,
    StoreFull,
    UnknownHost,
    Unsupported,
    UsageError,
    WrongKey,
)

EXPECTED_IDX_KEY = "peer-expected-idx"
ERROR_KEY = "peer-error"  # the class of the tree an error was raised as, by name

# Class -> code: what a node answers, and what a name received must agree with.
# Order matters: the first matching class wins (subclasses first).
STATUS_FOR_ERROR: tuple[tuple[type[PeerError], grpc.StatusCode], ...] = (
    (GapError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownHost, grpc.StatusCode.FAILED_PRECONDITION),
    (ForkDetected, grpc.StatusCode.ALREADY_EXISTS),
    (LogFrozen, grpc.StatusCode.ABORTED),
    (Unsupported, grpc.StatusCode.UNIMPLEMENTED),
    (ForgeryError, grpc.StatusCode.INVALID_ARGUMENT),
    (IntegrityError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRecord, grpc.StatusCode.INVALID_ARGUMENT),
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (KeyFormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (CryptoError, grpc.StatusCode.FAILED_PRECONDITION),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PeerRefused, grpc.StatusCode.PERMISSION_DENIED),
    (PeerTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (PeerUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreError, grpc.StatusCode.UNAVAILABLE),
    (PeerError, grpc.StatusCode.FAILED_PRECONDITION),
)

# Code -> class, for a status that names no class of the tree.
ERROR_FOR_STATUS: dict[grpc.StatusCode, type[PeerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ProtocolError,
    grpc.StatusCode.FAILED_PRECONDITION: IntegrityError,
    grpc.StatusCode.ALREADY_EXISTS: ForkDetected,
    grpc.StatusCode.ABORTED: LogFrozen,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceeded,
    grpc.StatusCode.PERMISSION_DENIED: PeerRefused,
    grpc.StatusCode.UNAUTHENTICATED: PeerRefused,
    grpc.StatusCode.DEADLINE_EXCEEDED: PeerTimeout,
    grpc.StatusCode.UNAVAILABLE: PeerUnavailable,
    grpc.StatusCode.CANCELLED: PeerUnavailable,
    grpc.StatusCode.UNIMPLEMENTED: Unsupported,
}


def _tree() -> dict[str, type[PeerError]]:
    """Every class of the tree in peer.errors, by name: the names a node sends and takes.
    Walked, not listed, so that a class added to the tree crosses the wire as itself."""
    found: dict[str, type[PeerError]] = {}
    pending = [PeerError]
    while pending:
        kind = pending.pop()
        if kind.__module__ == PeerError.__module__:  # a subclass made elsewhere is not sent
            found[kind.__name__] = kind
            pending.extend(kind.__subclasses__())
    return found


ERROR_NAMES = _tree()


def code_for(kind: type[PeerError]) -> grpc.StatusCode:
    """The status code of a class: the first row of STATUS_FOR_ERROR it falls under."""
    return next(code for row, code in STATUS_FOR_ERROR if issubclass(kind, row))


def _sent_as(error: PeerError) -> type[PeerError]:
    """The class of the tree an error is sent as: its own, or the nearest it derives from."""
    for kind in type(error).__mro__:
        if issubclass(kind, PeerError) and ERROR_NAMES.get(kind.__name__) is kind:
            return kind
    return PeerError  # unreachable: PeerError itself is in the tree


def status_for(error: PeerError) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The status code for an error, and trailing metadata carrying its details: the
    name of its class in the tree (so it comes back as itself), and a gap's idx."""
    kind = _sent_as(error)
    metadata: tuple[tuple[str, str], ...] = ((ERROR_KEY, kind.__name__),)
    if isinstance(error, GapError):
        metadata += ((EXPECTED_IDX_KEY, str(error.expected_idx)),)
    return code_for(kind), metadata


def error_for(
    code: grpc.StatusCode,
    details: str,
    metadata: Mapping[str, str | bytes],
    target: str = "peer",
) -> PeerError:
    """The peer error for a status a peer answered with (a failure of the channel
    itself, which has no answer behind it, is told apart by `client.channel_failure`)."""
    text = f"{target}: {details or code.name.lower().replace('_', ' ')}"
    named = _named(code, text, metadata)
    if named is not None:
        return named
    expected = _expected_idx(metadata)
    if code == grpc.StatusCode.FAILED_PRECONDITION and expected is not None:
        return GapError(f"{target}: {details}", expected)  # an older peer: no name
    return ERROR_FOR_STATUS.get(code, PeerUnavailable)(text)


def _named(
    code: grpc.StatusCode, text: str, metadata: Mapping[str, str | bytes]
) -> PeerError | None:
    """The error of the class the peer named, if it is one of the tree sent with this
    very code (the code stays authoritative: a name that disagrees is ignored)."""
    name = metadata.get(ERROR_KEY)
    kind = ERROR_NAMES.get(name) if isinstance(name, str) else None
    if kind is None or code_for(kind) != code:
        return None
    if issubclass(kind, GapError):
        expected = _expected_idx(metadata)
        return None if expected is None else kind(text, expected)
    if issubclass(kind, WrongKey):
        return kind("", "", message=text)  # its key ids crossed the wire only in the text
    return kind(text)


def _expected_idx(metadata: Mapping[str, str | bytes]) -> int | None:
    """A gap's idx expected, if the metadata holds one that reads as a number."""
    value = metadata.get(EXPECTED_IDX_KEY)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
