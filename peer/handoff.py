"""The shell hook's hand-off: `peer history add` gives its entry to the running daemon,
which writes it through its own append path, rather than sealing, signing and writing
it in the hook's process (which would import cryptography and sqlite3).

The socket is `peer.hook`, beside the daemon's local API socket (so in the private
home, or the private directory the local socket moved to), mode 0600: only the home's
owner can connect. The protocol, one exchange per connection, standard library only:

    request   4-byte big-endian length N, then N bytes of UTF-8 JSON: the entry
              {"v": 1, "id", "command", "cwd", "exit", "duration", "timestamp",
               "hostname", "session"} (docs/apps.md, "The hand-off")
    answer    4-byte big-endian length, then JSON: {"ok": true, "idx": N} once the
              record is durable; {"ok": false, "error": "..."} otherwise

The hook waits for the answer at most HANDOFF_TIMEOUT_S; on no daemon, a refusal, a
timeout or any error it writes the entry itself (`peer.store.direct`), with the same
id: a daemon that committed but whose answer was lost leaves two creates of one id in
the log, which the view shows as one entry (docs/apps.md), so nothing is lost and
nothing shows twice. This module is the client's half and the shared constants; the
daemon's half is `peer.service.handoff`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import _socket

HANDOFF_NAME = "peer.hook"  # the hand-off socket, beside the local API's socket
HANDOFF_TIMEOUT_S = 1.0  # the hook waits this long for the daemon's answer
MAX_REQUEST_BYTES = 1 << 20  # the daemon refuses a longer request (the command line)
VERSION = 1
LENGTH_BYTES = 4


def handoff_path(local_socket: str | Path) -> Path:
    """Where the daemon whose local API listens on `local_socket` takes hand-offs."""
    return Path(local_socket).parent / HANDOFF_NAME


def frame(message: dict[str, Any]) -> bytes:
    """One message as it travels: its length, then its compact JSON."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return len(body).to_bytes(LENGTH_BYTES, "big") + body


def hand_off(path: str | Path, entry: dict[str, Any], timeout: float = HANDOFF_TIMEOUT_S) -> bool:
    """Give `entry` to the daemon listening at `path`; True once it answered that the
    record is durable, False on anything else within `timeout` s in all (the caller
    then writes it itself)."""
    import _socket  # the C module: `socket` would add selectors and enums, 5+ ms

    request = frame({"v": VERSION, **entry})
    deadline = time.monotonic() + timeout
    try:
        with contextlib.closing(_socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fsencode(path))
            sock.sendall(request)
            answer = _read_answer(sock, deadline)
    except (OSError, ValueError):  # no daemon, refused, timed out, cut, not JSON
        return False
    return isinstance(answer, dict) and answer.get("ok") is True


def _read_answer(sock: _socket.socket, deadline: float) -> object:
    length = int.from_bytes(_read_exactly(sock, LENGTH_BYTES, deadline), "big")
    if length > MAX_REQUEST_BYTES:
        raise ValueError("answer too long")
    return json.loads(_read_exactly(sock, length, deadline))


def _read_exactly(sock: _socket.socket, count: int, deadline: float) -> bytes:
    data = b""
    while len(data) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the daemon did not answer in time")
        sock.settimeout(left)
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ValueError("the daemon closed the connection before answering")
        data += chunk
    return data
