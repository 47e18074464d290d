"""KV and history views converge, whatever order records arrive in (SPEC §3.7, §3.8, §7).

Three hosts write random sets, deletes, creates and history deletes with colliding
timestamps; their logs are delivered with `insert_batch` into separate stores in every
host order and in random interleavings (with duplicates and catch-ups at random
points). Every store must hold the same views, equal to a model of the rules and to a
full rebuild. Hypothesis prints its seed in the pytest header.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer import clock
from peer.apps import kv
from peer.apps.kv import Kv
from peer.apps.views import ViewEngine
from peer.crypto import Author, SigningKey, SyncKey
from peer.records import Record
from peer.store import HistoryEntry, KvRow, Skipped, Store
from tests.apps import Host, Snapshot, deliver, open_replica, snapshot

DAY_NS = 24 * 3600 * 10**9
KEYS = st.sampled_from(["k1", "k2", "k3"])
NAMESPACES = st.sampled_from(["default", "other"])
IDS = st.sampled_from(["e1", "e2", "e3", "e4"])
OP = st.one_of(
    st.tuples(st.just("set"), NAMESPACES, KEYS, st.binary(max_size=3)),
    st.tuples(st.just("del"), NAMESPACES, KEYS),
    st.tuples(st.just("create"), IDS, st.sampled_from(["ls", "make", "git status"])),
    st.tuples(st.just("hdel"), IDS),
)
# (writing host, timestamp, op): few timestamps, so ties (host, then idx) are common
WRITES = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), OP), min_size=1, max_size=30)


def write_all(sync: SyncKey, writes: list[tuple[int, int, tuple[object, ...]]]) -> list[Host]:
    hosts = [Host.new(sync) for _ in range(3)]
    for who, timestamp, op in writes:
        host = hosts[who]
        match op:
            case ("set", str(ns), str(key), bytes(value)):
                host.kv_set(key, value, timestamp, ns)
            case ("del", str(ns), str(key)):
                host.kv_delete(key, timestamp, ns)
            case ("create", str(entry_id), str(command)):
                host.history_create(entry_id, command, timestamp)
            case ("hdel", str(entry_id)):
                host.history_delete(entry_id, timestamp)
    return hosts


def model(hosts: list[Host], sync: SyncKey) -> Snapshot:
    """The views as the rules define them, computed from all records at once."""
    from peer.apps import history
    from peer.crypto import open_record
    from peer.store import HistoryCreate, HistoryDelete

    winners: dict[tuple[str, str], KvRow] = {}
    creates: dict[str, HistoryCreate] = {}
    deleted: set[str] = set()
    order = lambda r: (r.timestamp, r.host, r.idx)  # noqa: E731
    for record in (r for h in hosts for r in h.records):
        plaintext = open_record(sync, record)
        if record.tag == kv.TAG:
            row = kv.decide(record, plaintext)
            old = winners.get((row.ns, row.key))
            if old is None or order(row) > order(old):
                winners[(row.ns, row.key)] = row
            continue
        decided = history.decide(record, plaintext)
        if isinstance(decided, HistoryDelete):
            deleted.add(decided.entry_id)
        elif decided.entry.id not in creates or order(decided) > order(creates[decided.entry.id]):
            creates[decided.entry.id] = decided
    live = [c.entry for i, c in creates.items() if i not in deleted]
    live.sort(key=lambda e: (e.timestamp, e.id))
    return Snapshot([winners[k] for k in sorted(winners)], live, sorted(deleted))


async def host_order(
    path: Path, sync: SyncKey, hosts: list[Host], order: tuple[int, ...]
) -> Snapshot:
    """Deliver whole hosts in `order` (kv log, then history log), catching up after each."""
    store, views = await open_replica(path, sync)
    try:
        for who in order:
            for tag in ("history", "kv"):
                records = [r for r in hosts[who].records if r.tag == tag]
                if records:
                    await deliver(store, records, hosts)
            await views.catch_up()
        return await snapshot(store)
    finally:
        await store.close()


async def interleaved(path: Path, sync: SyncKey, hosts: list[Host], rng: random.Random) -> Snapshot:
    """Deliver runs of records from random logs (sometimes again), catching up at random."""
    store, views = await open_replica(path, sync)
    logs = [[r for r in h.records if r.tag == tag] for h in hosts for tag in ("kv", "history")]
    sent = [0] * len(logs)
    try:
        while any(sent[n] < len(log) for n, log in enumerate(logs)):
            n = rng.choice([n for n, log in enumerate(logs) if sent[n] < len(log)])
            start = max(0, sent[n] - rng.choice([0, 0, 1, 2]))  # a resend is a no-op
            end = min(len(logs[n]), sent[n] + rng.randint(1, 4))
            await deliver(store, logs[n][start:end], hosts)
            sent[n] = end
            if rng.random() < 0.5:
                await views.catch_up()
        await views.catch_up()
        incremental = await snapshot(store)
        await views.rebuild()
        assert await snapshot(store) == incremental, "a full rebuild differs from incremental"
        return incremental
    finally:
        await store.close()


@settings(max_examples=20)
@given(writes=WRITES, seed=st.integers(0, 2**32))
def test_every_arrival_order_gives_the_same_views_as_the_rules_and_a_rebuild(
    writes: list[tuple[int, int, tuple[object, ...]]], seed: int
) -> None:
    sync = SyncKey.generate()
    hosts = write_all(sync, writes)
    expected = model(hosts, sync)

    async def scenario(root: Path) -> None:
        for n, order in enumerate(itertools.permutations(range(3))):
            assert await host_order(root / f"p{n}.db", sync, hosts, order) == expected, order
        for n in range(2):
            rng = random.Random(seed + n)
            assert await interleaved(root / f"i{n}.db", sync, hosts, rng) == expected

    with tempfile.TemporaryDirectory() as root:
        asyncio.run(scenario(Path(root)))


# -- concrete examples of the rules ----------------------------------------------------


async def test_equal_timestamps_are_decided_by_host_then_idx_on_every_node(tmp_path: Path) -> None:
    sync = SyncKey.generate()
    a, b = sorted([Host.new(sync), Host.new(sync)], key=lambda h: h.host)
    a.kv_set("k", b"from a, idx 0", 100)
    a.kv_set("k", b"from a, idx 1", 100)
    b.kv_set("k", b"from b (greater host id)", 100)
    a.kv_set("j", b"a wins j: idx 1 beats idx 0 at one timestamp", 100)
    values = []
    for n, order in enumerate([(a, b), (b, a)]):
        store, views = await open_replica(tmp_path / f"{n}.db", sync)
        for host in order:
            await deliver(store, host.records, [a, b])
            await views.catch_up()
        values.append([(i.key, i.value) for i in await store.views.kv_list()])
        await store.close()
    assert (
        values[0]
        == values[1]
        == [
            ("j", b"a wins j: idx 1 beats idx 0 at one timestamp"),
            ("k", b"from b (greater host id)"),
        ]
    )


async def test_a_history_delete_that_arrives_before_its_create_still_deletes(
    tmp_path: Path,
) -> None:
    sync = SyncKey.generate()
    creator, deleter = Host.new(sync), Host.new(sync)
    creator.history_create("e1", "rm -rf build", 10)
    creator.history_create("e2", "make", 11)
    deleter.history_delete("e1", 5)  # even with an older timestamp
    store, views = await open_replica(tmp_path / "a.db", sync)
    await deliver(store, deleter.records, [creator, deleter])
    await views.catch_up()
    await deliver(store, creator.records, [creator, deleter])
    await views.catch_up()
    assert [e.command for e in await store.views.history_list()] == ["make"]
    assert await store.views.history_deleted() == ["e1"]
    await store.close()


async def test_records_the_views_cannot_use_are_skipped_and_counted(tmp_path: Path) -> None:
    sync = SyncKey.generate()
    good = Host.new(sync)
    good.kv_set("k", b"v", 1)
    good.write("kv", 2, b"not json")
    good.write("kv", 3, b'{"op": "rename", "ns": "default", "key": "k"}')
    good.write("history", 4, b'{"op": "create", "id": "x"}')  # fields missing
    good.write("notes", 5, b"another app's tag: not a view's business")
    stranger = Host.new(SyncKey.generate())  # another user's sync key
    stranger.kv_set("k", b"unreadable", 9)
    future = Host(Author(SigningKey.generate(), sync, version="v9"))
    future.kv_set("k", b"a format this node does not know", 10)
    hosts = [good, stranger, future]
    store, views = await open_replica(tmp_path / "a.db", sync)
    for host in hosts:
        await deliver(store, host.records, hosts)
    report = await views.catch_up()
    assert report.applied == 6
    assert report.skipped == Skipped(undecryptable=1, unknown_version=1, malformed=3)
    assert await store.views.skipped() == report.skipped
    assert await store.views.kv_get("default", "k") == b"v"
    rebuilt = await views.rebuild()
    assert (rebuilt.applied, rebuilt.skipped) == (report.applied, report.skipped)
    assert await store.views.skipped() == report.skipped
    await store.close()


async def test_a_relay_keeps_no_views_and_says_so(tmp_path: Path) -> None:
    from peer.errors import UsageError

    store, _ = await open_replica(tmp_path / "relay.db", SyncKey.generate())
    relay = ViewEngine(store, None)
    assert (await relay.catch_up()).applied == 0
    with pytest.raises(UsageError, match="relay"):
        await relay.catch_up(required=True)
    await store.close()


# -- the clock under skew --------------------------------------------------------------


async def test_a_write_made_after_syncing_wins_even_with_a_clock_three_days_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = SyncKey.generate()
    now = time.time_ns()
    walls = {"a": now, "b": now - 3 * DAY_NS}
    nodes: dict[str, tuple[Store, Kv, Author]] = {}
    for name in walls:
        author = Author(SigningKey.generate(), sync)
        store = await Store.open(tmp_path / f"{name}.db")  # the default future bound
        await store.add_host(author.signing.public_key)
        nodes[name] = (store, Kv(ViewEngine(store, sync), author), author)

    def on(name: str) -> Kv:
        monkeypatch.setattr(clock, "wall_clock_ns", lambda: walls[name])
        return nodes[name][1]

    async def sync_from(source: str, target: str) -> None:
        store, _, author = nodes[source]
        records = await store.read_range(author.host, "kv", 0, 100)
        await nodes[target][0].insert_batch(records, {author.host: author.signing.public_key})

    first = await on("a").set("k", "1")
    await sync_from("a", "b")
    second = await on("b").set("k", "2")
    await sync_from("b", "a")
    assert second.timestamp > first.timestamp  # B's clock moved past what it received
    for name in walls:
        assert await on(name).get("k") == b"2"
        await nodes[name][0].close()


async def test_a_clock_beyond_the_future_bound_does_not_drag_the_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time_ns()
    monkeypatch.setattr(clock, "wall_clock_ns", lambda: now)
    sync = SyncKey.generate()
    wild = Host.new(sync)
    wild.kv_set("k", b"from a clock 30 days ahead", now + 30 * DAY_NS)
    store, _ = await open_replica(tmp_path / "a.db", sync)
    await deliver(store, wild.records, [wild])
    assert await store.clock_floor() < now + DAY_NS
    await store.close()


def entry(entry_id: str) -> HistoryEntry:
    return HistoryEntry(entry_id, "true", "/", 0, 0, 1, "h", "s")


async def test_record_fields_reach_the_kv_view_as_written(tmp_path: Path) -> None:
    sync = SyncKey.generate()
    host = Host.new(sync)
    record: Record = host.kv_set("bytes", bytes(range(256)), 7, ns="bin")
    store, views = await open_replica(tmp_path / "a.db", sync)
    await deliver(store, host.records, [host])
    await views.catch_up()
    assert await store.views.kv_rows() == [
        KvRow("bin", "bytes", bytes(range(256)), 7, host.host, record.idx)
    ]
    await store.close()


async def test_bulk_writes_applied_from_plaintexts_equal_a_rebuild(tmp_path: Path) -> None:
    sync = SyncKey.generate()
    author = Author(SigningKey.generate(), sync)
    store, views = await open_replica(tmp_path / "a.db", sync)
    await store.add_host(author.signing.public_key)
    kv_app = Kv(views, author)
    await kv_app.set("k0", "set one by one first")
    async for _ in kv_app.set_many(((f"k{n % 300}", b"%d" % n) for n in range(25_000)), "bulk"):
        pass
    assert await store.views.applied() == 25_001
    assert await kv_app.get("k299", "bulk") == b"24899"
    written = await snapshot(store)
    await views.rebuild()
    assert await snapshot(store) == written
    await store.close()
