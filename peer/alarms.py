"""The own-log alarm in words and as JSON: a peer held more of this node's own log than
this node did (a restored backup, or another device using this identity). Pure, so that
the CLI's output code can use it without loading the sync machinery (and grpc)."""

from __future__ import annotations

from typing import Any

from peer.records import LogKey

OwnLogBehind = dict[LogKey, tuple[int, int]]


def own_log_warning(behind: OwnLogBehind) -> str:
    """The own-log alarm in words: which of our logs the peer held further, and why that
    matters."""
    ranges = ", ".join(
        f"{log.tag} idx {ours}..{theirs - 1}" for log, (ours, theirs) in sorted(behind.items())
    )
    return (
        f"held records of this node's own log beyond ours ({ranges}): restored from a "
        "backup, or another device uses this node's identity?"
    )


def own_log_json(behind: OwnLogBehind) -> list[dict[str, Any]]:
    return [
        {"host": log.host.hex(), "tag": log.tag, "ours": ours, "theirs": theirs}
        for log, (ours, theirs) in sorted(behind.items())
    ]
