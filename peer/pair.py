"""The two ends of pairing as the CLI runs them: `invite` makes a code that the running
daemon honours; `join` redeems one (docs/protocol.md §1.1), in a new home or an existing
one, and leaves nothing behind when it fails. The codes themselves: `peer.pairing`; the
inviter's server: `peer.service.pairing`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass

from peer import devices
from peer.addresses import join_host, split_address
from peer.client import PairingClient
from peer.codec.pairing import ConfirmJoin, JoinRequest
from peer.crypto import SyncKey, sign_with_tls_key
from peer.errors import KeyFormatError, PeerError, PeerUnavailable, StoreError, UsageError
from peer.home import Home
from peer.identity import fetch_certificate
from peer.node import Node
from peer.pairing import Invitation, confirm_proof_message, join_proof_message, new_secret
from peer.store import TrustedPeer
from peer.trust import Credentials

log = logging.getLogger(__name__)


async def invite(node: Node, relay: bool, ttl_s: int, address: str | None) -> Invitation:
    """A one-time invitation that the running `peer serve` of this home honours."""
    serving = node.home.serving()
    if serving is None or not serving.pairing_address:
        raise UsageError(
            "start `peer serve` (with TLS) first: the invitation names where it listens"
        )
    sync_address, pairing_address = serving.address, serving.pairing_address
    if address:
        host, _ = split_address(address)
        pairing_address = join_host(host, split_address(pairing_address)[1])
        sync_address = address
    expires = int(time.time()) + ttl_s
    invitation = Invitation(
        node.identity.node_id, sync_address, pairing_address, new_secret(), expires, relay
    )
    await node.invitations.create(invitation.secret_hash, relay, expires * 10**9)
    return invitation


@dataclass(frozen=True, slots=True)
class Joined:
    """What `peer join` did: the inviter's name, whether a sync key came, and the
    modes it tightened in the home (to tell the user)."""

    name: str
    sync_key: bool
    tightened: list[str]


async def join_home(home: Home, invitation: Invitation, name: str = "") -> Joined:
    """Join in `home`: a new home is made first (a relay until the key arrives) and
    removed again if the join fails, so a failed join leaves nothing behind."""
    created = not home.exists() and not home.root.exists()
    try:
        if home.exists():
            node = await Node.open(home)
        else:
            node = await Node.init(home, name, relay=True)  # the key comes from the inviter
        async with node:
            inviter = await join(node, invitation)
            return Joined(inviter, node.identity.sync is not None, node.home.tightened)
    except BaseException:
        if created:  # a failed join leaves no half-made home behind
            shutil.rmtree(home.root, ignore_errors=True)
        raise


async def join(node: Node, invitation: Invitation) -> str:
    """Pair with the inviter: get pinned by it, pin it, and take the sync key if offered.

    Nothing is pinned on either side before this node accepts the inviter's answer: an
    answer it refuses (a damaged key, a key that does not fit the records this node
    wrote) frees the invitation on the inviter instead (docs/protocol.md §1.1).
    """
    if invitation.expires_at < time.time():
        raise UsageError("this invitation has expired: ask for a new one (`peer invite`)")
    certificate = await fetch_certificate(invitation.pairing_address, invitation.node_id)
    own = node.credentials
    proof = sign_with_tls_key(own.key, join_proof_message(invitation.secret, invitation.node_id))
    request = JoinRequest(invitation.secret, own.certificate, node.identity.name, proof)
    async with PairingClient(invitation.pairing_address, certificate) as pairing:
        key_text, name, older = await pairing.join(request)
        try:
            key = await _acceptable_key(node, key_text, older)
        except PeerError:
            with contextlib.suppress(PeerError):
                await pairing.confirm(_verdict(node, invitation, own, accepted=False))
            raise
        await _confirm(pairing, _verdict(node, invitation, own, accepted=True))
    if key is not None:
        await node.import_sync_key(key)
    await node.trust.add(TrustedPeer(invitation.node_id, name, invitation.address, certificate))
    try:  # the joiner's half of the pair of adds that links it into the roster
        await devices.record_join(node, certificate, relay=False, name=name, gave_key=False)
    except PeerError as exc:
        log.warning("the inviter was not added to this node's roster: %s", exc)
    return name


async def _acceptable_key(node: Node, key_text: str, older: list[str]) -> SyncKey | None:
    """The sync key the inviter sent (None for a relay), holding the older keys of its
    keyring, if this node can take it."""
    if not key_text:
        return None
    try:
        current = SyncKey.from_text(key_text)
        key = SyncKey(current.secret, older=tuple(SyncKey.from_text(text) for text in older))
    except KeyFormatError as exc:
        raise UsageError("the inviting node sent a damaged sync key; nothing was paired") from exc
    await node.check_sync_key(key)
    return key


def _verdict(node: Node, invitation: Invitation, own: Credentials, accepted: bool) -> ConfirmJoin:
    message = confirm_proof_message(invitation.secret, invitation.node_id, accepted)
    proof = sign_with_tls_key(own.key, message)
    return ConfirmJoin(invitation.secret, node.identity.node_id, accepted, proof)


async def _confirm(pairing: PairingClient, verdict: ConfirmJoin, attempts: int = 2) -> None:
    """Accept the answer; tried twice, since ConfirmJoin is idempotent for its joiner
    and a lost answer would otherwise leave the inviter alone in pinning us."""
    for attempt in range(attempts):
        try:
            await pairing.confirm(verdict)
            return
        except (PeerUnavailable, StoreError):  # UNAVAILABLE: its store may fail it, too
            if attempt == attempts - 1:
                raise
