"""Running a node on the network: serving its store, and syncing it with peers.

By default every connection is mutual TLS between pinned nodes (`peer peers add`).
Plaintext gRPC (`--insecure`) is allowed only on loopback addresses: nothing about who
talks to whom should cross a real network unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from peer import devices
from peer.addresses import is_loopback, join_host, split_address
from peer.apps.history import TAG as HISTORY_TAG
from peer.apps.history import encode_create
from peer.client import ClientTls, PeerClient
from peer.commit import GroupCommit
from peer.config import Config
from peer.crypto import ROSTER_KEY
from peer.discovery import Discovery, Found
from peer.errors import PeerError, UsageError
from peer.handoff import handoff_path
from peer.home import Serving
from peer.identity import format_node_id
from peer.introduce import introduce
from peer.mesh import Mesh
from peer.node import Node
from peer.peers import fetch_pinned
from peer.roster import ROSTER_TAG
from peer.service.handoff import start_handoff_server
from peer.service.local import LocalServicer, start_local_server
from peer.service.pairing import PairingServicer, start_pairing_server
from peer.service.server import RunningServer, start_server
from peer.settings import MIN_PING_INTERVAL_S, Limits
from peer.status import DaemonStatus, Discovered, NodeStatus
from peer.store import HistoryEntry, TrustedPeer
from peer.trust import Credentials
from peer.watch import StoreWatcher

CERTIFICATE_POLL_S = 2.0
VIEWS_DELAY_S = 0.2
COMPACT_PAUSE_S = 0.01  # between two compaction steps (each a transaction of tens of ms)
INTRODUCE_EVERY_S = 60.0  # a failing link introduces this node at most this often
REPAIR_DELAY_S = 2.0  # before a daemon rotates a key the roster needs (plus up to as much)
MAX_UNPINNED_SHOWN = 32  # nodes seen on the LAN but not pinned, in `peer status`
log = logging.getLogger(__name__)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _listen_interfaces(host: str) -> list[str]:
    """Announce on the address we listen on; on all interfaces for a wildcard."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    return [] if address.is_unspecified else [host]


def served_limits(config: Config) -> Limits:
    """The config's limits, accepting pings from peers as often as half our own
    keepalive when that is more often than usual: peers are configured like us, and
    their pings would otherwise count as strikes."""
    floor = min(MIN_PING_INTERVAL_S, config.sync.keepalive / 2)
    return dataclasses.replace(config.limits, min_ping_interval=floor)


class Daemon:
    """A node on the network: sync server, pairing server, local API, links to peers.
    `config` says how (the config file, PEER_* variables and flags, or code)."""

    def __init__(self, node: Node, config: Config) -> None:
        self.node = node
        self.config = config
        self.limits = served_limits(config)
        self.watcher = StoreWatcher(node.store)  # one poll of the store for feed, trust, mesh
        self.mesh = Mesh(node.store, config.sync, self._connect, node.identity.host, self.watcher)
        self.commit = GroupCommit(node.append_written)  # programs' appends, grouped: peer.commit
        self.started_at = time.time()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.sync_address = ""
        self.discovery: Discovery | None = None
        self.running: RunningServer | None = None
        self.discovery_note = "off"
        self.pairing: PairingServicer | None = None
        self._roster_heads: object = None  # the roster logs' heads when last applied
        self._repair: asyncio.Task[None] | None = None
        self._introduced: dict[bytes, float] = {}  # node id -> when we last introduced us

    @property
    def node_id(self) -> str:
        return format_node_id(self.node.identity.node_id)

    async def start(self) -> RunningServer:
        """Start serving and syncing; everything started is stopped by `stop`."""
        config, node = self.config, self.node  # a Config is valid: insecure means loopback
        tls = None if config.insecure else node.credentials
        running = await start_server(
            node.store,
            self.node_id,
            config.listen,
            self.limits,
            tls,
            self.watcher,
            node.identity.host,
        )
        self.running = running
        self._closers.append(lambda: running.stop(grace=2.0))
        host, _ = split_address(config.listen)
        self.sync_address = join_host(host, running.port)
        pairing_address = await self._start_pairing(running, tls, host)
        self._closers.append(self.commit.close)  # after the local API stopped
        local = await start_local_server(
            node.home.root,
            node.store,
            running.feed,
            self.node_id,
            LocalServicer(self.commit, self.status),
            self.limits,
        )
        self._closers.append(local.stop)
        if node.identity.sync is not None:  # a relay writes no history: its hooks fail
            handoff = await start_handoff_server(handoff_path(local.socket), self._add_entry)
            self._closers.append(handoff.stop)  # before the group commit closes
        node.home.record_serving(
            Serving(self.sync_address, pairing_address, str(local.socket), os.getpid())
        )
        await self._pin_configured_peers()
        await self._start_roster()
        if config.sync.auto:
            if running.servicer is not None:
                running.servicer.on_contact = self.mesh.contacted
                self.mesh.server = running.servicer
            await self.mesh.start()
            self._closers.append(self.mesh.close)
        else:  # the links would read them; without links, read them here
            learner = asyncio.create_task(self._learn_certificates(), name="certificates")
            self._closers.append(lambda: _cancel(learner))
        await self._start_discovery(host, running.port)
        views = asyncio.create_task(self._keep_views_current(), name="views")
        self._closers.append(lambda: _cancel(views))
        compaction = asyncio.create_task(self._compact_in_background(), name="compaction")
        self._closers.append(lambda: _cancel(compaction))
        return running

    async def _add_entry(self, entry: HistoryEntry) -> int:
        """A shell hook's entry (`peer.handoff`), through the programs' group commit:
        durable, and in the view, when this returns its record's idx."""
        return (await self.commit.append(HISTORY_TAG, [encode_create(entry)])).first_idx

    async def _start_roster(self) -> None:
        """Show this node in the roster (its card, with where it listens), and apply the
        roster whenever a roster log changes: pins, unpins (cutting streams), keys."""
        try:
            address = "" if self.config.insecure else self.sync_address
            await devices.ensure_card(self.node, address, create=False)
        except PeerError as exc:
            log.warning("roster: this node's card was not written: %s", exc)
        watch = self.watcher.watch(
            "roster", self._apply_roster, every=0.05, local=True, at_once=True
        )
        self._closers.append(watch.close)
        self._closers.append(self._stop_repair)

    async def _stop_repair(self) -> None:
        if self._repair is not None:
            await _cancel(self._repair)

    async def _apply_roster(self) -> None:
        heads = await self.node.store.heads_of(ROSTER_TAG)
        if heads == self._roster_heads:
            return
        self._roster_heads = heads
        applied = await devices.apply(self.node)
        if applied.needs_rotation and self._repair is None:
            self._repair = asyncio.create_task(self._repair_key(), name="roster-repair")
        for node_id in applied.unpinned:
            log.warning("roster: %s was revoked; unpinned", format_node_id(node_id))
        # Always, not only when this call changed a pin: a `peer devices revoke` in
        # another process unpinned it already, and the trust list's own poll is slower
        if self.running is not None:
            await self.running.refresh_trust()  # cuts the streams of the unpinned
        if self.config.sync.auto:
            await self.mesh.refresh()
        self._offer_keys()

    def _offer_keys(self) -> None:
        """What a join gets: the current key, and the older ones to read old records."""
        sync = self.node.identity.sync
        if self.pairing is not None and sync is not None:
            self.pairing.sync_key_text = sync.to_text()
            self.pairing.older_key_texts = tuple(
                key.to_text() for key in sync.older if key.key_id != ROSTER_KEY.key_id
            )

    async def _repair_key(self) -> None:
        """The roster needs a new key and this device holds the current one: wait a
        little (the rotation may be on its way from the device that revoked), then
        rotate unless another device did meanwhile. Concurrent rotations end on one."""
        try:
            await asyncio.sleep(REPAIR_DELAY_S * (1 + random.random()))
            applied = await devices.apply(self.node, repair=True)
            if applied.rotated is not None:
                log.warning("roster: rotated the sync key to %s", applied.rotated.key_id_text)
        except PeerError as exc:
            log.warning("roster: the key was not rotated: %s", exc)
        finally:
            self._repair = None
            self._roster_heads = None  # look again: the rotation is a change

    async def _joined(self, joiner: TrustedPeer, relay: bool) -> None:
        """A node joined through an invitation of this one: add it to the roster."""
        if joiner.certificate is not None:
            address = "" if self.config.insecure else self.sync_address
            await devices.record_join(
                self.node, joiner.certificate, relay, joiner.name, address=address
            )

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

    async def _compact_in_background(self) -> None:
        """Every `compact_every` seconds, if the store changed (here or in another
        process), merge its small segments: a step per transaction, with a pause
        between steps so appends and received batches never wait long."""
        store = self.node.store
        seen = None
        while True:
            await asyncio.sleep(self.config.compact_every)
            version = await store.data_version()
            if version == seen:
                continue
            try:
                merged, rewritten = await store.compact(pause_s=COMPACT_PAUSE_S)
            except PeerError as exc:
                log.warning("compaction: %s", exc)
                continue
            if merged:
                log.info("compaction: %d segments merged (%d bytes)", merged, rewritten)
            seen = await store.data_version()

    async def _pin_configured_peers(self) -> None:
        """The config's [[peers]]: pinned (or updated) before anything connects."""
        pinned = {p.node_id: p for p in await self.node.trust.all()}
        for peer in self.config.peers:
            known = pinned.get(peer.node_id)
            name = peer.name or (known.name if known else "")
            address = peer.address or (known.address if known else "")
            if known is None or (known.name, known.address) != (name, address):
                certificate = known.certificate if known else None
                await self.node.trust.add(TrustedPeer(peer.node_id, name, address, certificate))

    async def _learn_certificates(self) -> None:
        """Read the certificates of peers pinned while they were offline, so that their
        calls pass our TLS (which admits only certificates it knows)."""
        while True:
            for peer in await self.node.trust.all():
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
        if not self.config.discovery.enabled:
            return
        if is_loopback(host) or self.config.insecure:
            self.discovery_note = "off: this node listens on loopback only"
            return
        interfaces = list(self.config.discovery.interfaces) or _listen_interfaces(host)
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
            on_joined=self._joined,
        )
        self.pairing = servicer
        self._offer_keys()
        pairing, port = await self._listen_pairing(servicer, tls, host, running.port)
        self._closers.append(lambda: pairing.stop(1.0))
        return join_host(host, port)

    async def _listen_pairing(
        self, servicer: PairingServicer, tls: Credentials, host: str, sync_port: int
    ) -> tuple[Any, int]:
        """The pairing port: the sync port + 1 when free (where introductions look for
        it, docs/protocol.md §1.2), else any free port (invitations name it anyway)."""
        if sync_port < 65535:
            with contextlib.suppress(UsageError):
                return await start_pairing_server(servicer, tls, join_host(host, sync_port + 1))
        return await start_pairing_server(servicer, tls, join_host(host, 0))

    async def stop(self) -> None:
        """Stop in reverse order of starting: links, local API, pairing, server."""
        while self._closers:
            await self._closers.pop()()

    async def _connect(self, peer: TrustedPeer, address: str) -> PeerClient:
        certificate = peer.certificate or await self._learn_certificate(peer, address)
        await self._introduce_after_failure(peer, address, certificate)
        schedule = self.config.sync
        return PeerClient(
            address,
            tls=ClientTls(self.node.credentials, certificate),
            keepalive=(schedule.keepalive, schedule.keepalive_timeout),
        )

    async def _introduce_after_failure(
        self, peer: TrustedPeer, address: str, certificate: bytes
    ) -> None:
        """A link that keeps failing may be to a node that pinned our id alone: hand it
        our certificate on its pairing port (at most every INTRODUCE_EVERY_S a peer)."""
        if self.config.insecure:
            return
        state = next((s for s in self.mesh.states() if s.node_id == peer.node_id), None)
        last = self._introduced.get(peer.node_id, -INTRODUCE_EVERY_S)
        if state is None or not state.failures or time.monotonic() - last < INTRODUCE_EVERY_S:
            return
        self._introduced[peer.node_id] = time.monotonic()
        why = await introduce(
            self.node, dataclasses.replace(peer, address=address, certificate=certificate)
        )
        if not why:
            log.info("introduced this node to %s", format_node_id(peer.node_id))

    async def status(self) -> NodeStatus:
        """`peer status` of this node, with what the daemon knows live of each peer."""
        status = await devices.with_roster(self.node, await self.node.status())
        links = {state.node_id: state for state in self.mesh.states()}
        peers = tuple(
            dataclasses.replace(peer, link=links.get(peer.node_id)) for peer in status.peers
        )
        daemon = DaemonStatus(
            os.getpid(),
            self.sync_address,
            not self.config.insecure,
            self.config.sync.auto,
            self.discovery_note,
            self._discovered({p.node_id for p in peers}),
            round(time.time() - self.started_at, 3),
        )
        return dataclasses.replace(status, peers=peers, daemon=daemon)

    def _discovered(self, pinned: set[bytes]) -> tuple[Discovered, ...]:
        """The nodes announced on the LAN, each marked pinned or not. The unpinned ones
        are the nearest thing to a list of who would like to sync with us (a refused
        handshake happens inside grpc's TLS, before we could learn who it was); the
        last MAX_UNPINNED_SHOWN of them are listed, so the status stays bounded."""
        shown: list[Discovered] = []
        unpinned = 0
        for found in reversed(self.discovery.found() if self.discovery else []):
            if found.node_id not in pinned:
                unpinned += 1
                if unpinned > MAX_UNPINNED_SHOWN:
                    continue
            shown.append(
                Discovered(found.node_id, found.address, found.name, found.node_id in pinned)
            )
        return tuple(shown[::-1])


async def serve(node: Node, config: Config, on_ready: Callable[[RunningServer], None]) -> None:
    """Serve the node until SIGINT or SIGTERM, then stop gracefully (exit 0)."""
    with node.home.lock_serving():
        daemon = Daemon(node, config)
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
