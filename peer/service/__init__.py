"""The SyncService server (moved to a package; split next)."""

from peer.service.servicer import (
    DRAIN_S,
    FAILURE_TEXT,
    REJECTIONS,
    THROTTLE_DELAY_S,
    TRUST_POLL_S,
    Context,
    Limits,
    OnError,
    RunningServer,
    SyncServicer,
    caller_id,
    guard_stream,
    guard_unary,
    method_handlers,
    server_options,
    start_server,
)

__all__ = [
    "DRAIN_S",
    "FAILURE_TEXT",
    "REJECTIONS",
    "THROTTLE_DELAY_S",
    "TRUST_POLL_S",
    "Context",
    "Limits",
    "OnError",
    "RunningServer",
    "SyncServicer",
    "caller_id",
    "guard_stream",
    "guard_unary",
    "method_handlers",
    "server_options",
    "start_server",
]
