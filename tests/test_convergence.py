"""Nodes that append, sync, receive shuffled batches and restart converge (SPEC §3).

A Hypothesis state machine drives 3-4 real nodes: each one a SQLite store in a
temporary directory, its own host (all share one sync key) and a real grpc.aio
server on 127.0.0.1:0, all on one event loop owned by the machine. Its steps append,
sync two nodes over gRPC (or two nodes with a third at once), hand a node batches of
another's records duplicated and out of order, and restart a node from its file.
After every step each node's logs must be contiguous, authentic, unforked and a
prefix of what their author wrote (so two nodes never hold different records at one
idx). At the end a line of syncs must leave every node with every record.

Node numbers in the printed steps are taken modulo the node count, and a pair never
names one node twice (the second moves to the next node). A failure prints its steps
and a `@reproduce_failure(...)` blob: put that decorator on `Convergence`, or rerun
with the seed in the pytest header. Soak run (the timeout grows with the counts):
`PEER_SOAK_EXAMPLES=300 PEER_SOAK_STEPS=60 .venv/bin/pytest tests/test_convergence.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from peer.batches import read_batches
from peer.client import PeerClient
from peer.crypto import (
    SIGN_EVERY,
    Author,
    SigningKey,
    SyncKey,
    open_record,
    record_hash,
    verify_chain,
)
from peer.errors import GapError
from peer.records import Head, LogKey, Range, Record, diff, group_by_log
from peer.service import RunningServer, start_server
from peer.store import ForkEvidence, InsertResult, Store
from peer.sync import sync_with

T = TypeVar("T")
EXAMPLES = int(os.environ.get("PEER_SOAK_EXAMPLES", "15"))
STEPS = int(os.environ.get("PEER_SOAK_STEPS", "40"))
MAX_NODES = 4
STREAM_TIMEOUT_S = 60.0  # a stuck stream fails the step instead of hanging the suite
MAX_RECORDS = 2_000  # keeps the per-step checks cheap: long appends stop past this

pytestmark = pytest.mark.timeout(max(600, EXAMPLES * STEPS))  # shrinking needs room

NODES = st.integers(0, MAX_NODES - 1)
TAGS = st.sampled_from(["kv", "history", "notes"])
BATCHES = st.sampled_from([1, 3, 50, 1000])

Index = dict[LogKey, Head]


@dataclass
class Node:
    """One node: a store on a file, the host writing to it, and its gRPC server."""

    name: str
    path: Path
    author: Author
    store: Store
    server: RunningServer
    running: bool = True

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @classmethod
    async def start(cls, name: str, path: Path, author: Author) -> Node:
        store = await Store.open(path)
        await store.add_host(author.signing.public_key)
        return cls(name, path, author, store, await start_server(store, name, "127.0.0.1:0"))

    async def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                await self.server.stop(grace=0.5)
            finally:
                await self.store.close()

    async def restart(self) -> None:
        await self.stop()
        self.store = await Store.open(self.path)
        self.server = await start_server(self.store, self.name, "127.0.0.1:0")
        self.running = True


@dataclass(frozen=True)
class Snapshot:
    """Everything durable a node holds, to compare before and after a restart."""

    index: Index
    records: dict[LogKey, list[Record]]
    keys: dict[bytes, bytes]
    clock: int


async def every_record(store: Store, index: Mapping[LogKey, Head]) -> dict[LogKey, list[Record]]:
    """Each log's records as stored (one more than `next_idx` asked: there must be none)."""
    logs = list(index)
    reads = (store.read_range(log.host, log.tag, 0, index[log].next_idx + 1) for log in logs)
    return dict(zip(logs, await asyncio.gather(*reads), strict=True))


async def snapshot(store: Store) -> Snapshot:
    index = await store.index()
    records = await every_record(store, index)
    return Snapshot(index, records, await store.host_keys(), await store.clock_floor())


async def evidence(store: Store) -> tuple[list[ForkEvidence], set[LogKey]]:
    """The fork evidence a store holds, and its frozen logs (both empty when honest)."""
    return await store.forks(), await store.frozen_logs()


async def collect(batches: AsyncIterator[list[Record]]) -> list[list[Record]]:
    return [batch async for batch in batches]


def expected_insert(index: Mapping[LogKey, Head], batch: Sequence[Record]) -> Index | int:
    """The index after `insert_batch(batch)`, or the idx a GapError must name."""
    heads = dict(index)
    for log, group in group_by_log(batch).items():
        held = heads.get(log, Head(0)).next_idx
        if group[0].idx > held:
            return held
        if group[-1].idx >= held:
            heads[log] = Head(group[-1].idx + 1, record_hash(group[-1]))
    return heads


def added_by(before: Mapping[LogKey, Head], after: Mapping[LogKey, Head]) -> int:
    return sum(head.next_idx - before.get(log, Head(0)).next_idx for log, head in after.items())


def line_pairs(nodes: Sequence[Node]) -> Iterable[tuple[Node, Node]]:
    """n1→n2→…→nk, then back nk→…→n1: enough for every record to reach every node."""
    forth = list(itertools.pairwise(nodes))
    back = [(b, a) for a, b in reversed(forth)]
    return forth + back


class Convergence(RuleBasedStateMachine):
    """3-4 nodes that append, sync, take shuffled batches and restart; see the module."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory(prefix="peer-convergence-")
        self.sync_key = SyncKey.generate()
        self.nodes: list[Node] = []
        self.writers: dict[bytes, str] = {}  # host id -> the name of its node
        self.written: dict[LogKey, list[Record]] = {}  # every log as its author wrote it
        self.plaintexts: dict[LogKey, list[bytes]] = {}
        self.verified: set[tuple[LogKey, int]] = set()  # log prefixes whose chain verified

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def node(self, number: int) -> Node:
        return self.nodes[number % len(self.nodes)]

    def pair(self, a: int, b: int) -> tuple[Node, Node]:
        first, second = a % len(self.nodes), b % len(self.nodes)
        if first == second:
            second = (first + 1) % len(self.nodes)
        return self.nodes[first], self.nodes[second]

    def log_name(self, log: LogKey) -> str:
        """A log named by its writer's node name, stable across runs (unlike host ids)."""
        return f"{self.writers[log.host]}/{log.tag}"

    def total_written(self) -> int:
        return sum(len(records) for records in self.written.values())

    # -- rules ----------------------------------------------------------------------

    @initialize(count=st.integers(3, MAX_NODES))
    def start_nodes(self, count: int) -> None:
        for number in range(count):
            author = Author(SigningKey.generate(), self.sync_key)
            path = Path(self.tmp.name) / f"n{number}.db"
            self.nodes.append(self.run(Node.start(f"n{number}", path, author)))
            self.writers[author.host] = f"n{number}"

    @rule(node=NODES, tag=TAGS, count=st.integers(1, 30), one_call=st.booleans())
    def append(self, node: int, tag: str, count: int, one_call: bool) -> None:
        """`count` records in one call (only the last signed) or one call each."""
        self.run(self._append(self.node(node), tag, count, one_call))

    @rule(node=NODES, tag=TAGS, extra=st.integers(0, 3))
    def append_past_a_signature_checkpoint(self, node: int, tag: str, extra: int) -> None:
        """One call that crosses idx k*SIGN_EVERY-1, where a signature is mandatory
        (a no-op past MAX_RECORDS; a precondition would make Hypothesis give up)."""
        if self.total_written() >= MAX_RECORDS:
            return
        writer = self.node(node)
        held = len(self.written.get(LogKey(writer.author.host, tag), []))
        count = SIGN_EVERY - held % SIGN_EVERY + extra
        self.run(self._append(writer, tag, count, one_call=True))

    @rule(a=NODES, b=NODES, batch=BATCHES)
    def sync(self, a: int, b: int, batch: int) -> None:
        """A sync session from a's side with b's server: both end with the union."""
        first, second = self.pair(a, b)
        self.run(self._sync(first, second, batch))

    @rule(a=NODES, b=NODES, c=NODES, batch=BATCHES)
    def two_syncs_with_one_node_at_once(self, a: int, b: int, c: int, batch: int) -> None:
        """a and a third node sync with b's server at the same time: b takes both."""
        first, hub = self.pair(a, b)
        others = [node for node in self.nodes if node is not first and node is not hub]
        self.run(self._two_syncs(first, others[c % len(others)], hub, batch))

    @rule(a=NODES, b=NODES, batch=BATCHES, data=st.data())
    def deliver(self, a: int, b: int, batch: int, data: st.DataObject) -> None:
        """a's batches handed to b's store out of order and repeated, gaps refused."""
        source, target = self.pair(a, b)
        ranges = self._draw_ranges(data, source, target)
        batches = self.run(collect(read_batches(source.store, ranges, batch)))
        event(f"deliver: {'no' if not batches else min(len(batches), 2)} batches (2 = 2+)")
        if not batches:
            return
        repeats = data.draw(st.lists(st.sampled_from(range(len(batches))), max_size=len(batches)))
        order = data.draw(st.permutations([*range(len(batches)), *repeats]), label="order")
        retry = data.draw(st.booleans(), label="retry refused batches until all are stored")
        note(f"deliver {source.name} -> {target.name}: {len(batches)} batches of <= {batch}")
        self.run(self._deliver(source, target, ranges, [batches[n] for n in order], retry))

    @rule(node=NODES)
    def restart(self, node: int) -> None:
        """Stop the server, close the store, reopen it from its file: nothing is lost."""
        self.run(self._restart(self.node(node)))

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def every_log_is_whole_authentic_and_unforked(self) -> None:
        self.run(self._check_every_node())

    # -- teardown: convergence, then close everything -----------------------------

    def teardown(self) -> None:
        try:
            if self.nodes and sys.exc_info()[1] is None:  # not while a failure propagates
                self.run(self._converge())
        finally:
            self._close()

    def _close(self) -> None:
        try:
            self.run(self._stop_all())
        finally:
            try:
                self.run(self.loop.shutdown_asyncgens())
                self.run(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()
                self.tmp.cleanup()

    async def _stop_all(self) -> None:
        """Stop every node, even when one fails to stop; then raise the first failure."""
        results = await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- the steps, in the loop -----------------------------------------------------

    async def _append(self, node: Node, tag: str, count: int, one_call: bool) -> None:
        log = LogKey(node.author.host, tag)
        held = self.written.setdefault(log, [])
        plain = self.plaintexts.setdefault(log, [])
        payloads = [
            b"%s/%s/%d" % (node.name.encode(), tag.encode(), len(held) + n) for n in range(count)
        ]
        floor = await node.store.clock_floor()
        if one_call:
            records = await node.store.append(node.author, tag, payloads)
        else:
            records = [r for p in payloads for r in await node.store.append(node.author, tag, [p])]
        assert [r.idx for r in records] == list(range(len(held), len(held) + count))
        stamps = [r.timestamp for r in records]
        assert floor < stamps[0] and stamps == sorted(set(stamps)), "the clock must only go up"
        held += records
        plain += payloads

    async def _sync(self, first: Node, second: Node, batch: int) -> None:
        plan = diff(await first.store.index(), await second.store.index())
        async with PeerClient(second.target, stream_timeout=STREAM_TIMEOUT_S) as peer:
            summary = await sync_with(first.store, peer, batch=batch)
        note(f"sync {first.name} <-> {second.name} (batch {batch}): {summary}")
        assert summary.diverged == [], "honest nodes never diverge"
        assert summary.pulled == sum(len(r) for r in plan.pull)
        assert summary.pushed == sum(len(r) for r in plan.push)
        assert await first.store.index() == await second.store.index()
        event(f"sync: pulled {bool(summary.pulled)}, pushed {bool(summary.pushed)}")

    async def _two_syncs(self, first: Node, third: Node, hub: Node, batch: int) -> None:
        """Both sessions succeed, and hub ends holding all that any of the three held."""
        before = [await node.store.index() for node in (first, third, hub)]
        sessions = (self._session(node, hub, batch) for node in (first, third))
        for outcome in await asyncio.gather(*sessions, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        held = await hub.store.index()
        for index in before:
            for log, head in index.items():
                assert held[log].next_idx >= head.next_idx, f"{hub.name} lost a pushed record"

    async def _session(self, node: Node, hub: Node, batch: int) -> None:
        async with PeerClient(hub.target, stream_timeout=STREAM_TIMEOUT_S) as peer:
            summary = await sync_with(node.store, peer, batch=batch)
        note(f"sync {node.name} <-> {hub.name} (batch {batch}, at once): {summary}")
        assert summary.diverged == [], "honest nodes never diverge"

    def _draw_ranges(self, data: st.DataObject, source: Node, target: Node) -> list[Range]:
        """The ranges target lacks (from `diff`), some started earlier (duplicates), and
        some ranges of logs target already holds in full (only duplicates)."""
        theirs, mine = self.run(source.store.index()), self.run(target.store.index())
        lacking = {r.log: r for r in diff(mine, theirs).pull}
        ranges: list[Range] = []
        for log in sorted(theirs, key=self.log_name):  # host ids differ from run to run
            wanted, name, end = lacking.get(log), self.log_name(log), theirs[log].next_idx
            if wanted is not None:
                back = data.draw(st.integers(0, wanted.start), label=f"overlap {name}")
                ranges.append(Range(log.host, log.tag, wanted.start - back, end))
            elif data.draw(st.booleans(), label=f"resend held {name}"):
                start = data.draw(st.integers(0, end - 1), label=f"resend {name} from")
                ranges.append(Range(log.host, log.tag, start, end))
        return ranges

    async def _deliver(
        self,
        source: Node,
        target: Node,
        ranges: Sequence[Range],
        batches: Sequence[list[Record]],
        retry: bool,
    ) -> None:
        keys = await source.store.host_keys()
        refused = [b for b in batches if not await self._offer(target, b, keys)]
        while retry and refused:
            still = [b for b in refused if not await self._offer(target, b, keys)]
            assert len(still) < len(refused), "some refused batch must fit once others landed"
            refused = still
        if retry:
            held = await target.store.index()
            for wanted in ranges:
                assert held[wanted.log].next_idx >= wanted.end

    async def _offer(self, target: Node, batch: list[Record], keys: Mapping[bytes, bytes]) -> bool:
        """Insert one batch into target; check the outcome exactly. False if refused."""
        before = await target.store.index()
        expected = expected_insert(before, batch)
        try:
            result = await target.store.insert_batch(batch, keys)
        except GapError as gap:
            assert expected == gap.expected_idx, f"GapError names idx {gap.expected_idx}"
            assert await target.store.index() == before, "a refused batch must change nothing"
            event("batch refused: gap")
            return False
        assert not isinstance(expected, int), f"a batch with a gap was stored: {result}"
        assert await target.store.index() == expected
        added = added_by(before, expected)
        assert result == InsertResult(added=added, duplicates=len(batch) - added)
        event(
            f"batch stored: {'new' if not result.duplicates else 'dups' if not added else 'mixed'}"
        )
        return True

    async def _restart(self, node: Node) -> None:
        before = await snapshot(node.store)
        await node.restart()
        assert await snapshot(node.store) == before

    async def _check_every_node(self) -> None:
        stores = [node.store for node in self.nodes]
        held = await asyncio.gather(*map(snapshot, stores))
        forks = await asyncio.gather(*map(evidence, stores))
        seen: dict[tuple[LogKey, int], Record] = {}
        for node, state, (evidence_held, frozen) in zip(self.nodes, held, forks, strict=True):
            assert (evidence_held, frozen) == ([], set()), f"{node.name} holds fork evidence"
            self._check_node(node, state, seen)

    def _check_node(
        self, node: Node, state: Snapshot, seen: dict[tuple[LogKey, int], Record]
    ) -> None:
        for log in self.written:
            if log.host == node.author.host:
                assert state.index[log].next_idx == len(self.written[log]), "author lacks own log"
        for log, records in state.records.items():
            head, name = state.index[log], f"{node.name}: log {self.log_name(log)}"
            assert [r.idx for r in records] == list(range(head.next_idx)), f"{name} has a gap"
            assert head.head_hash == record_hash(records[-1]), f"{name}: stale head hash"
            assert records == self.written[log][: head.next_idx], f"{name}: not what was written"
            if (log, head.next_idx) not in self.verified:  # equal records verify equally
                verify_chain(records, state.keys[log.host])
                self.verified.add((log, head.next_idx))
            for record in records:
                assert seen.setdefault((log, record.idx), record) == record, f"{name} diverged"
        newest = max((rs[-1].timestamp for rs in state.records.values()), default=0)
        assert state.clock >= newest, f"{node.name}: the clock is behind a record it holds"

    async def _converge(self) -> None:
        for first, second in line_pairs(self.nodes):
            await self._sync(first, second, 1000)
        expected = {log: Head(len(rs), record_hash(rs[-1])) for log, rs in self.written.items()}
        for node in self.nodes:
            assert await node.store.index() == expected, f"{node.name} did not converge"
            held = await every_record(node.store, expected)
            assert held == self.written, f"{node.name} holds other records"
            for log, records in held.items():
                opened = [open_record(self.sync_key, r) for r in records]
                assert opened == self.plaintexts[log]
        async with PeerClient(self.nodes[-1].target, stream_timeout=STREAM_TIMEOUT_S) as peer:
            again = await sync_with(self.nodes[0].store, peer)
        assert (again.pulled, again.pushed) == (0, 0), "a converged sync moves nothing"


TestConvergence = Convergence.TestCase
TestConvergence.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    print_blob=True,
)


async def test_two_peers_syncing_with_one_node_at_the_same_time_both_succeed(
    tmp_path: Path,
) -> None:
    """A node serves every trusted peer at once: concurrent pushes must all land."""
    key = SyncKey.generate()
    nodes: list[Node] = []

    async def sync(node: Node) -> None:
        async with PeerClient(nodes[1].target, stream_timeout=STREAM_TIMEOUT_S) as peer:
            await sync_with(node.store, peer, batch=1)  # many small batches interleave

    try:
        for name in ("n0", "hub", "n2"):
            author = Author(SigningKey.generate(), key)
            nodes.append(await Node.start(name, tmp_path / f"{name}.db", author))
        writers = (nodes[0], nodes[2])
        for node in writers:
            for n in range(20):
                await node.store.append(node.author, "notes", [b"%d" % n])
        outcomes = await asyncio.gather(*map(sync, writers), return_exceptions=True)
        assert [repr(o) for o in outcomes if o is not None] == []
        held = await nodes[1].store.index()
        assert {log.host: head.next_idx for log, head in held.items()} == {
            node.author.host: 20 for node in writers
        }
    finally:
        for node in nodes:
            await node.stop()
