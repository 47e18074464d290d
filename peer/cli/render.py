"""How command results look: JSON objects for programs, lines for people.

Pure functions from results to dicts and text; the CLI decides where they go. Text
that came from elsewhere (names, addresses, commands, values, remote error messages)
goes through `printable` before it is printed for people, so it cannot move the
cursor, retitle the terminal or forge a line; JSON escapes it by itself.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from peer.alarms import own_log_json, own_log_warning
from peer.cli.basics import printable
from peer.identity import format_node_id
from peer.names import MAX_NAME

if TYPE_CHECKING:
    from peer.node import Entry
    from peer.store import TrustedPeer
    from peer.sync_now import PeerResult


def node_name(text: str) -> str:
    """A node name for people: printable, and at most MAX_NAME characters."""
    return printable(text, MAX_NAME)


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
            lines.append(f"{printable(result.target)}: FAILED: {printable(result.error or '')}")
            continue
        target = printable(result.target)
        lines.append(f"{target}: pulled {summary.pulled}, pushed {summary.pushed} record(s)")
        lines += [
            f"  warning: {log} differs at the same length on both sides (a fork?)"
            for log in summary.diverged
        ]
        if summary.own_log_behind:
            lines.append(f"  warning: it {own_log_warning(summary.own_log_behind)}")
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
        "own_log_behind": own_log_json(summary.own_log_behind),
        "error": None,
    }


def peer_json(peer: TrustedPeer) -> dict[str, Any]:
    return {
        "node_id": format_node_id(peer.node_id),
        "name": peer.name,
        "address": peer.address,
        "certificate": peer.certificate is not None,
    }


def status_lines(status: dict[str, Any]) -> list[str]:
    """`peer status` for people: the node, its logs, its peers and links, forks."""
    own = node_name(status["name"]) or "-"
    lines = [f"node {status['node_id']}  name {own}  key {status['key_id']}"]
    roster = status.get("roster") or {}
    if status.get("keyring") or roster.get("devices"):
        lines.append(
            f"keyring: {status.get('keyring', 0)} older key(s); roster: "
            f"{roster.get('devices', 0)} device(s), {roster.get('revoked', 0)} revoked "
            "(`peer devices`)"
        )
    daemon = status.get("daemon")
    if daemon:
        mode = "mutual TLS" if daemon["tls"] else "plaintext, loopback only"
        auto = "automatic sync" if daemon["auto_sync"] else "automatic sync off"
        listen = printable(daemon["listen"])
        lines.append(f"daemon: pid {daemon['pid']} on {listen} ({mode}; {auto})")
    else:
        lines.append("daemon: not running (`peer serve` starts it)")
    lines.append(f"{len(status['logs'])} log(s):")
    for log in status["logs"]:
        mark = "  FROZEN (fork)" if log["frozen"] else ""
        held = "".join(
            f"  {node_id[:9]}:{count:,}" for node_id, count in sorted(log.get("peers", {}).items())
        )
        lines.append(
            f"  {log['host'][:16]}  {log['tag']:<16} {log['next_idx']:>10,} records{mark}{held}"
        )
    lines.append(f"{len(status['peers'])} peer(s):")
    lines += [_peer_line(peer) for peer in status["peers"]]
    lines += [
        f"warning: peer {node_name(peer['name']) or peer['node_id'][:15]} "
        f"{link['own_log_warning']} (seen {link['own_log_alarms']} time(s))"
        for peer in status["peers"]
        if (link := peer.get("link")) and link.get("own_log_warning")
    ]
    unpinned = [d for d in (daemon or {}).get("discovered", []) if not d.get("pinned", True)]
    if unpinned:
        lines.append(f"seen on the LAN, not pinned ({len(unpinned)}): to sync with one, pin it")
        lines += [
            f"  {node_name(d['name'])} at {printable(d['address'])}: "
            f"`peer peers add {d['node_id']}`"
            for d in unpinned
        ]
    lines += [
        f"fork: {fork['host'][:16]}/{fork['tag']} at idx {fork['idx']}" for fork in status["forks"]
    ]
    return lines


def _peer_line(peer: dict[str, Any]) -> str:
    address = printable(peer["address"]) or "(no address)"
    name = f"{node_name(peer['name']) or '-'} {peer['node_id']} {address}"
    link = peer.get("link")
    if not link:
        return f"  {name}"
    if link["connected"]:
        state = "connected, live" if link["live"] else "connected"
    elif link["last_error"]:
        retry = link["retry_in"]
        state = f"FAILING: {printable(link['last_error'])}"
        if retry is not None:
            state += f" (retry in {retry:.0f} s)"
    else:
        state = "not connected"
    last = link["last_sync"]
    synced = f"; last sync {_ago(last)}" if last else "; never synced"
    return f"  {name}: {state}{synced}{_copies(link)}{_feeds(link)}"


def _copies(link: dict[str, Any]) -> str:
    """What came from the peer and how much of it this node held already (a mesh
    delivers each record from several neighbours): nothing until something came."""
    received = link.get("received", 0)
    if not received:
        return ""
    return f"; copies received {received}, duplicates {link.get('duplicates', 0)}"


def _feeds(link: dict[str, Any]) -> str:
    """How many logs this peer feeds us live (it is their upstream, docs §7.5)."""
    feeds = link.get("feeds") or []
    return f"; feeds {len(feeds)} log{'s' if len(feeds) != 1 else ''}" if feeds else ""


def _ago(when: float) -> str:
    seconds = max(0.0, time.time() - when)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
