"""Everything a node serves over grpc (the only package, with `codec` and `client`,
that imports grpc):

- `servicer`: the SyncService handlers (index, pull, push, subscribe) and their
  registration;
- `guards`: what every handler goes through: caller identity, failures made a status;
- `server`: starting the sync server (options, mutual TLS, health, reflection) and
  following the trust list;
- `pairing`: the pairing endpoint (its own port, bounded, server-only TLS);
- `local`: the local API on the home's Unix socket (Append, GetStatus);
- `memory`: `MemoryRemote`, the servicer called in-process (tests, simulations).

What one caller may ask at once (`Limits`) is a setting, in `peer.settings`.

The names below are re-exported so that `service.X` reads the same from anywhere.
"""

from peer.service.guards import (
    DRAIN_S,
    FAILURE_TEXT,
    THROTTLE_DELAY_S,
    Context,
    OnError,
    caller_id,
    guard_stream,
    guard_unary,
)
from peer.service.server import RunningServer, server_options, start_server
from peer.service.servicer import REJECTIONS, SyncServicer, method_handlers
from peer.settings import Limits

__all__ = [
    "DRAIN_S",
    "FAILURE_TEXT",
    "REJECTIONS",
    "THROTTLE_DELAY_S",
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
