"""The trust list as the CLI and the daemon change it: pin a node (reading its
certificate when it answers, checked against the id), find one by address, id or name,
and remember a certificate read at the first contact."""

from __future__ import annotations

from collections.abc import Sequence

from peer.addresses import split_address
from peer.errors import PeerUnavailable, UsageError
from peer.identity import fetch_certificate, parse_node_id
from peer.names import check_name
from peer.node import Node
from peer.store import TrustedPeer


async def pin(
    node: Node, node_id: bytes, name: str = "", address: str = ""
) -> tuple[TrustedPeer, str]:
    """Pin a node; with an address, check the pin now if the node answers (else at the
    first contact). Returns the pin and, if the node did not answer, why."""
    check_name(name)
    if address:
        split_address(address)
    pinned, offline = TrustedPeer(node_id, name, address), ""
    if address:
        try:
            certificate = await read_certificate(pinned)
            pinned = TrustedPeer(node_id, name, address, certificate)
        except PeerUnavailable as exc:
            offline = str(exc)
    await node.trust.add(pinned)
    return pinned, offline


async def unpin(node: Node, target: str) -> TrustedPeer:
    """Unpin the node named by address, id or name; UsageError if none matches."""
    peer = find_peer(await node.trust.all(), target)
    await node.trust.remove(peer.node_id)
    return peer


async def read_certificate(peer: TrustedPeer, address: str = "") -> bytes:
    """A peer's certificate, read from its address and checked against its pin."""
    return await fetch_certificate(address or peer.address, peer.node_id)


async def fetch_pinned(node: Node, peer: TrustedPeer, address: str = "") -> bytes:
    """Read a pinned peer's certificate from its address and remember it."""
    certificate = await read_certificate(peer, address)
    await node.trust.add(TrustedPeer(peer.node_id, certificate=certificate))
    return certificate


def find_peer(peers: Sequence[TrustedPeer], target: str) -> TrustedPeer:
    """A pinned peer by address, node id or name; UsageError if none matches."""
    for peer in peers:
        if target in (peer.address, peer.name):
            return peer
    try:
        node_id = parse_node_id(target)
    except UsageError:
        node_id = b""
    for peer in peers:
        if peer.node_id == node_id:
            return peer
    raise UsageError(
        f"{target} is not a trusted peer: pin it first with `peer peers add NODE_ID HOST:PORT`"
    )
