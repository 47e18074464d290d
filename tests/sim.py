"""Many nodes of the real sync and relay logic in one process (issue 14): a simulation.

Each node is what a daemon runs, minus grpc and TLS: a real `Store` (a SQLite file under
one directory), its own `Author` (all under one sync key), a `SyncServicer` with its live
`Feed` (`serve_in_memory`) and a `Mesh` whose links reach the neighbours' servicers
through `MemoryRemote` (the real codec both ways). Neighbours are pinned in each store's
trust list, as `peer peers add` does; node ids are made up (no TLS in memory), and each
link calls with its node's id as the caller, so a servicer tells its callers apart.

What moves is counted at the `Remote` boundary (`tests.sim_count.CountingRemote` around
each link's MemoryRemote), never inside the mesh, so the figures stay comparable
whatever the mesh does inside. A `Wire` per pair of neighbours can be cut: calls fail
like an unreachable peer and open streams break; a node that leaves has all its wires
down. From the counts come the figures of issue 14 (`Report`): copies of each record
received per node, echoes (records of a node's own logs sent back to it), hops (the
links crossed by the first copy of each record to reach each node) and the time until
every node held each record.

    async with Sim(tmp_path, random_graph(8, seed)) as sim:
        await sim.append(0, "bulk", payloads(500, 256))
        await sim.until_converged(timeout=30)
        report = await sim.report()
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peer.crypto import Author, SigningKey, SyncKey, record_hash
from peer.feed import Feed
from peer.mesh import Mesh
from peer.records import Record
from peer.service.memory import MemoryRemote, serve_in_memory
from peer.service.servicer import SyncServicer
from peer.settings import Limits, Schedule
from peer.store import Store, TrustedPeer
from peer.watch import StoreWatcher
from tests.sim_count import CountingRemote, Log, Traffic, Wire

# Fast enough for tests: a lost stream is retried within a second, and rounds (the
# safety net under the live streams) come every 10 s, not every minute. Not faster: a
# round is a few ms of this one process's CPU, times every link (64 nodes, 3 s: a third
# of a core); bench/bench_mesh.py keeps the daemon's 60 s.
SCHEDULE = Schedule(interval=10.0, jitter=0.2, backoff_initial=0.05, backoff_max=1.0)
# One process runs every node on one core, so each node gets about 1/N of the CPU a
# daemon has, and a hop takes that much longer. The timer that replaces a feeder which
# seems stalled (`sync.graft_after`) is stretched alike, by N / NODES_PER_CORE: twelve
# real daemons on two cores keep the 1 s default with one copy per record (bench_mesh).
# Without it, at 128 nodes every hop seems stalled and half the nodes switch feeders
# once, each switch a second copy of the bulk in flight.
NODES_PER_CORE = 6
# Nothing but this process writes the stores, and its commits of records wake the feed
# at once: the poll of `data_version` is only how the mesh sees the trust list change.
WATCH_POLL_S = 1.0
POLL_S = 0.05  # convergence is checked this often
CLOSE_TIMEOUT_S = 30.0


def dilated(schedule: Schedule, nodes: int) -> Schedule:
    """`schedule` with its graft wait stretched for `nodes` sharing one core."""
    stretch = max(1.0, nodes / NODES_PER_CORE)
    return dataclasses.replace(schedule, graft_after=schedule.graft_after * stretch)


# -- topologies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """Who links to whom: `n` nodes, undirected edges (a, b) with a < b."""

    name: str
    n: int
    edges: frozenset[tuple[int, int]]
    seed: int | None = None

    def neighbours(self, node: int) -> list[int]:
        return sorted({b if a == node else a for a, b in self.edges if node in (a, b)})

    def degrees(self) -> list[int]:
        counts = Counter(node for edge in self.edges for node in edge)
        return [counts[node] for node in range(self.n)]

    def __str__(self) -> str:
        return self.name if self.seed is None else f"{self.name} (seed {self.seed})"


def edge(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def full_mesh(n: int) -> Topology:
    return Topology("full", n, frozenset(edge(a, b) for a in range(n) for b in range(a)))


def ring(n: int) -> Topology:
    return Topology("ring", n, frozenset(edge(a, (a + 1) % n) for a in range(n)))


def line(n: int) -> Topology:
    return Topology("line", n, frozenset(edge(a, a + 1) for a in range(n - 1)))


def random_graph(n: int, seed: int, low: int = 4, high: int = 8) -> Topology:
    """A connected graph whose every node has `low` to `high` neighbours: a random ring
    (connected), then random edges until each node has a degree drawn from low..high."""
    rng = random.Random(seed)
    for _ in range(1000):  # bounded: a draw that paints itself into a corner is redrawn
        edges = _draw(n, rng, low, high)
        if edges is not None:
            return Topology(f"random {low}-{high}", n, frozenset(edges), seed)
    raise ValueError(f"no graph of {n} nodes with degrees {low}..{high} found")


def _draw(n: int, rng: random.Random, low: int, high: int) -> set[tuple[int, int]] | None:
    order = rng.sample(range(n), n)
    edges = {edge(order[k], order[(k + 1) % n]) for k in range(n)}
    degree = Counter(node for pair in edges for node in pair)
    for node in rng.sample(range(n), n):
        wanted = rng.randint(low, high)
        free = [o for o in range(n) if o != node and degree[o] < high]
        free = [o for o in free if edge(node, o) not in edges]
        for other in rng.sample(free, min(len(free), max(0, wanted - degree[node]))):
            edges.add(edge(node, other))
            degree[node] += 1
            degree[other] += 1
    return edges if all(low <= degree[node] <= high for node in range(n)) else None


def connected(nodes: Iterable[int], edges: Iterable[tuple[int, int]]) -> bool:
    """Whether `edges` (only those between `nodes`) connect all of `nodes`."""
    members = set(nodes)
    links: dict[int, set[int]] = {node: set() for node in members}
    for a, b in edges:
        if a in members and b in members:
            links[a].add(b)
            links[b].add(a)
    if not members:
        return True
    start = next(iter(members))
    seen, todo = {start}, [start]
    while todo:
        for other in links.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen == members


# -- the nodes ------------------------------------------------------------------------


def fake_node_id(index: int) -> bytes:
    """A node id for the trust list (a certificate hash in real life)."""
    return hashlib.sha256(b"peer-sim-node-%d" % index).digest()


@dataclass
class SimNode:
    """One node: its store, author, and while present, its servicer, feed and mesh."""

    index: int
    node_id: bytes
    author: Author
    path: Path
    store: Store | None = None
    servicer: SyncServicer | None = None
    feed: Feed | None = None
    mesh: Mesh | None = None
    neighbours: set[int] = field(default_factory=set)

    @property
    def present(self) -> bool:
        """Serving: its neighbours reach it."""
        return self.servicer is not None

    def serving(self) -> SyncServicer:
        assert self.servicer is not None, f"sim node {self.index} is not running"
        return self.servicer

    def running(self) -> Mesh:
        assert self.mesh is not None, f"sim node {self.index} is not running"
        return self.mesh

    def held(self) -> Store:
        assert self.store is not None, f"sim node {self.index} is not running"
        return self.store


class Sim:
    """N nodes wired as `topology`; `async with` starts them all and closes them."""

    def __init__(
        self,
        root: Path,
        topology: Topology,
        *,
        schedule: Schedule = SCHEDULE,
        limits: Limits | None = None,
        sync: SyncKey | None = None,
    ) -> None:
        self.root = root
        self.topology = topology
        self.schedule = dilated(schedule, topology.n)
        self.limits = limits or Limits()
        self.sync = sync or SyncKey.generate()
        self.traffic = Traffic()
        self.nodes: list[SimNode] = []
        self.wires: dict[tuple[int, int], Wire] = {}
        self.written: dict[Log, int] = {}  # every log written, and its length

    async def __aenter__(self) -> Sim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Make every node, pin the neighbours, then start all meshes at once."""
        for index in range(self.topology.n):
            await self._make(index)
        for a, b in sorted(self.topology.edges):
            await self._link(a, b)
        for node in self.nodes:
            await self._serve(node)
        await asyncio.gather(*(self._start_mesh(node) for node in self.nodes))

    async def close(self) -> None:
        """Stop every node: all links first (so that none fails while the others are
        being stopped), then the servers and the stores, whatever failed (raised after:
        an open store's threads would keep the process alive)."""
        running = self.present()
        closing = (self._close_mesh(node) for node in running if node.mesh is not None)
        failed = await asyncio.gather(*closing, return_exceptions=True)
        for node in running:
            await self._unserve(node)
        for node in self.nodes:
            if node.store is not None:
                await node.store.close()
                node.store = None
        for error in failed:
            if isinstance(error, BaseException):
                raise error

    async def _make(self, index: int) -> SimNode:
        author = Author(SigningKey.generate(), self.sync)
        node = SimNode(index, fake_node_id(index), author, self.root / f"n{index}.db")
        node.store = await Store.open(node.path)
        await node.store.add_host(author.signing.public_key)
        self.nodes.append(node)
        self.traffic.hosts[index] = author.host
        return node

    async def _link(self, a: int, b: int) -> None:
        """a and b pin each other (as `peer peers add` on both sides)."""
        wire = self.wires.setdefault(edge(a, b), Wire(a, b))
        wire.set(self.nodes[a].present and self.nodes[b].present)
        for here, there in ((a, b), (b, a)):
            self.nodes[here].neighbours.add(there)
            pinned = TrustedPeer(self.nodes[there].node_id, f"n{there}", f"sim:{there}")
            await self.nodes[here].held().peers.add(pinned)

    async def _serve(self, node: SimNode) -> None:
        """Serve the node's store (in memory), with its live feed."""
        node.servicer, node.feed = await serve_in_memory(
            node.held(), f"sim-{node.index}", self.limits, own_host=node.author.host
        )
        self._count_audience()
        self._set_wires(node.index)

    async def _start_mesh(self, node: SimNode) -> None:
        """Start the node's links, wired to its server as the daemon wires them."""
        assert node.servicer is not None and node.feed is not None
        watcher = getattr(node.feed, "watcher", None)  # the feed's poll, shared (daemon: one)
        if isinstance(watcher, StoreWatcher):
            watcher.poll_s = WATCH_POLL_S
        connect = functools.partial(self._connect, node.index)
        node.mesh = Mesh(node.held(), self.schedule, connect, node.author.host, watcher)
        node.mesh.server = node.servicer  # the daemon's wiring, before start
        await node.mesh.start()

    async def _close_mesh(self, node: SimNode) -> None:
        """Stop the node's links (bounded: a link that loses its cancellation, which
        Link._stay_connected can do when its stream fails at that very moment, would
        hang this forever)."""
        mesh, node.mesh = node.running(), None
        try:
            await asyncio.wait_for(mesh.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(
                f"the mesh of sim node {node.index} did not close in {CLOSE_TIMEOUT_S} s"
            ) from None

    async def _unserve(self, node: SimNode) -> None:
        """Stop serving: the neighbours' links to the node break."""
        assert node.feed is not None
        feed, node.servicer, node.feed = node.feed, None, None
        self._count_audience()
        self._set_wires(node.index)
        await feed.close()

    async def _connect(self, here: int, peer: TrustedPeer, address: str) -> CountingRemote:
        """What a link dials: the neighbour's servicer in memory, counted."""
        there = int(address.removeprefix("sim:"))
        wire = self.wires[edge(here, there)]
        wire.check()
        remote = MemoryRemote(
            self.nodes[there].serving(), f"sim-{there}", caller=self.nodes[here].node_id.hex()
        )
        return CountingRemote(remote, self.traffic, here, there, wire)

    def _set_wires(self, index: int) -> None:
        for (a, b), wire in self.wires.items():
            if index in (a, b):
                wire.set(not wire.cut and self.nodes[a].present and self.nodes[b].present)

    def _count_audience(self) -> None:
        self.traffic.audience = sum(node.present for node in self.nodes) - 1

    # -- churn ------------------------------------------------------------------------

    async def leave(self, index: int) -> None:
        """The node stops (its links end, its neighbours' links to it fail), store closed."""
        node = self.nodes[index]
        await self._close_mesh(node)
        await self._unserve(node)
        await node.held().close()
        node.store = None

    async def rejoin(self, index: int) -> None:
        """A node that left starts again on its store (as a restarted daemon)."""
        node = self.nodes[index]
        node.store = await Store.open(node.path)
        await self._serve(node)
        await self._start_mesh(node)

    async def join(self, neighbours: Iterable[int]) -> int:
        """A new node, linked to `neighbours` (running: they see it in their trust
        lists within a poll), started; its index."""
        node = await self._make(len(self.nodes))
        for other in neighbours:
            await self._link(node.index, other)
        await self._serve(node)
        await self._start_mesh(node)
        return node.index

    def cut(self, a: int, b: int) -> None:
        wire = self.wires[edge(a, b)]
        wire.cut = True
        self._set_wires(a)

    def heal(self, a: int, b: int) -> None:
        wire = self.wires[edge(a, b)]
        wire.cut = False
        self._set_wires(a)

    def present(self) -> list[SimNode]:
        """The nodes running now."""
        return [node for node in self.nodes if node.present]

    # -- writing ----------------------------------------------------------------------

    async def append(self, index: int, tag: str, payloads: Sequence[bytes]) -> list[Record]:
        """Append to node `index`'s own log; its records are watched until all hold them."""
        node = self.nodes[index]
        records = await node.held().append(node.author, tag, payloads)
        self.traffic.watch(records, time.monotonic())
        log = (node.author.host, tag)
        self.written[log] = records[-1].idx + 1
        return records

    # -- convergence ------------------------------------------------------------------

    async def indexes(self) -> list[dict[Log, tuple[int, bytes]]]:
        """Every present node's index: (host, tag) -> (next_idx, head hash)."""
        found = await asyncio.gather(*(node.held().index() for node in self.present()))
        return [
            {(log.host, log.tag): (head.next_idx, head.head_hash) for log, head in index.items()}
            for index in found
        ]

    async def converged(self) -> bool:
        """Every present node holds the same logs, and every record written so far."""
        indexes = await self.indexes()
        first = indexes[0]
        complete = all(first.get(log, (0, b""))[0] >= n for log, n in self.written.items())
        return complete and all(index == first for index in indexes[1:])

    async def until_converged(self, timeout: float) -> float:
        """Seconds until `converged()`; AssertionError saying who lacks what after
        `timeout`."""
        try:
            return await until(self.converged, "convergence", timeout)
        except AssertionError as exc:
            lacking = await self.behind()
            raise AssertionError(f"{exc}; records lacking, by node: {lacking}") from None

    def settled(self) -> bool:
        """Every link of every present node follows its peer live."""
        return all(state.live for node in self.present() for state in node.running().states())

    async def behind(self) -> dict[int, int]:
        """Per present node, the records written that it lacks (the non-zero ones)."""
        lacking: dict[int, int] = {}
        for node, index in zip(self.present(), await self.indexes(), strict=True):
            gap = sum(max(0, n - index.get(log, (0, b""))[0]) for log, n in self.written.items())
            if gap:
                lacking[node.index] = gap
        return lacking

    async def spot_check(self, rng: random.Random, samples: int = 8) -> None:
        """Records at random positions hash alike on every present node."""
        logs = sorted(self.written.items())
        picks = [(log, rng.randrange(n)) for log, n in rng.choices(logs, k=samples)]
        for (host, tag), idx in picks:
            hashes = set()
            for node in self.present():
                (record,) = await node.held().read_range(host, tag, idx, 1)
                hashes.add(record_hash(record))
            assert len(hashes) == 1, f"{host.hex()[:8]}/{tag}@{idx} differs between nodes"

    # -- the figures ------------------------------------------------------------------

    async def report(self) -> Report:
        """The figures of this run, from the counts and the stores as they are now."""
        held: Counter[tuple[int, str]] = Counter()  # (node, tag) -> records not its own
        for node, index in zip(self.present(), await self.indexes(), strict=True):
            for (host, tag), (n, _) in index.items():
                if host != node.author.host:
                    held[node.index, tag] += n
        return Report.of(self, held)


@dataclass
class Report:
    """Per run: copies per record per node (all tags and by tag), echoes, hops, times."""

    nodes: int
    topology: str
    copies: float  # records received from others / records of others held, over nodes
    copies_min: float  # the same ratio at the node that got the fewest (>= 1: nothing
    copies_max: float  # is held that did not arrive), and at the one that got the most
    copies_by_tag: dict[str, float]
    echoes: int  # records of its own logs a node received, summed over nodes
    authored: int  # records written (what echoes compare to)
    hops_max: int
    hops_mean: float
    to_all_s: dict[str, list[float]]  # per tag: seconds from each write to all holding it
    uncounted: set[str]
    links: int  # directed links

    @classmethod
    def of(cls, sim: Sim, held: Counter[tuple[int, str]]) -> Report:
        traffic = sim.traffic
        got: Counter[int] = Counter()
        for (node, _), count in traffic.received.items():
            got[node] += count
        had: Counter[int] = Counter()
        for (node, _), count in held.items():
            had[node] += count
        per_node = [got[node] / had[node] for node in had if had[node]]  # all but authors
        tags = sorted({tag for _, tag in held})
        hops = traffic.hops()
        return cls(
            nodes=len(sim.present()),
            topology=str(sim.topology),
            copies=_ratio(sum(traffic.received.values()), sum(held.values())),
            copies_min=min(per_node, default=0.0),
            copies_max=max(per_node, default=0.0),
            copies_by_tag={tag: _tag_ratio(traffic.received, held, tag) for tag in tags},
            echoes=sum(traffic.echoes.values()),
            authored=sum(sim.written.values()),
            hops_max=max(hops, default=0),
            hops_mean=statistics.fmean(hops) if hops else 0.0,
            to_all_s=_to_all(traffic),
            uncounted=set(traffic.uncounted),
            links=2 * len(sim.wires),
        )

    @property
    def echoes_per_record(self) -> float:
        return _ratio(self.echoes, self.authored)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _tag_ratio(
    received: Counter[tuple[int, str]], held: Counter[tuple[int, str]], tag: str
) -> float:
    got = sum(c for (_, t), c in received.items() if t == tag)
    return _ratio(got, sum(c for (_, t), c in held.items() if t == tag))


def _to_all(traffic: Traffic) -> dict[str, list[float]]:
    """Per tag, each watched record's seconds from its write until all nodes had it."""
    spans: dict[str, list[float]] = {}
    for key, done in traffic.reached_all.items():
        (_, tag), _ = key
        spans.setdefault(tag, []).append(done - traffic.watched[key])
    return spans


async def until(probe: Callable[[], Awaitable[bool] | bool], what: str, timeout: float) -> float:
    """Seconds until `probe` (a function or a coroutine function) is true, polled
    every POLL_S; AssertionError after `timeout`."""
    started = time.monotonic()
    for _ in range(int(timeout / POLL_S) + 1):  # bounded
        answer = probe()
        if await answer if isinstance(answer, Awaitable) else answer:
            return time.monotonic() - started
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def payloads(count: int, size: int, label: str = "") -> list[bytes]:
    """`count` payloads of `size` bytes, distinct (a label and a number, then random)."""
    return [(f"{label}{n}:".encode() + os.urandom(size))[:size] for n in range(count)]
