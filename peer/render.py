"""How command results look: JSON objects for programs, lines for people.

Pure functions from results to dicts and text; the CLI decides where they go.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from peer.identity import format_node_id

if TYPE_CHECKING:
    from peer.daemon import PeerResult
    from peer.node import Entry
    from peer.store import TrustedPeer


def entry_json(entry: Entry) -> dict[str, Any]:
    """The `peer tail --json` object of one record (SPEC §8)."""
    record = entry.record
    obj: dict[str, Any] = {
        "host": record.host.hex(),
        "tag": record.tag,
        "idx": record.idx,
        "timestamp": record.timestamp,
        "id": record.id.hex(),
    }
    if entry.data is None:
        obj["error"] = entry.error
    else:
        try:
            obj["data"] = entry.data.decode("utf-8")
        except UnicodeDecodeError:
            obj["data_b64"] = base64.b64encode(entry.data).decode()
    return obj


def sync_lines(results: Sequence[PeerResult]) -> list[str]:
    """One line per peer (and a warning per diverged log), for people."""
    lines: list[str] = []
    for result in results:
        summary = result.summary
        if summary is None:
            lines.append(f"{result.target}: FAILED: {result.error}")
            continue
        lines.append(f"{result.target}: pulled {summary.pulled}, pushed {summary.pushed} record(s)")
        lines += [
            f"  warning: {log} differs at the same length on both sides (a fork?)"
            for log in summary.diverged
        ]
    return lines


def sync_json(result: PeerResult) -> dict[str, Any]:
    summary = result.summary
    if summary is None:
        return {"peer": result.target, "error": result.error}
    return {
        "peer": result.target,
        "node_id": summary.node_id,
        "pulled": summary.pulled,
        "pushed": summary.pushed,
        "logs": [
            {"host": log.host.hex(), "tag": log.tag, "pulled": counts[0], "pushed": counts[1]}
            for log, counts in summary.per_log.items()
        ],
        "diverged": [{"host": log.host.hex(), "tag": log.tag} for log in summary.diverged],
        "error": None,
    }


def peer_json(peer: TrustedPeer) -> dict[str, Any]:
    return {
        "node_id": format_node_id(peer.node_id),
        "name": peer.name,
        "address": peer.address,
        "certificate": peer.certificate is not None,
    }
