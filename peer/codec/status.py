"""Peer errors <-> gRPC status codes: one table each way, translated at the boundary.

The server answers a peer error with `status_for`; the client turns the status (or
the channel's own failure) back into a peer error with `error_for`.
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
    UsageError,
)

EXPECTED_IDX_KEY = "peer-expected-idx"

# One table each way. Order matters: the first matching class wins (subclasses first).
STATUS_FOR_ERROR: tuple[tuple[type[PeerError], grpc.StatusCode], ...] = (
    (GapError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownHost, grpc.StatusCode.FAILED_PRECONDITION),
    (ForkDetected, grpc.StatusCode.ALREADY_EXISTS),
    (LogFrozen, grpc.StatusCode.ABORTED),
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
}


def status_for(error: PeerError) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The status code for an error, and trailing metadata carrying its details."""
    code = next(c for kind, c in STATUS_FOR_ERROR if isinstance(error, kind))
    if isinstance(error, GapError):
        return code, ((EXPECTED_IDX_KEY, str(error.expected_idx)),)
    return code, ()


# What BoringSSL says (verifying, or in the other side's alert) of a certificate's dates.
CERTIFICATE_DATES = (
    "certificate has expired",
    "certificate is not yet valid",
    "certificate expired",
)


def error_for(
    code: grpc.StatusCode,
    details: str,
    metadata: Mapping[str, str | bytes],
    target: str = "peer",
    tls: bool = False,
) -> PeerError:
    """The peer error for a status a peer (or the channel to it) answered with."""
    expected = metadata.get(EXPECTED_IDX_KEY)
    if code == grpc.StatusCode.FAILED_PRECONDITION and expected is not None:
        try:
            return GapError(f"{target}: {details}", int(expected))
        except ValueError:
            pass
    lowered = details.lower()
    handshake = "ssl" in lowered or "handshake" in lowered or (tls and "socket closed" in lowered)
    dates = next((words for words in CERTIFICATE_DATES if words in lowered), None)
    if code == grpc.StatusCode.UNAVAILABLE and handshake and dates:
        return PeerRefused(
            f"TLS handshake with {target} failed: {dates} (a certificate outside its "
            "validity dates: is the clock wrong on this machine or there? certificates "
            "made by `peer init` are valid from 2000 to 9999)"
        )
    if code == grpc.StatusCode.UNAVAILABLE and handshake:
        return PeerRefused(
            f"{target} refused the TLS handshake: it does not trust this node yet (run "
            "`peer peers add` there with this node's `peer id`), or it pinned this node "
            "but has not read its certificate yet (it reads it from this node's address "
            "while `peer serve` runs here), or it is not the node pinned here"
        )
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in lowered:
        reason = "connection refused" if "refused" in lowered else "no answer"
        return PeerUnavailable(f"cannot reach {target} ({reason}): is `peer serve` running there?")
    kind = ERROR_FOR_STATUS.get(code, PeerUnavailable)
    text = details or code.name.lower().replace("_", " ")
    return kind(f"{target}: {text}")
