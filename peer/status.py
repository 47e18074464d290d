"""`peer status` as typed values: what a node holds, whom it trusts, and (from a running
daemon) how each link is doing.

The node and the daemon build a `NodeStatus`; the local API carries it as messages
(`peer.v1.NodeStatus`, through `peer.codec.local`); `as_json` makes the one document
that `peer status --json` prints and `peer.api` returns. Ids and hashes stay bytes
until then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from peer.alarms import own_log_json, own_log_warning
from peer.identity import format_node_id
from peer.records import LogKey


@dataclass
class LinkState:
    """What the daemon knows of one peer's link (kept up to date by the mesh)."""

    node_id: bytes
    name: str = ""
    address: str = ""
    connected: bool = False
    live: bool = False
    last_sync: float | None = None  # wall clock seconds of the last completed round
    last_error: str | None = None
    failures: int = 0
    retry_at: float | None = None  # wall clock seconds of the next attempt after a failure
    pulled: int = 0
    pushed: int = 0
    received_live: int = 0
    pushes_left_to_peer: int = 0  # rounds whose push stopped: the peer was pulling itself
    remote_heads: dict[LogKey, int] = field(default_factory=dict)
    own_log_alarms: int = 0  # rounds in which the peer held more of our own log than we
    own_log_behind: dict[LogKey, tuple[int, int]] = field(default_factory=dict)  # the last
    received: int = 0  # records received from this peer (pulled or live), new or not
    duplicates: int = 0  # of those, the records this node held already
    feeds: list[LogKey] = field(default_factory=list)  # logs it feeds us live (its upstream)

    def took(self, received: int, duplicates: int) -> None:
        """Count records received from this peer, `duplicates` of them held already."""
        self.received += received
        self.duplicates += duplicates

    def as_json(self) -> dict[str, Any]:
        return {
            "node_id": format_node_id(self.node_id),
            "name": self.name,
            "address": self.address,
            "connected": self.connected,
            "live": self.live,
            "last_sync": self.last_sync,
            "last_error": self.last_error,
            "failures": self.failures,
            "retry_in": None if self.retry_at is None else max(0.0, self.retry_at - time.time()),
            "pulled": self.pulled,
            "pushed": self.pushed,
            "received_live": self.received_live,
            "received": self.received,
            "duplicates": self.duplicates,
            "feeds": [{"host": log.host.hex(), "tag": log.tag} for log in self.feeds],
            "pushes_left_to_peer": self.pushes_left_to_peer,
            "own_log_alarms": self.own_log_alarms,
            "own_log_behind": own_log_json(self.own_log_behind),
            "own_log_warning": (
                own_log_warning(self.own_log_behind) if self.own_log_alarms else None
            ),
        }


@dataclass(frozen=True, slots=True)
class LogStatus:
    """One log held: its length, head and whether fork evidence froze it."""

    log: LogKey
    next_idx: int
    head: bytes
    frozen: bool = False


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One pinned peer, and its link when a daemon runs."""

    node_id: bytes
    name: str = ""
    address: str = ""
    certificate: bool = False
    link: LinkState | None = None


@dataclass(frozen=True, slots=True)
class ViewsStatus:
    """Records the views applied, and those they passed over, by reason."""

    applied: int = 0
    undecryptable: int = 0
    unknown_version: int = 0
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class ForkStatus:
    """Fork evidence held: where, our record's hash, how many records conflict."""

    log: LogKey
    idx: int
    held: bytes
    offered: int
    detected_at: int


@dataclass(frozen=True, slots=True)
class Discovered:
    """A node announced on the LAN, pinned here or not."""

    node_id: bytes
    address: str
    name: str
    pinned: bool


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The running daemon: where it listens and how it runs."""

    pid: int
    listen: str
    tls: bool
    auto_sync: bool
    discovery: str
    discovered: tuple[Discovered, ...] = ()
    uptime_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Everything `peer status` shows."""

    node_id: bytes
    host: bytes
    name: str
    key_id: str | None
    logs: tuple[LogStatus, ...] = ()
    peers: tuple[PeerStatus, ...] = ()
    views: ViewsStatus = ViewsStatus()
    forks: tuple[ForkStatus, ...] = ()
    daemon: DaemonStatus | None = None
    keyring: int = 0  # older sync keys held (records of before a rotation open)
    devices: int = 0  # members of the roster; 0: not in one
    revoked: int = 0  # nodes the roster revoked

    def as_json(self) -> dict[str, Any]:
        """The document of `peer status --json` (ids and hashes as lowercase hex, node
        ids in their printed form); links and per-peer heads only from a daemon."""
        live = self.daemon is not None
        return {
            "node_id": format_node_id(self.node_id),
            "host": self.host.hex(),
            "name": self.name,
            "key_id": self.key_id,
            "keyring": self.keyring,
            "roster": {"devices": self.devices, "revoked": self.revoked},
            "logs": [self._log_json(log, live) for log in self.logs],
            "peers": [_peer_json(peer, live) for peer in self.peers],
            "views": {
                "applied": self.views.applied,
                "undecryptable": self.views.undecryptable,
                "unknown_version": self.views.unknown_version,
                "malformed": self.views.malformed,
            },
            "forks": [_fork_json(fork) for fork in self.forks],
            "daemon": None if self.daemon is None else _daemon_json(self.daemon),
        }

    def _log_json(self, log: LogStatus, live: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "host": log.log.host.hex(),
            "tag": log.log.tag,
            "next_idx": log.next_idx,
            "head": log.head.hex(),
            "frozen": log.frozen,
        }
        if live:
            entry["peers"] = {
                format_node_id(peer.node_id): peer.link.remote_heads[log.log]
                for peer in self.peers
                if peer.link is not None and log.log in peer.link.remote_heads
            }
        return entry


def _peer_json(peer: PeerStatus, live: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "node_id": format_node_id(peer.node_id),
        "name": peer.name,
        "address": peer.address,
        "certificate": peer.certificate,
    }
    if live:
        entry["link"] = None if peer.link is None else peer.link.as_json()
    return entry


def _fork_json(fork: ForkStatus) -> dict[str, Any]:
    return {
        "host": fork.log.host.hex(),
        "tag": fork.log.tag,
        "idx": fork.idx,
        "held": fork.held.hex(),
        "offered": fork.offered,
        "detected_at": fork.detected_at,
    }


def _daemon_json(daemon: DaemonStatus) -> dict[str, Any]:
    return {
        "pid": daemon.pid,
        "listen": daemon.listen,
        "tls": daemon.tls,
        "auto_sync": daemon.auto_sync,
        "discovery": daemon.discovery,
        "discovered": [
            {
                "node_id": format_node_id(found.node_id),
                "address": found.address,
                "name": found.name,
                "pinned": found.pinned,
            }
            for found in daemon.discovered
        ],
        "uptime_s": daemon.uptime_s,
    }
