"""A person's devices as one roster (docs/protocol.md §14): writing its events to this
node's `peer.roster` log, reading everyone's, and applying the result to this node's
trust list and keyring.

- pair once: both ends of a join add each other; every member pins every other;
- revoke once: a revocation (and the key rotation that goes with it) unpins the revoked
  node on every member that receives it, and its open streams are cut with the pin;
- rotate: a new sync key wrapped for each device's X25519 key; the old ones stay in
  the keyring, so every record still opens.

Pins outside the roster (another person's relay, say) are left as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from peer.crypto import (
    ROSTER_KEY,
    Author,
    SyncKey,
    open_record,
    record_hash,
    unwrap_sync_key,
    wrap_sync_key,
)
from peer.errors import CryptoError, PeerError, ProtocolError, UsageError
from peer.identity import certificate_der, format_node_id, parse_node_id
from peer.node import Node
from peer.roster import (
    DEVICE,
    NO_KEY,
    RELAY,
    ROSTER_TAG,
    Add,
    Body,
    Device,
    Event,
    Revoke,
    Roster,
    Rotate,
    decode,
    encode,
    fold,
    new_card,
)
from peer.status import NodeStatus
from peer.store import TrustedPeer

log = logging.getLogger(__name__)
READ_CHUNK = 1000


async def events(node: Node) -> list[Event]:
    """Every roster event this node holds; records that are not events are skipped."""
    found: list[Event] = []
    for host, head in (await node.store.heads_of(ROSTER_TAG)).items():
        start = 0
        while start < head.next_idx:
            records = await node.store.read_range(host, ROSTER_TAG, start, READ_CHUNK)
            if not records:
                break
            for record in records:
                with contextlib.suppress(CryptoError, ProtocolError):
                    body = decode(open_record(ROSTER_KEY, record))
                    found.append(
                        Event(host, record.idx, record.timestamp, record_hash(record), body)
                    )
            start = records[-1].idx + 1
    return found


async def roster(node: Node) -> Roster:
    """The roster as this node sees it."""
    return fold(await events(node), node.identity.node_id)


async def with_roster(node: Node, status: NodeStatus) -> NodeStatus:
    """`status` with the roster's counts (none for a node in no roster)."""
    if node.identity.host not in await node.store.heads_of(ROSTER_TAG):
        return status
    current = await roster(node)
    devices, revoked = len(current.members), len(current.revoked)
    return dataclasses.replace(status, devices=devices, revoked=revoked)


def role_of(node: Node) -> str:
    return RELAY if node.identity.sync is None else DEVICE


async def write(node: Node, bodies: Sequence[Body]) -> None:
    """Append events to this node's roster log (a relay writes them too: the roster's
    key is public)."""
    author = Author(node.identity.signing, ROSTER_KEY)
    await node.store.append(author, ROSTER_TAG, [encode(body) for body in bodies])


async def ensure_card(node: Node, address: str = "", create: bool = True) -> bool:
    """Write this node's card (and its own add, the first time) unless the roster
    already shows it as it is; True if it wrote. Without `create`, only a node that
    is in a roster already (it paired, or used `peer devices`) writes."""
    if not create and node.identity.host not in await node.store.heads_of(ROSTER_TAG):
        return False
    current = await roster(node)
    own = current.devices.get(node.identity.node_id)
    role = role_of(node)
    encryption = b"" if role == RELAY else node.home.encryption_key().public_key
    name = node.identity.name
    if own is not None and (own.encryption_key, own.address, own.name) == (
        encryption,
        address or own.address,
        name or own.name,
    ):
        return False
    card = new_card(
        node.identity.tls_key,
        node.identity.tls_certificate,
        node.identity.signing.public_key,
        encryption,
        role,
        name,
        address or (own.address if own else ""),
    )
    bodies: list[Body] = [card]
    if own is None:
        bodies.append(Add(certificate_der(node.identity.tls_certificate), role, name))
    await write(node, bodies)
    return True


async def record_join(
    node: Node,
    certificate: bytes,
    relay: bool,
    name: str,
    gave_key: bool = True,
    address: str = "",
) -> None:
    """This node paired with another (either end): add it to the roster. The key id
    says which sync key the newcomer got from this node with the pairing (none for a
    relay, nor when the newcomer is the inviter). `address`: where this node serves."""
    await ensure_card(node, address)
    sync = node.identity.sync
    key_id = sync.key_id if sync is not None and gave_key and not relay else NO_KEY
    role = RELAY if relay else DEVICE
    await write(node, [Add(certificate_der(certificate), role, name, key_id)])


def find(current: Roster, target: str) -> Device:
    """A device of the roster by name or node id; UsageError if none matches."""
    for device in current.devices.values():
        if device.name and device.name == target:
            return device
    with contextlib.suppress(UsageError):
        wanted = parse_node_id(target)
        if wanted in current.devices:
            return current.devices[wanted]
    raise UsageError(f"{target} is not a device of this roster: see `peer devices`")


async def revoke(node: Node, target: str, reason: str = "") -> tuple[Device, SyncKey | None]:
    """Revoke a device, and rotate the key if this node holds it (else the next device
    that does rotates it). Returns the device and the new key."""
    current = await roster(node)
    device = find(current, target)
    if device.node_id in current.revoked:
        raise UsageError(f"{device.name or format_node_id(device.node_id)} is already revoked")
    seen = 0
    if device.host:
        heads = await node.store.heads_of(ROSTER_TAG)
        seen = heads[device.host].next_idx if device.host in heads else 0
    event: list[Body] = [Revoke(device.node_id, seen, reason)]
    new = None
    if node.identity.sync is not None:  # in the same append: no device sees one alone
        new, rotation = _rotation(node, current, leaving=device.node_id)
        event.append(rotation)
    await write(node, event)
    if new is not None and node.identity.sync is not None:
        node.use_sync_key(node.identity.sync.rotated_to(new))
    await apply(node)
    return device, new


async def rotate(node: Node) -> SyncKey:
    """Draw a new sync key, wrap it for every device of the roster, and use it here."""
    sync = node.identity.sync
    if sync is None:
        raise UsageError("a relay holds no sync key, so it cannot rotate one")
    new, rotation = _rotation(node, await roster(node))
    await write(node, [rotation])
    node.use_sync_key(sync.rotated_to(new))
    return new


def _rotation(node: Node, current: Roster, leaving: bytes = b"") -> tuple[SyncKey, Rotate]:
    """A new key and its rotation event, wrapped for every device member but `leaving`."""
    recipients = {
        n: d.encryption_key
        for n, d in current.members.items()
        if d.role == DEVICE and d.encryption_key and n != leaving
    }
    recipients[node.identity.node_id] = node.home.encryption_key().public_key
    new = SyncKey.generate()
    ephemeral, wrapped = wrap_sync_key(new, recipients)
    return new, Rotate(new.key_id, ephemeral, tuple(sorted(wrapped.items())))


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying the roster changed here."""

    pinned: list[bytes]
    unpinned: list[bytes]
    key: SyncKey | None  # the key this node switched to, if it did
    rotated: SyncKey | None  # the key this node drew, if the roster needed one
    needs_rotation: bool = False  # and it holds the key to do it: see `repair`


async def apply(node: Node, repair: bool = False) -> Applied:
    """Pin every member, unpin every revoked node, and take the roster's key. With
    `repair` (the daemon, a while after it saw the need), a device that holds the key
    rotates it when the roster needs a new one (a revocation by a node without the key,
    or a device that did not get the current key)."""
    current = await roster(node)
    own = node.identity.node_id
    if own in current.revoked:
        return Applied([], [], None, None)  # a revoked node keeps what it has
    pinned = await _pin_members(node, current)
    unpinned = await _unpin_revoked(node, current)
    key = _take_key(node, current)
    sync = node.identity.sync
    can = sync is not None and own in current.members
    can = can and (current.key_id is None or (sync is not None and sync.key_id == current.key_id))
    needs = current.needs_rotation and can
    rotated = await rotate(node) if needs and repair else None
    return Applied(pinned, unpinned, key, rotated, needs and rotated is None)


async def _pin_members(node: Node, current: Roster) -> list[bytes]:
    pins = {p.node_id: p for p in await node.trust.all()}
    pinned: list[bytes] = []
    for node_id, device in current.members.items():
        if node_id == node.identity.node_id:
            continue
        known = pins.get(node_id)
        pem = _pem(device.certificate)
        if known is None or known.certificate is None or (not known.address and device.address):
            name = device.name if known is None or not known.name else ""
            await node.trust.add(TrustedPeer(node_id, name, device.address, pem))
            pinned.append(node_id)
    return pinned


async def _unpin_revoked(node: Node, current: Roster) -> list[bytes]:
    pins = {p.node_id for p in await node.trust.all()}
    unpinned = []
    for node_id in current.revoked & pins:
        await node.trust.remove(node_id)
        unpinned.append(node_id)
    return unpinned


def _take_key(node: Node, current: Roster) -> SyncKey | None:
    """Switch to the roster's key if it was wrapped for this device."""
    sync, winner = node.identity.sync, current.current
    if sync is None or winner is None or not isinstance(winner.body, Rotate):
        return None
    body = winner.body
    if sync.key_id == body.key_id:
        return None
    held = sync.find(body.key_id.hex())
    if held is not None:  # a key we had: make it current again
        node.use_sync_key(sync.rotated_to(held))
        return held
    wrapped = dict(body.wrapped).get(node.identity.node_id)
    if wrapped is None:
        return None
    try:
        key = unwrap_sync_key(
            node.home.encryption_key(), body.ephemeral, body.key_id, node.identity.node_id, wrapped
        )
    except PeerError as exc:
        log.warning("the roster's key does not open here: %s", exc)
        return None
    node.use_sync_key(sync.rotated_to(key))
    return key


def _pem(der: bytes) -> bytes:
    import ssl

    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")
