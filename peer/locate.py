"""Finding a home and the daemon running for it, with the standard library only: the
shell hook reads this before every hand-off (`peer.handoff`), so it must not load
what `peer.home` does (dataclasses, the keys' modules).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SERVE_FILE = "serve.json"  # where a running `peer serve` listens (`peer.home`)


def default_home(environ: Mapping[str, str]) -> Path:
    """`$PEER_HOME`, else the platform's per-user data directory."""
    if environ.get("PEER_HOME"):
        return Path(environ["PEER_HOME"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "peer"
    if sys.platform == "win32" and environ.get("APPDATA"):
        return Path(environ["APPDATA"]) / "peer"
    data = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "peer"


def serving_fields(serve_file: Path) -> dict[str, Any] | None:
    """What serve.json says of the running daemon (address, pairing_address, socket,
    pid), if it is readable and its process is alive; else None."""
    try:
        fields = json.loads(serve_file.read_text())
        pid = int(fields["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(fields, dict) or not alive(pid):
        return None
    return fields


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
