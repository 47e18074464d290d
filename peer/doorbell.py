"""A running daemon's doorbell: a datagram tells it that another process committed to
its store, so it publishes the records at once rather than at its next poll.

Standard library only (socket imported when ringing), so that the shell hook can ring
it without loading the daemon's machinery (`peer.watch` keeps the daemon's side, the
`Doorbell` it listens on).
"""

from __future__ import annotations

import os
from pathlib import Path

DOORBELL_NAME = "peer.wake"  # the doorbell's socket, beside the local API's socket


def doorbell_path(local_socket: str | Path) -> Path:
    """Where the daemon whose local API listens on `local_socket` keeps its doorbell."""
    return Path(local_socket).parent / DOORBELL_NAME


def ring(path: str | Path) -> bool:
    """Tell the daemon listening at `path` that this process committed to its store:
    one datagram, sent without waiting. False (and nothing else) if nobody listens."""
    import socket  # here: only a process that found a daemon running pays for it

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as bell:
            bell.setblocking(False)  # a full queue means the daemon is woken already
            bell.sendto(b"wrote", os.fsencode(path))
    except OSError:  # no socket, nobody bound to it, a full queue, a path too long
        return False
    return True
