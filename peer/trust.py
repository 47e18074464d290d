"""Who may talk to this node: the pinned peers, as TLS and the handlers see them.

TLS checks that a client's certificate chains to a pinned certificate; that is not
identity (a certificate *signed by* a pinned key passes too [M6]), so every call is
also checked here by the SHA-256 of the certificate the caller presented. The set is
swapped whole when the trust list changes, so the TLS thread and the handlers never
see half an update, and a running server follows `peer peers add/remove` at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from peer.identity import node_id_of
from peer.store import TrustedPeer


@dataclass(frozen=True, slots=True)
class Credentials:
    """A node's TLS key and certificate (PEM)."""

    key: bytes
    certificate: bytes


class Trust:
    """The current pins: node id -> certificate, with a version for the TLS layer."""

    def __init__(self, own: Credentials) -> None:
        self.own = own
        self._lock = threading.Lock()
        self._certificates: dict[bytes, bytes] = {}
        self._ids: set[bytes] = set()
        self.version = 0

    def update(self, peers: Iterable[TrustedPeer]) -> set[bytes]:
        """Replace the pins; returns the node ids that are no longer trusted."""
        peers = list(peers)
        certificates = {p.node_id: p.certificate for p in peers if p.certificate}
        ids = {p.node_id for p in peers}
        with self._lock:
            removed = self._ids - ids
            changed = certificates != self._certificates
            self._certificates = certificates
            self._ids = ids
            if changed:
                self.version += 1
        return removed

    def admits(self, node_id: bytes) -> bool:
        with self._lock:
            return node_id in self._ids

    def roots(self) -> bytes:
        """The pinned certificates for TLS; our own when there are none, so that an
        empty trust list admits nobody (not the system's certificate authorities)."""
        with self._lock:
            pems = list(self._certificates.values())
        return b"".join(pems) or self.own.certificate


def caller_node_id(certificate_pem: bytes | None) -> bytes | None:
    """The node id of the certificate a caller presented, if any."""
    if not certificate_pem:
        return None
    return node_id_of(certificate_pem)
