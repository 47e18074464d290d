"""Keeping every trusted peer in sync by itself: sync rounds on a schedule, live streams.

One `Link` per pinned peer. A link syncs at start, then keeps a `Subscribe` stream open
to the peer, storing what the peer stores the moment it arrives, and still runs a full
round (pull and push) every interval, with jitter so a mesh does not sync in lockstep.
A peer that fails is retried after an exponential backoff (capped), or after the cap at
once if its error says retrying cannot help (`PeerError.retryable`: a newer database, a
forged or malformed message); a peer that shows up again (it calls us, or discovery
sees it) is retried at once. The `Mesh` follows the trust list, so `peer peers
add/remove` in another process takes effect within a second.

Every link keeps a `LinkState` in words and numbers, so `peer status` can always say
what is going on with a peer: never a silent "stuck".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from peer.alarms import own_log_warning
from peer.codec.wire import FollowControl, have_messages
from peer.errors import PeerError, Unsupported
from peer.identity import format_node_id
from peer.inbound import Inbound
from peer.records import LogKey, Record
from peer.remote import Remote
from peer.segment import runs_of
from peer.settings import Schedule
from peer.status import LinkState
from peer.store import Store, TrustedPeer
from peer.sync import PullClaims, SyncSession, SyncSummary
from peer.tree import Action, Graft, Tree
from peer.watch import TRUST_POLL_S, StoreWatcher, Watch

log = logging.getLogger(__name__)
MAX_DISCOVERED = 256  # LAN addresses remembered, newest kept
TREE_TICK_S = 0.25  # how often the tree looks for logs whose upstream fell behind
Connect = Callable[[TrustedPeer, str], Awaitable[AbstractAsyncContextManager[Remote]]]
Dispatch = Callable[[list[Action]], None]


class OwnServer(Protocol):
    """What this node's own server knows of a peer's calls (the daemon wires it)."""

    def is_taking(self, node_id: bytes) -> bool:
        """Whether the peer pulls from us (or follows all of it) right now."""

    def served(self, node_id: bytes) -> Mapping[LogKey, int]:
        """Per log, the idx after the last record our server's pulls sent the peer."""


class Link:
    """Keeps one pinned peer in sync until cancelled."""

    def __init__(
        self,
        peer: TrustedPeer,
        store: Store,
        schedule: Schedule,
        connect: Connect,
        own_host: bytes | None = None,
        server: OwnServer | None = None,
        tree: Tree | None = None,
        dispatch: Dispatch | None = None,
        claims: PullClaims | None = None,
    ) -> None:
        self.peer = peer
        self.store = store
        self.schedule = schedule
        self.connect = connect
        self.own_host = own_host  # this node's host id: its own log is watched
        self.server = server  # is the peer pulling from us now, what did it pull
        self.discovered = ""  # an address found on the LAN, fresher than the pinned one
        self.state = LinkState(peer.node_id, peer.name, peer.address)
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self.task: asyncio.Task[None] | None = None
        self.contact_poked = False  # a call from the peer cut this failure streak short
        self.tree = tree or Tree({}, own_host)  # the mesh's, shared by its links
        self.dispatch = dispatch or self.control
        self.claims = claims or PullClaims()  # the mesh's: what its links are pulling
        self._controls: asyncio.Queue[FollowControl | None] | None = None  # while following

    @property
    def address(self) -> str:
        return self.discovered or self.peer.address

    def poke(self) -> None:
        """Sync now instead of waiting for the interval or the backoff."""
        self._wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"link-{self.peer.node_id.hex()[:8]}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        delay = 0.0
        while True:
            await self._sleep(delay)
            try:
                delay = await self._attempt()
            except Exception as exc:  # a bug must not end the link for good
                delay = self._failed(PeerError(f"internal error ({exc}); see the daemon log"))
                log.error("peer %s: internal error", self._label, exc_info=True)

    async def _attempt(self) -> float:
        """One connection: a round, then live until it breaks; the delay to the next."""
        self.state.address = self.address
        if not self.address:
            self.state.last_error = (
                "no address known: add one with `peer peers add ID HOST:PORT` "
                "or let discovery find it on the LAN"
            )
            return self.schedule.interval
        try:
            async with await self.connect(self.peer, self.address) as client:
                await self._round(client)
                self.state.connected = True
                if not self.schedule.live:
                    return self.schedule.next_round(self._rng)
                await self._stay_connected(client)
        except PeerError as exc:
            return self._failed(exc)
        finally:
            self.state.connected = self.state.live = False
        return self.schedule.backoff_initial  # the peer ended the stream (it restarts?)

    def _failed(self, error: PeerError) -> float:
        self.state.failures += 1
        self.state.last_error = str(error)
        delay = self.schedule.backoff(self.state.failures, error.retryable)
        self.state.retry_at = time.time() + delay
        log.info("peer %s: %s (retry in %.1f s)", self._label, error, delay)
        return delay

    @property
    def _label(self) -> str:
        return self.peer.name or self.address or format_node_id(self.peer.node_id)

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if poked."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _round(self, remote: Remote) -> SyncSummary:
        session = await SyncSession.open(
            self.store, remote, batch=self.schedule.batch, own_host=self.own_host
        )
        await session.pull(self.claims)
        await session.push(stop=self._peer_takes, held=self._peer_pulled)
        await session.check_served()
        summary = session.summary
        state = self.state
        if summary.own_log_behind:
            self._alarm(summary.own_log_behind)
        state.pulled += summary.pulled
        state.took(summary.pulled, summary.duplicates)
        state.pushed += summary.pushed
        state.pushes_left_to_peer += summary.left_to_peer
        state.remote_heads.update(summary.remote_heads)
        state.last_sync = time.time()
        state.last_error, state.failures, state.retry_at = None, 0, None
        self.contact_poked = False
        return summary

    def _peer_takes(self) -> bool:
        """Whether the peer pulls from us by itself right now (our server knows): it
        then gets what it lacks anyway, and pushing the same to it is waste (two
        daemons syncing each other would move each record twice)."""
        return self.server is not None and self.server.is_taking(self.peer.node_id)

    def _peer_pulled(self) -> Mapping[LogKey, int]:
        """What the peer pulled from us meanwhile (a pull quicker than our push)."""
        return {} if self.server is None else self.server.served(self.peer.node_id)

    def _alarm(self, behind: dict[LogKey, tuple[int, int]]) -> None:
        """The peer held records of our own log past ours (now pulled back): count it
        and say it once per detection; a restored backup, or a clone of this node."""
        self.state.own_log_alarms += 1
        self.state.own_log_behind = dict(behind)
        log.warning("peer %s: %s", self._label, own_log_warning(behind))

    async def _stay_connected(self, client: Remote) -> None:
        """Follow the peer live; run a full round every interval (or when poked) too.
        Returns when the peer closes the stream; raises when something failed."""
        stream = asyncio.create_task(self._follow(client))
        rounds = asyncio.create_task(self._rounds(client))
        try:
            done, _ = await asyncio.wait({stream, rounds}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raise the failure, if any
        finally:
            await _cancel_all((stream, rounds))

    async def _rounds(self, client: Remote) -> None:
        while True:
            await self._sleep(self.schedule.next_round(self._rng))
            await self._round(client)

    def control(self, actions: list[Action]) -> None:
        """Send the tree's grafts and prunes for this peer on its Follow stream."""
        if self._controls is None or not actions:
            return
        graft = {a.log: a.have for a in actions if isinstance(a, Graft)}
        prune = frozenset(a.log for a in actions if not isinstance(a, Graft))
        self._controls.put_nowait(FollowControl(graft=graft, prune=prune - graft.keys()))

    async def _follow(self, remote: Remote) -> None:
        """Live: the peer's Follow stream (one upstream per log, `peer.tree`); from a
        v1 peer, which has none, its Subscribe stream (every record it stores)."""
        try:
            await self._follow_tree(remote)
        except Unsupported:
            log.info("peer %s: no Follow (protocol 1.0); subscribing to everything", self._label)
            await self._subscribe(remote)

    async def _follow_tree(self, remote: Remote) -> None:
        """Store what the peer feeds us; graft and prune logs as the tree decides."""
        held = {log: head.next_idx for log, head in (await self.store.index()).items()}
        tree, peer = self.tree, self.peer.node_id
        tree.advanced(held)
        self._controls = asyncio.Queue()
        for control in have_messages(held):
            self._controls.put_nowait(control)
        tree.up(peer)
        inbound = Inbound(self.store, live=True)
        self.state.live = True
        try:
            async for message in remote.follow(_until_none(self._controls)):
                if message.host:
                    tree.met(peer, message.host)
                if message.records:
                    before = dict(tree.held)
                    added, stored = await inbound.store_now(message.records, message.keys)
                    self.state.received_live += added
                    self.state.took(len(stored), len(stored) - added)
                    self._note_heads(stored)
                    self._fed(stored, before)
                if message.notes:
                    await self._noted(message.notes)
        finally:
            self._controls.put_nowait(None)  # ends the request stream (grpc reads it)
            self._controls = None
            self.dispatch(tree.down(peer))

    def _fed(self, records: Sequence[Record], before: dict[LogKey, int]) -> None:
        """Tell the tree what arrived, per log: new records, or only copies."""
        runs = runs_of(records)
        self.tree.advanced({log: end for log, (_, end) in runs.items()})
        for log_key, (first, end) in runs.items():
            added = max(0, end - max(first, before.get(log_key, 0)))
            copies = end - first - added
            self.dispatch(self.tree.received(self.peer.node_id, log_key, added, copies))

    async def _noted(self, notes: dict[LogKey, int]) -> None:
        heads = self.state.remote_heads
        for log_key, next_idx in notes.items():
            heads[log_key] = max(heads.get(log_key, 0), next_idx)
        if any(n > self.tree.held.get(k, 0) for k, n in notes.items()):
            # perhaps pushed to our server meanwhile: the tree learns it before grafting
            self.tree.advanced({k: h.next_idx for k, h in (await self.store.index()).items()})
        self.dispatch(self.tree.noted(self.peer.node_id, notes))

    async def _subscribe(self, remote: Remote) -> None:
        """Store what the peer stores, as it arrives, from where our index stands."""
        since = {log: head.next_idx for log, head in (await self.store.index()).items()}
        inbound = Inbound(self.store, live=True)
        self.state.live = True
        async for records, keys in remote.subscribe(since):
            added, stored = await inbound.store_now(records, keys)
            self.state.received_live += added
            self.state.took(len(stored), len(stored) - added)
            self._note_heads(stored)

    def _note_heads(self, records: Sequence[Record]) -> None:
        heads = self.state.remote_heads
        for log_key, (_, end) in runs_of(records).items():
            heads[log_key] = max(heads.get(log_key, 0), end)


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until they ended, their failures dropped. Unlike awaiting
    each under `suppress(CancelledError)`, a cancellation of the caller itself while it
    waits is never swallowed (a mesh closing would wait forever for a link)."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the failure that mattered was raised already


async def _until_none(queue: asyncio.Queue[FollowControl | None]) -> AsyncIterator[FollowControl]:
    """The control messages of a Follow stream, until None ends our side."""
    while (control := await queue.get()) is not None:
        yield control


class Mesh:
    """All links of a node, following the trust list and what discovery finds."""

    def __init__(
        self,
        store: Store,
        schedule: Schedule,
        connect: Connect,
        own_host: bytes | None = None,
        watcher: StoreWatcher | None = None,  # the store's, shared (else one of its own)
    ) -> None:
        self.store = store
        self.schedule = schedule
        self.connect = connect
        self.own_host = own_host
        self.watcher = watcher or StoreWatcher(store)
        # Set by the daemon to its server: is this peer pulling from us right now, what
        # did it pull? (Then a link's round leaves the push to the peer's own pull.)
        self.server: OwnServer | None = None
        self.links: dict[bytes, Link] = {}
        self.discovered: dict[bytes, str] = {}
        self.tree = Tree({}, own_host, graft_after_s=schedule.graft_after)
        self.claims = PullClaims()
        self._trust_watch: Watch | None = None
        self._ticks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Links for the pinned peers, then for those pinned or unpinned later (by
        `peer peers` in another process too), within a second."""
        self.tree.advanced({log: head.next_idx for log, head in (await self.store.index()).items()})
        await self.refresh()
        self._trust_watch = self.watcher.watch("trust list", self.refresh, every=TRUST_POLL_S)
        self._ticks = asyncio.create_task(self._tick(), name="mesh-tree")

    async def close(self) -> None:
        if self._trust_watch is not None:
            await self._trust_watch.close()
        if self._ticks is not None:
            self._ticks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        await asyncio.gather(*(link.stop() for link in self.links.values()))
        self.links.clear()

    async def refresh(self) -> None:
        """Links for the pinned peers: start new ones, stop removed ones."""
        peers = {p.node_id: p for p in await self.store.peers.all()}
        for node_id in set(self.links) - set(peers):
            await self.links.pop(node_id).stop()
        for node_id, peer in peers.items():
            link = self.links.get(node_id)
            if link is None:
                link = self.links[node_id] = Link(
                    peer,
                    self.store,
                    self.schedule,
                    self.connect,
                    self.own_host,
                    self.server,
                    self.tree,
                    self.dispatch,
                    self.claims,
                )
                link.discovered = self.discovered.get(node_id, "")
                link.start()
            elif _reachability(link.peer) != _reachability(peer):
                link.peer = peer
                link.state.name = peer.name
                link.poke()

    def found(self, node_id: bytes, address: str) -> None:
        """Discovery saw `node_id` at `address`: use it, and sync now if it is pinned."""
        if self.discovered.get(node_id) == address:
            return
        self.discovered.pop(node_id, None)
        self.discovered[node_id] = address
        while len(self.discovered) > MAX_DISCOVERED:  # LAN announcements are not trusted
            del self.discovered[next(iter(self.discovered))]
        link = self.links.get(node_id)
        if link is not None:
            link.discovered = address
            link.poke()

    def contacted(self, node_id: bytes) -> None:
        """A pinned peer called us: if we were backing off from it, it is back. Once
        per failure streak: two peers whose links both fail (a fault that lets calls
        through but breaks them) would otherwise wake each other in a tight loop of
        handshakes, with no backoff at all."""
        link = self.links.get(node_id)
        if link is not None and not link.state.connected and not link.contact_poked:
            link.contact_poked = True
            link.poke()

    def dispatch(self, actions: list[Action]) -> None:
        """Send the tree's grafts and prunes, each on its peer's Follow stream."""
        per_peer: dict[bytes, list[Action]] = {}
        for action in actions:
            per_peer.setdefault(action.peer, []).append(action)
        for node_id, mine in per_peer.items():
            link = self.links.get(node_id)
            if link is not None:
                link.control(mine)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TREE_TICK_S)
            self.dispatch(self.tree.tick())

    def states(self) -> list[LinkState]:
        fed = self.tree.feeders()
        for node_id, link in self.links.items():
            link.state.feeds = sorted(fed.get(node_id, []))
        return [link.state for link in self.links.values()]


def _reachability(peer: TrustedPeer) -> tuple[str, str, bytes | None]:
    return peer.address, peer.name, peer.certificate
