"""`peer sync`: one session with each named (or every pinned) peer, now, outside any
daemon; one failing peer does not stop the others."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peer.addresses import require_loopback
from peer.client import ClientTls, PeerClient
from peer.errors import PeerError, PeerRefused, PeerUnavailable, UsageError
from peer.identity import format_node_id
from peer.introduce import introduce
from peer.node import Node
from peer.peers import fetch_pinned, find_peer
from peer.store import TrustedPeer
from peer.sync import Progress, SyncSummary, sync_with


@dataclass
class PeerResult:
    """The outcome of syncing with one peer: a summary, or the error in words."""

    target: str
    summary: SyncSummary | None = None
    error: str | None = None


async def sync_peers(
    node: Node,
    targets: Sequence[str],
    batch: int,
    progress: Callable[[str], Progress],
    insecure: bool = False,
) -> list[PeerResult]:
    """Sync with each peer in turn; one failing peer does not stop the others."""
    results: list[PeerResult] = []
    for target in targets if insecure else await _trusted_targets(node, targets):
        try:
            results.append(await _session(node, target, batch, progress, insecure))
        except (PeerRefused, PeerUnavailable) as exc:
            # refused at the handshake? the peer may have pinned us by id alone: introduce
            # ourselves on its pairing port, and try once more if it took our certificate
            if isinstance(target, str) or await introduce(node, target):
                results.append(PeerResult(_label(target), error=str(exc)))
                continue
            try:
                results.append(await _session(node, target, batch, progress, insecure))
            except PeerError as again:
                results.append(PeerResult(_label(target), error=str(again)))
        except PeerError as exc:
            results.append(PeerResult(_label(target), error=str(exc)))
    return results


async def _session(
    node: Node,
    target: str | TrustedPeer,
    batch: int,
    progress: Callable[[str], Progress],
    insecure: bool,
) -> PeerResult:
    address, tls = await _connection(node, target, insecure)
    async with PeerClient(address, tls=tls) as peer:
        summary = await sync_with(
            node.store,
            peer,
            batch=batch,
            progress=progress(address),
            own_host=node.identity.host,
        )
    return PeerResult(address, summary)


def _label(target: str | TrustedPeer) -> str:
    if isinstance(target, str):
        return target
    return target.address or target.name or format_node_id(target.node_id)


async def _connection(
    node: Node, target: str | TrustedPeer, insecure: bool
) -> tuple[str, ClientTls | None]:
    if isinstance(target, str):
        require_loopback(target)
        return target, None
    if not target.address:
        raise UsageError(f"no address known for {_label(target)}: `peer peers add ID HOST:PORT`")
    certificate = target.certificate or await fetch_pinned(node, target)
    return target.address, ClientTls(node.credentials, certificate)


async def _trusted_targets(node: Node, targets: Sequence[str]) -> list[str | TrustedPeer]:
    """The pinned peers named by address, node id or name (all with an address if none)."""
    peers = await node.trust.all()
    if not targets:
        chosen = [p for p in peers if p.address]
        if not chosen:
            raise UsageError(
                "no peer to sync with: add one with `peer peers add NODE_ID HOST:PORT`"
            )
        return list(chosen)
    return [find_peer(peers, target) for target in targets]
