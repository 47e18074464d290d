"""Introductions (docs/protocol.md §1.2): a node pinned by id alone, on another node,
hands that node its certificate on the pairing port, so that its mutual-TLS calls pass
there without an address, a LAN or a pairing code. Harmless to try: a node that does
not wait for this certificate answers one fixed refusal, and a certificate is stored
only when its SHA-256 is a pinned id (so anyone may carry it)."""

from __future__ import annotations

from peer.addresses import join_host, split_address
from peer.client import PairingClient
from peer.errors import PeerError
from peer.node import Node
from peer.peers import read_certificate
from peer.store import TrustedPeer


def pairing_address_of(address: str) -> str:
    """Where a node at `address` serves pairing and introductions: the next port (a
    daemon takes it when it is free; docs/protocol.md §1.2)."""
    host, port = split_address(address)
    return join_host(host, port + 1)


async def introduce(node: Node, peer: TrustedPeer) -> str:
    """Hand our certificate to a pinned peer at its address, for the case where it
    pinned our id alone; returns why not, or "" once it took it (or had it)."""
    if not peer.address:
        return "no address"
    try:
        certificate = peer.certificate or await read_certificate(peer)
        async with PairingClient(pairing_address_of(peer.address), certificate) as pairing:
            await pairing.introduce(node.credentials.certificate)
    except PeerError as exc:
        return str(exc)
    return ""
