"""Running a node on the network: serving its store, and syncing it with peers.

By default every connection is mutual TLS between pinned nodes (`peer peers add`).
Plaintext gRPC (`--insecure`) is allowed only on loopback addresses: nothing about who
talks to whom should cross a real network unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peer.addresses import join_host, split_address
from peer.client import ClientTls, PairingClient, PeerClient
from peer.codec.local import Appended
from peer.codec.wire import ConfirmJoin, JoinRequest
from peer.config import Config
from peer.crypto import SyncKey, sign_with_tls_key
from peer.discovery import Discovery, Found
from peer.errors import KeyFormatError, PeerError, PeerUnavailable, StoreError, UsageError
from peer.home import Serving
from peer.identity import fetch_certificate, format_node_id, parse_node_id
from peer.local_service import LocalServicer, start_local_server
from peer.mesh import Mesh, Schedule
from peer.node import Node
from peer.pairing import (
    Invitation,
    confirm_proof_message,
    join_proof_message,
    new_secret,
)
from peer.pairing_service import PairingServicer, start_pairing_server
from peer.records import LogKey
from peer.service.limits import Limits
from peer.service.server import RunningServer, start_server
from peer.store import TrustedPeer
from peer.sync import Progress, SyncSummary, sync_with
from peer.trust import Credentials

DEFAULT_LISTEN = "127.0.0.1:7417"
CERTIFICATE_POLL_S = 2.0
MIN_PING_INTERVAL_S = 10.0  # pings accepted from peers; half our keepalive if lower
VIEWS_DELAY_S = 0.2
MAX_UNPINNED_SHOWN = 32  # nodes seen on the LAN but not pinned, in `peer status`
log = logging.getLogger(__name__)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_interfaces(host: str) -> list[str]:
    """Announce on the address we listen on; on all interfaces for a wildcard."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    return [] if address.is_unspecified else [host]


def require_loopback(address: str) -> None:
    """Plaintext is only for this machine: refuse any non-loopback address."""
    host, _ = split_address(address)
    if not is_loopback(host):
        raise UsageError(
            f"--insecure is only allowed on a loopback address (127.0.0.1, ::1), not {host}"
        )


def credentials(node: Node) -> Credentials:
    return Credentials(node.identity.tls_key, node.identity.tls_certificate)


@dataclass(frozen=True)
class DaemonOptions:
    """How `peer serve` runs (from the config file, PEER_* variables and flags)."""

    listen: str = DEFAULT_LISTEN
    insecure: bool = False
    auto_sync: bool = True
    schedule: Schedule = field(default_factory=Schedule)
    limits: Limits = field(default_factory=Limits)
    discovery: bool = False
    interfaces: tuple[str, ...] = ()
    peers: tuple[TrustedPeer, ...] = ()  # pinned at start (the config's [[peers]])

    @classmethod
    def from_config(cls, config: Config) -> DaemonOptions:
        sync, limits = config.sync, config.limits
        return cls(
            listen=config.listen,
            insecure=config.insecure,
            auto_sync=sync.auto,
            schedule=Schedule(
                sync.interval,
                sync.jitter,
                sync.backoff_initial,
                sync.backoff_max,
                sync.batch,
                sync.live,
                sync.keepalive,
                sync.keepalive_timeout,
            ),
            limits=Limits(
                streams_per_caller=limits.streams_per_caller,
                max_batch=limits.max_batch,
                subscriber_queue=limits.subscriber_queue,
                rate=limits.rate,
                burst=limits.burst,
                min_ping_interval=min(MIN_PING_INTERVAL_S, sync.keepalive / 2),
            ),
            discovery=config.discovery.enabled,
            interfaces=config.discovery.interfaces,
            peers=tuple(TrustedPeer(p.node_id, p.name, p.address or "") for p in config.peers),
        )


class Daemon:
    """A node on the network: sync server, pairing server, local API, links to peers."""

    def __init__(self, node: Node, options: DaemonOptions) -> None:
        self.node = node
        self.options = options
        self.mesh = Mesh(node.store, options.schedule, self._connect, node.identity.host)
        self.started_at = time.time()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.sync_address = ""
        self.discovery: Discovery | None = None
        self.running: RunningServer | None = None
        self.discovery_note = "off"

    @property
    def node_id(self) -> str:
        return format_node_id(self.node.identity.node_id)

    async def start(self) -> RunningServer:
        """Start serving and syncing; everything started is stopped by `stop`."""
        options, node = self.options, self.node
        split_address(options.listen)
        if options.insecure:
            require_loopback(options.listen)
        tls = None if options.insecure else credentials(node)
        running = await start_server(node.store, self.node_id, options.listen, options.limits, tls)
        self.running = running
        self._closers.append(lambda: running.stop(grace=2.0))
        host, _ = split_address(options.listen)
        self.sync_address = join_host(host, running.port)
        pairing_address = await self._start_pairing(running, tls, host)
        local = await start_local_server(
            node.home.root,
            node.store,
            running.feed,
            self.node_id,
            LocalServicer(self.append, self.status_json),
            options.limits,
        )
        self._closers.append(local.stop)
        node.home.record_serving(
            Serving(self.sync_address, pairing_address, str(local.socket), os.getpid())
        )
        await self._pin_configured_peers()
        if options.auto_sync:
            if running.servicer is not None:
                running.servicer.on_contact = self.mesh.contacted
                self.mesh.taking = running.servicer.is_taking
            await self.mesh.start()
            self._closers.append(self.mesh.close)
        else:  # the links would read them; without links, read them here
            learner = asyncio.create_task(self._learn_certificates(), name="certificates")
            self._closers.append(lambda: _cancel(learner))
        await self._start_discovery(host, running.port)
        views = asyncio.create_task(self._keep_views_current(), name="views")
        self._closers.append(lambda: _cancel(views))
        return running

    async def _keep_views_current(self) -> None:
        """Apply what arrives (synced or written) to the kv and history views soon after,
        so the first read after a large sync does not pay for it."""
        changed = asyncio.Event()
        stop_listening = self.node.store.on_change(changed.set)
        try:
            while True:
                await changed.wait()
                await asyncio.sleep(VIEWS_DELAY_S)  # let a burst of batches land first
                changed.clear()
                try:
                    await self.node.views.catch_up()
                except PeerError as exc:
                    log.warning("views: %s", exc)
        finally:
            stop_listening()

    async def _pin_configured_peers(self) -> None:
        """The config's [[peers]]: pinned (or updated) before anything connects."""
        pinned = {p.node_id: p for p in await self.node.store.peers.all()}
        for peer in self.options.peers:
            known = pinned.get(peer.node_id)
            name = peer.name or (known.name if known else "")
            address = peer.address or (known.address if known else "")
            if known is None or (known.name, known.address) != (name, address):
                certificate = known.certificate if known else None
                await self.node.store.peers.add(
                    TrustedPeer(peer.node_id, name, address, certificate)
                )

    async def _learn_certificates(self) -> None:
        """Read the certificates of peers pinned while they were offline, so that their
        calls pass our TLS (which admits only certificates it knows)."""
        while True:
            for peer in await self.node.store.peers.all():
                if peer.certificate is None and peer.address:
                    with contextlib.suppress(PeerError):
                        await self._learn_certificate(peer, peer.address)
            await asyncio.sleep(CERTIFICATE_POLL_S)

    async def _learn_certificate(self, peer: TrustedPeer, address: str) -> bytes:
        """Read and remember a pinned peer's certificate, and admit it at once (the
        server would otherwise notice the new certificate only at its next poll)."""
        certificate = await fetch_pinned(self.node, peer, address)
        if self.running is not None:
            await self.running.refresh_trust()
        return certificate

    async def _start_discovery(self, host: str, port: int) -> None:
        """Announce and browse on the LAN, unless off or only reachable on loopback."""
        if not self.options.discovery:
            return
        if is_loopback(host) or self.options.insecure:
            self.discovery_note = "off: this node listens on loopback only"
            return
        interfaces = list(self.options.interfaces) or _listen_interfaces(host)
        self.discovery = Discovery(
            self.node.identity.node_id,
            port,
            self.node.identity.name,
            interfaces or None,
            self._found,
        )
        await self.discovery.start()
        self._closers.append(self.discovery.close)
        self.discovery_note = "on"

    def _found(self, found: Found) -> None:
        self.mesh.found(found.node_id, found.address)

    async def _start_pairing(
        self, running: RunningServer, tls: Credentials | None, host: str
    ) -> str:
        if tls is None:
            return ""
        sync = self.node.identity.sync
        servicer = PairingServicer(
            self.node.store,
            self.node.identity.name,
            self.node.identity.node_id,
            sync.to_text() if sync else None,
            running.refresh_trust,
        )
        pairing, port = await start_pairing_server(servicer, tls, join_host(host, 0))
        self._closers.append(lambda: pairing.stop(1.0))
        return join_host(host, port)

    async def stop(self) -> None:
        """Stop in reverse order of starting: links, local API, pairing, server."""
        while self._closers:
            await self._closers.pop()()

    async def append(self, tag: str, items: list[bytes]) -> Appended:
        records = await self.node.append(tag, items)
        first = records[0]
        return Appended(
            first.host, tag, first.idx, len(records), tuple(r.timestamp for r in records)
        )

    async def _connect(self, peer: TrustedPeer, address: str) -> PeerClient:
        certificate = peer.certificate or await self._learn_certificate(peer, address)
        schedule = self.options.schedule
        return PeerClient(
            address,
            tls=ClientTls(credentials(self.node), certificate),
            keepalive=(schedule.keepalive, schedule.keepalive_timeout),
        )

    async def status(self) -> dict[str, Any]:
        """`peer status` of this node, with what the daemon knows live of each peer."""
        status = await self.node.status()
        links = {format_node_id(s.node_id): s for s in self.mesh.states()}
        for peer in status["peers"]:
            state = links.get(peer["node_id"])
            peer["link"] = state.as_json() if state is not None else None
        for entry in status["logs"]:
            log = LogKey(bytes.fromhex(entry["host"]), entry["tag"])
            entry["peers"] = {
                node_id: state.remote_heads[log]
                for node_id, state in links.items()
                if log in state.remote_heads
            }
        status["daemon"] = {
            "pid": os.getpid(),
            "listen": self.sync_address,
            "tls": not self.options.insecure,
            "auto_sync": self.options.auto_sync,
            "discovery": self.discovery_note,
            "discovered": self._discovered({p["node_id"] for p in status["peers"]}),
            "uptime_s": round(time.time() - self.started_at, 3),
        }
        return status

    def _discovered(self, pinned: set[str]) -> list[dict[str, Any]]:
        """The nodes announced on the LAN, each marked pinned or not. The unpinned ones
        are the nearest thing to a list of who would like to sync with us (a refused
        handshake happens inside grpc's TLS, before we could learn who it was); the
        last MAX_UNPINNED_SHOWN of them are listed, so the status stays bounded."""
        shown: list[dict[str, Any]] = []
        unpinned = 0
        for found in reversed(self.discovery.found() if self.discovery else []):
            node_id = format_node_id(found.node_id)
            if node_id not in pinned:
                unpinned += 1
                if unpinned > MAX_UNPINNED_SHOWN:
                    continue
            entry = {"node_id": node_id, "address": found.address, "name": found.name}
            shown.append({**entry, "pinned": node_id in pinned})
        return shown[::-1]

    async def status_json(self) -> str:
        return json.dumps(await self.status(), sort_keys=True)


async def serve(
    node: Node, options: DaemonOptions, on_ready: Callable[[RunningServer], None]
) -> None:
    """Serve the node until SIGINT or SIGTERM, then stop gracefully (exit 0)."""
    with node.home.lock_serving():
        daemon = Daemon(node, options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            running = await daemon.start()
            on_ready(running)
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await daemon.stop()


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
            address, tls = await _connection(node, target, insecure)
            async with PeerClient(address, tls=tls) as peer:
                summary = await sync_with(
                    node.store,
                    peer,
                    batch=batch,
                    progress=progress(address),
                    own_host=node.identity.host,
                )
            results.append(PeerResult(address, summary))
        except PeerError as exc:
            results.append(PeerResult(_label(target), error=str(exc)))
    return results


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
    return target.address, ClientTls(credentials(node), certificate)


async def read_certificate(peer: TrustedPeer, address: str = "") -> bytes:
    """A peer's certificate, read from its address and checked against its pin."""
    return await fetch_certificate(address or peer.address, peer.node_id)


async def fetch_pinned(node: Node, peer: TrustedPeer, address: str = "") -> bytes:
    """Read a pinned peer's certificate from its address and remember it."""
    certificate = await read_certificate(peer, address)
    await node.store.peers.add(TrustedPeer(peer.node_id, certificate=certificate))
    return certificate


async def _trusted_targets(node: Node, targets: Sequence[str]) -> list[str | TrustedPeer]:
    """The pinned peers named by address, node id or name (all with an address if none)."""
    peers = await node.store.peers.all()
    if not targets:
        chosen = [p for p in peers if p.address]
        if not chosen:
            raise UsageError(
                "no peer to sync with: add one with `peer peers add NODE_ID HOST:PORT`"
            )
        return list(chosen)
    return [find_peer(peers, target) for target in targets]


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
    await node.store.invitations.create(invitation.secret_hash, relay, expires * 10**9)
    return invitation


async def join(node: Node, invitation: Invitation) -> str:
    """Pair with the inviter: get pinned by it, pin it, and take the sync key if offered.

    Nothing is pinned on either side before this node accepts the inviter's answer: an
    answer it refuses (a damaged key, a key that does not fit the records this node
    wrote) frees the invitation on the inviter instead (docs/protocol.md §1.1).
    """
    if invitation.expires_at < time.time():
        raise UsageError("this invitation has expired: ask for a new one (`peer invite`)")
    certificate = await fetch_certificate(invitation.pairing_address, invitation.node_id)
    own = credentials(node)
    proof = sign_with_tls_key(own.key, join_proof_message(invitation.secret, invitation.node_id))
    request = JoinRequest(invitation.secret, own.certificate, node.identity.name, proof)
    async with PairingClient(invitation.pairing_address, certificate) as pairing:
        key_text, name = await pairing.join(request)
        try:
            key = await _acceptable_key(node, key_text)
        except PeerError:
            with contextlib.suppress(PeerError):
                await pairing.confirm(_verdict(node, invitation, own, accepted=False))
            raise
        await _confirm(pairing, _verdict(node, invitation, own, accepted=True))
    if key is not None:
        await node.import_sync_key(key)
    await node.store.peers.add(
        TrustedPeer(invitation.node_id, name, invitation.address, certificate)
    )
    return name


async def _acceptable_key(node: Node, key_text: str) -> SyncKey | None:
    """The sync key the inviter sent (None for a relay), if this node can take it."""
    if not key_text:
        return None
    try:
        key = SyncKey.from_text(key_text)
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
