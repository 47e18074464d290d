"""Sync sessions over real gRPC between in-process nodes (SPEC §3, §4).

Convergence along pairs, lines and triangles; the paging boundary table and atuin's
regression cases (research/atuin.md §2.5, failure modes 1-3 and 13-15); interrupted
sessions; duplicate and overlapping delivery; hostile pushes; forks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from peer import sync as peer_sync
from peer.client import PeerClient
from peer.crypto import Author, SyncKey, open_record, record_hash
from peer.errors import (
    ForgeryError,
    ForkDetected,
    GapError,
    IntegrityError,
    LimitExceeded,
    LogFrozen,
    PeerUnavailable,
    StoreError,
    WrongKey,
)
from peer.records import Head, LogKey, Range, Record
from peer.remote import Remote
from peer.service import servicer as servicer_module
from peer.service.memory import MemoryRemote, serve_in_memory
from peer.store import Store
from peer.sync import PullClaims, SyncSession, SyncSummary, sync_with
from tests.conftest import new_author, open_store, signed_chain
from tests.nodes import (
    SESSION_TIMEOUT_S,
    Node,
    Nodes,
    assert_converged,
    batches_of,
    everything,
    keys_of,
    next_idx,
    sync,
)


async def moved_nothing(a: Node, b: Node, batch: int = 1000) -> None:
    again = await sync(a, b, batch)
    assert (again.pulled, again.pushed, again.diverged) == (0, 0, [])


# -- convergence ----------------------------------------------------------------------


async def test_two_nodes_converge_on_the_union_of_their_writes(nodes: Nodes) -> None:
    key = SyncKey.generate()
    a = await nodes.node("a", sync=key)
    b = await nodes.node("b", sync=key)
    await a.append_each("kv", 3)
    await a.store.append(a.author, "history", [b"h%d" % i for i in range(40)])
    await b.append_each("kv", 5)

    summary = await sync(a, b, batch=7)

    assert (summary.pulled, summary.pushed) == (5, 43)
    assert summary.per_log == {a.log("kv"): [0, 3], a.log("history"): [0, 40], b.log("kv"): [5, 0]}
    held = await assert_converged(a.store, b.store)
    assert set(held) == {a.log("kv"), a.log("history"), b.log("kv")}
    await moved_nothing(a, b)
    await moved_nothing(b, a)


async def test_three_nodes_converge_after_pairwise_sessions(nodes: Nodes) -> None:
    key = SyncKey.generate()
    a, b, c = [await nodes.node(name, sync=key) for name in "abc"]
    for n, node in enumerate((a, b, c)):
        await node.append_each("kv", 2 + n)
        await node.store.append(node.author, "history", [b"x"] * (300 + n))

    await sync(a, b)
    await sync(c, b)  # c gets a's and b's, b gets c's
    await sync(a, b)  # a gets c's through b

    held = await assert_converged(a.store, b.store, c.store)
    assert len(held) == 6
    assert sum(len(records) for records in held.values()) == 2 + 3 + 4 + 300 + 301 + 302
    for one, other in ((a, b), (b, c), (a, c)):
        await moved_nothing(one, other)


async def test_a_line_relays_records_through_a_node_without_the_sync_key(nodes: Nodes) -> None:
    """A - B - C: B's author holds another sync key (it cannot read A's or C's payloads),
    yet it stores, verifies and forwards them; the engine never decrypts."""
    key = SyncKey.generate()
    a = await nodes.node("a", sync=key)
    b = await nodes.node("relay", sync=SyncKey.generate())
    c = await nodes.node("c", sync=key)
    from_a = await a.append_each("notes", 4)
    from_c = await c.append_each("notes", 3)
    from_b = await b.append_each("own", 2)

    first = await sync(a, b)  # a -> b
    assert (first.pulled, first.pushed) == (2, 4)
    second = await sync(b, c)  # b -> c carries a's records; b gets c's
    assert (second.pulled, second.pushed) == (3, 6)
    assert await c.store.read_range(a.host, "notes", 0, 100) == from_a

    third = await sync(a, b)  # a gets c's records through b
    assert (third.pulled, third.pushed) == (3, 0)
    assert await a.store.read_range(c.host, "notes", 0, 100) == from_c
    await assert_converged(a.store, b.store, c.store)

    # The payloads are readable where the key is, and nowhere else.
    relayed = await b.store.read_range(a.host, "notes", 0, 100)
    assert [open_record(key, r) for r in relayed] == [b"a-notes-%d" % i for i in range(4)]
    with pytest.raises(WrongKey):
        open_record(b.author.sync, relayed[0])
    at_a = await a.store.read_range(b.host, "own", 0, 100)
    assert at_a == from_b
    with pytest.raises(WrongKey):
        open_record(key, at_a[0])


# -- paging boundaries -----------------------------------------------------------------

PAGES = (1, 4, 100)
PAGING_CASES = [
    (page, count)
    for page in PAGES
    for count in sorted({n for n in (0, 1, page - 1, page, page + 1, 2 * page, 2 * page + 1)})
    if count >= 0
]


async def _source_and_receiver(
    nodes: Nodes, direction: str, held: int, count: int
) -> tuple[Node, Node, list[Record]]:
    """`a` holds held+count records of one log, every one signed; `b` holds the first
    `held`. Returns (client, server, records) for the direction under test."""
    a = await nodes.node("a", serve=direction == "pull")
    b = await nodes.node("b", serve=direction == "push")
    records = signed_chain(a.author, "t", held + count)
    if records:
        await a.store.insert_batch(records, keys_of(a.author))
    if held:
        await b.store.insert_batch(records[:held], keys_of(a.author))
    if direction == "pull":  # b, missing records, pulls from a's server
        return b, a, records
    return a, b, records  # a pushes what b lacks to b's server


@pytest.mark.parametrize("direction", ["pull", "push"])
@pytest.mark.parametrize("held", ["empty", "partial"])
@pytest.mark.parametrize(("page", "count"), PAGING_CASES)
async def test_paging_boundaries_move_exactly_what_is_missing(
    nodes: Nodes, direction: str, held: str, page: int, count: int
) -> None:
    """Counts 0, 1, B-1, B, B+1, 2B, 2B+1 for batch sizes 1, 4, 100, into an empty
    receiver or one already holding B+1 records: exactly `count` records move, none is
    skipped, none is re-sent, and the session ends."""
    already = page + 1 if held == "partial" else 0
    client, server, records = await _source_and_receiver(nodes, direction, already, count)

    summary = await sync(client, server, batch=page)

    moved = summary.pulled if direction == "pull" else summary.pushed
    other = summary.pushed if direction == "pull" else summary.pulled
    assert (moved, other) == (count, 0)
    held_now = await assert_converged(client.store, server.store)
    assert held_now == ({records[0].log: records} if records else {})
    await moved_nothing(client, server, batch=page)


@pytest.mark.parametrize(("page", "count"), [(p, c) for p, c in PAGING_CASES if c])
async def test_a_log_signed_everywhere_is_cut_exactly_at_the_batch_size(
    nodes: Nodes, page: int, count: int
) -> None:
    a = await nodes.node("a")
    await a.store.insert_batch(signed_chain(a.author, "t", count + 3), keys_of(a.author))
    async with a.client() as peer:
        sizes = [
            len(records) async for records, _ in peer.pull([Range(a.host, "t", 3, 3 + count)], page)
        ]
    assert sizes == [page] * (count // page) + ([count % page] if count % page else [])


# atuin's regression table (crates/atuin-server/tests/sync.rs, research/atuin.md §2.5):
# (case, max idx on the side that has more, max idx on the other side or None, page,
# records expected to move). Max idx m means the log holds m + 1 records.
ATUIN_CASES = [
    ("partial", 5, 2, 100, 3),
    ("other side empty", 5, None, 100, 6),
    ("exact page", 4, 0, 4, 4),
    ("empty, page+1", 4, None, 4, 5),
    ("single record", 0, None, 100, 1),
    ("exact pages", 9, 1, 4, 8),
    ("partial page", 6, 0, 4, 6),
]


@pytest.mark.parametrize("direction", ["pull", "push"])
@pytest.mark.parametrize(
    ("case", "more", "less", "page", "expected"), ATUIN_CASES, ids=[c[0] for c in ATUIN_CASES]
)
async def test_atuin_paging_regressions(
    nodes: Nodes,
    direction: str,
    case: str,
    more: int,
    less: int | None,
    page: int,
    expected: int,
) -> None:
    held = 0 if less is None else less + 1
    client, server, _ = await _source_and_receiver(nodes, direction, held, more + 1 - held)
    summary = await sync(client, server, batch=page)
    assert (summary.pulled if direction == "pull" else summary.pushed) == expected, case
    await assert_converged(client.store, server.store)
    await moved_nothing(client, server, batch=page)


async def test_a_bulk_log_is_cut_at_its_signatures_and_nothing_is_skipped(nodes: Nodes) -> None:
    """One append of 1000 records is signed at idx 255, 511, 767 and 999 only, so a
    batch of 100 becomes 256: the target is exceeded rather than a batch left unsigned."""
    a = await nodes.node("a")
    b = await nodes.node("b", serve=False)
    await a.store.append(a.author, "bulk", [b"%d" % i for i in range(1000)])
    async with a.client() as peer:
        sizes = [len(r) async for r, _ in peer.pull([Range(a.host, "bulk", 0, 1000)], 100)]
    assert sizes == [256, 256, 256, 232]
    summary = await sync(b, a, batch=100)
    assert summary.pulled == 1000
    await assert_converged(a.store, b.store)
    await moved_nothing(b, a, batch=100)


# -- interrupted sessions ---------------------------------------------------------------

TOTAL = 5000


async def _interrupt(task: asyncio.Task[object], receiver: Path, log: LogKey) -> None:
    """Cancel `task` once the store at `receiver` has committed some of the log.

    Polled through a connection of its own: the receiver's own connection would also
    show rows of a transaction still in progress (see test_service's dirty-read test).
    """
    observer = await Store.open(receiver)
    try:
        for _ in range(20_000):
            if task.done() or await next_idx(observer, log) > 0:
                break
            await asyncio.sleep(0.001)
    finally:
        await observer.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, SESSION_TIMEOUT_S)


async def test_an_interrupted_pull_resumes_exactly(nodes: Nodes, tmp_path: Path) -> None:
    a = await nodes.node("a")
    records = await a.store.append(a.author, "t", [os.urandom(64) for _ in range(TOTAL)])
    log = a.log("t")
    receiver = await open_store(tmp_path / "receiver.db")
    try:
        async with PeerClient(a.target) as peer:
            task = asyncio.create_task(sync_with(receiver, peer, batch=100))
            await _interrupt(task, tmp_path / "receiver.db", log)
    finally:
        # The receiver restarts, as `peer sync` stopped by Ctrl-C does. (Continuing with
        # the same connection can hit the store bug in test_a_cancelled_write_...)
        await receiver.close()
    receiver = await open_store(tmp_path / "receiver.db")
    try:
        held = await next_idx(receiver, log)
        assert 0 < held < TOTAL, "the session was not interrupted mid-stream"
        assert await receiver.read_range(a.host, "t", 0, TOTAL) == records[:held]
        async with PeerClient(a.target) as peer:
            summary = await asyncio.wait_for(sync_with(receiver, peer, batch=100), 30)
        assert (summary.pulled, summary.pushed) == (TOTAL - held, 0)
        await assert_converged(a.store, receiver)
    finally:
        await receiver.close()


async def test_an_interrupted_push_resumes_exactly(nodes: Nodes) -> None:
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    records = await a.store.append(a.author, "t", [os.urandom(64) for _ in range(TOTAL)])
    log = a.log("t")
    async with PeerClient(b.target) as peer:
        task = asyncio.create_task(sync_with(a.store, peer, batch=100))
        await _interrupt(task, b.store.path, log)
    await b.restart()  # server and store: see the note in the pull test above
    held = await next_idx(b.store, log)
    assert 0 < held < TOTAL, "the session was not interrupted mid-stream"
    assert await b.store.read_range(a.host, "t", 0, TOTAL) == records[:held]

    summary = await sync(a, b, batch=100)

    assert (summary.pulled, summary.pushed) == (0, TOTAL - held)
    await assert_converged(a.store, b.store)


async def session_with(store: Store, peer: Remote, stop: Callable[[], bool]) -> SyncSummary:
    """A session as a daemon's link runs it: pull, then push until `stop` says so."""
    session = await SyncSession.open(store, peer, batch=100)
    await session.pull()
    await session.push(stop=stop)
    await session.check_served()
    return session.summary


async def test_a_push_stops_once_the_peer_pulls_by_itself(nodes: Nodes) -> None:
    """The push's `stop` (a daemon's mesh: is this peer pulling from us now?) stops the
    push at a batch boundary with a normal end of stream; what went is contiguous, and
    the next session moves the rest."""
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    for _ in range(6):
        await a.store.append(a.author, "t", [os.urandom(32) for _ in range(100)])
    async with PeerClient(b.target) as peer:
        skipped = await session_with(a.store, peer, stop=lambda: True)
        assert (skipped.pushed, skipped.left_to_peer) == (0, True)
        assert await next_idx(b.store, a.log("t")) == 0
        asked = 0

        def after_two_batches() -> bool:
            nonlocal asked
            asked += 1
            return asked > 3  # once before the push, then once per batch

        cut = await session_with(a.store, peer, stop=after_two_batches)
    assert (cut.pushed, cut.left_to_peer) == (200, True)
    assert await next_idx(b.store, a.log("t")) == 200
    rest = await sync(a, b, batch=100)
    assert (rest.pushed, rest.left_to_peer) == (400, False)
    await assert_converged(a.store, b.store)


async def test_a_push_leaves_out_what_the_peer_pulled_meanwhile(nodes: Nodes) -> None:
    """The push's `held` (a daemon's mesh: what our server's pulls sent this peer) is
    asked before each batch: a batch the peer holds all of is left out, the rest go."""
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    for _ in range(6):
        await a.store.append(a.author, "t", [os.urandom(32) for _ in range(100)])
    log = a.log("t")
    pulled = {log: 0}
    async with PeerClient(b.target) as peer:
        session = await SyncSession.open(a.store, peer, batch=100)
        pulled[log] = 300  # the peer pulled 0-299 after the plan: those batches stay here
        await b.store.add_host(a.author.signing.public_key)
        await b.store.insert_batch(await a.store.read_range(a.host, "t", 0, 300))
        await session.push(held=lambda: pulled)
    assert (session.summary.pushed, session.summary.left_to_peer) == (300, True)
    await assert_converged(a.store, b.store)


async def test_sessions_sharing_claims_pull_each_record_once(nodes: Nodes) -> None:
    """Two sessions of one node (a mesh's links share their PullClaims) that lack the
    same records, from two peers at once: one pulls them, the other waits for that pull
    and then finds nothing missing (a node back in a mesh took its backlog from every
    neighbour)."""
    a = await nodes.node("a", serve=False)
    b, c = await nodes.node("b"), await nodes.node("c")
    x = await nodes.node("x", serve=False)
    for _ in range(4):
        await a.store.append(a.author, "t", [os.urandom(32) for _ in range(500)])
    for holder in (b, c):
        await sync(a, holder)
    claims = PullClaims()
    async with PeerClient(b.target) as to_b, PeerClient(c.target) as to_c:
        sessions = [await SyncSession.open(x.store, peer, batch=100) for peer in (to_b, to_c)]
        await asyncio.wait_for(asyncio.gather(*(s.pull(claims) for s in sessions)), 60)
    assert sorted(s.summary.pulled for s in sessions) == [0, 2000]
    assert sum(s.summary.duplicates for s in sessions) == 0
    assert await next_idx(x.store, a.log("t")) == 2000


async def test_a_claim_is_waited_for_at_most_claim_wait_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session whose ranges another pulls waits at most CLAIM_WAIT_S (a stalled peer
    holds no other link up), then pulls them itself."""
    monkeypatch.setattr(peer_sync, "CLAIM_WAIT_S", 0.2)
    claims = PullClaims()
    wanted = [Range(b"h" * 16, "t", 0, 10)]

    async def nothing_arrived(ranges: list[Range]) -> list[Range]:
        return ranges

    async with claims.pulling(wanted, nothing_arrived) as first:
        assert first == wanted
        began = time.monotonic()
        async with claims.pulling(wanted, nothing_arrived) as second:
            assert second == wanted
        assert 0.2 <= time.monotonic() - began < 5
    async with claims.pulling(wanted, nothing_arrived) as again:  # released: no wait
        assert again == wanted


async def test_a_peer_that_just_read_our_index_is_left_to_pull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that opened a session (read this node's index) within SESSION_GRACE_S is
    taking by itself: its pull comes next, so a round of ours does not push to it too
    (a node back in a mesh was pushed its backlog by every neighbour at once)."""
    monkeypatch.setattr(servicer_module, "SESSION_GRACE_S", 0.3)
    store = await open_store(tmp_path / "a.db")
    servicer, feed = await serve_in_memory(store)
    peer_id, stranger = os.urandom(32), os.urandom(32)
    try:
        assert not servicer.is_taking(peer_id)
        await MemoryRemote(servicer, caller=peer_id.hex()).get_index()
        assert servicer.is_taking(peer_id) and not servicer.is_taking(stranger)
        await asyncio.sleep(0.4)
        assert not servicer.is_taking(peer_id)  # no pull came: pushing is ours again
    finally:
        await feed.close()
        await store.close()


async def test_a_cancelled_write_leaves_the_store_usable(tmp_path: Path, author: Author) -> None:
    """How a serving node gets there: a client cancelling a push mid-stream cancels the
    server's handler inside insert_batch; a cancelled sync task cancels its apply task.
    Measured: 7 of 20 pushes cancelled at random times left the server's store wedged."""
    records = signed_chain(author, "t", 3)
    store = await open_store(tmp_path / "s.db")
    try:
        task = asyncio.create_task(store.insert_batch(records, keys_of(author)))
        await asyncio.sleep(0)  # the task is now waiting for BEGIN IMMEDIATE
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            result = await store.insert_batch(records, keys_of(author))
        except StoreError as exc:
            pytest.fail(f"the store is wedged: {exc}")
        assert result.added == 3
    finally:
        await store.close()


# -- duplicates and overlaps -------------------------------------------------------------


async def test_the_same_batches_pushed_twice_change_nothing(nodes: Nodes) -> None:
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    records = signed_chain(a.author, "t", 10)
    keys = keys_of(a.author)
    async with b.client() as peer:
        first = await peer.push(batches_of((records[:4], keys), (records[4:], {})))
        before = await b.store.index()
        second = await peer.push(batches_of((records[:4], keys), (records[4:], keys)))
        overlapping = await peer.push(batches_of((records[2:7], keys), (records[5:], keys)))
    assert first == (10, 0)
    assert second == (0, 10)
    assert overlapping == (0, 10)
    assert await b.store.index() == before
    assert await b.store.read_range(a.host, "t", 0, 100) == records


async def test_overlapping_pushes_in_one_stream_add_only_what_is_new(nodes: Nodes) -> None:
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    records = signed_chain(a.author, "t", 10)
    keys = keys_of(a.author)
    async with b.client() as peer:
        result = await peer.push(
            batches_of((records[:6], keys), (records[3:8], {}), (records[3:], {}))
        )
    assert result == (10, 3 + 5)
    assert await b.store.read_range(a.host, "t", 0, 100) == records


async def test_overlapping_pulls_are_duplicates_on_arrival(nodes: Nodes) -> None:
    a = await nodes.node("a")
    b = await nodes.node("b", serve=False)
    records = signed_chain(a.author, "t", 10)
    await a.store.insert_batch(records, keys_of(a.author))
    added = duplicates = 0
    async with a.client() as peer:
        for wanted in (
            Range(a.host, "t", 0, 6),
            Range(a.host, "t", 3, 10),
            Range(a.host, "t", 0, 10),
        ):
            async for batch, keys in peer.pull([wanted], 4):
                result = await b.store.insert_batch(batch, keys_of(a.author) | keys)
                added, duplicates = added + result.added, duplicates + result.duplicates
    assert (added, duplicates) == (10, 3 + 10)
    await assert_converged(a.store, b.store)


async def test_overlapping_ranges_in_one_pull_are_merged_and_sent_once(nodes: Nodes) -> None:
    a = await nodes.node("a")
    b = await nodes.node("b", serve=False)
    records = signed_chain(a.author, "t", 10)
    await a.store.insert_batch(records, keys_of(a.author))
    ranges = [Range(a.host, "t", 0, 6), Range(a.host, "t", 3, 10)]
    added = duplicates = 0
    async with a.client() as peer:
        async for batch, keys in peer.pull(ranges, 1000):
            result = await b.store.insert_batch(batch, keys_of(a.author) | keys)
            added, duplicates = added + result.added, duplicates + result.duplicates
    assert (added, duplicates) == (10, 0)
    await assert_converged(a.store, b.store)


@pytest.mark.parametrize("direction", ["pull", "push"])
async def test_a_log_of_large_records_syncs(nodes: Nodes, direction: str) -> None:
    """900 records of 10 KB in one append: a batch of 1000 would be a 9 MB message, past
    the 8 MiB cap, so batches must be cut by bytes too (fixed in 43d0b03)."""
    a = await nodes.node("a", serve=direction == "pull")
    b = await nodes.node("b", serve=direction == "push")
    await a.store.append(a.author, "big", [os.urandom(10_000) for _ in range(900)])
    try:
        if direction == "pull":
            summary = await sync(b, a)
        else:
            summary = await sync(a, b)
    except LimitExceeded as exc:
        pytest.fail(f"the session failed: {exc}")
    assert summary.pulled + summary.pushed == 900
    await assert_converged(a.store, b.store)


# -- hostile pushes ---------------------------------------------------------------------


@pytest.fixture
async def victim(nodes: Nodes) -> tuple[Node, Node, list[Record]]:
    """`b` serves and holds idx 0..2 of `a`'s log "t"; `records` is that log to idx 7."""
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    records = signed_chain(a.author, "t", 8)
    await b.store.insert_batch(records[:3], keys_of(a.author))
    return a, b, records


def _forged_under(author: Author, forger: Author, count: int, start: Head) -> list[Record]:
    """Records that claim `author`'s host but are signed with `forger`'s key."""
    impostor = Author(forger.signing, author.sync)
    impostor.host = author.host
    return impostor.write("t", start, list(range(7, 7 + count)), [b"forged"] * count)


def _hostile_batches(a: Author, records: list[Record]) -> dict[str, list[Record]]:
    nxt = records[3:6]
    head = Head(3, record_hash(records[2]))
    return {
        "tampered payload": [*nxt[:2], dataclasses.replace(nxt[2], payload=b"x" + nxt[2].payload)],
        "tampered timestamp": [nxt[0], dataclasses.replace(nxt[1], timestamp=1), nxt[2]],
        "forged signature": [*nxt[:2], dataclasses.replace(nxt[2], sig=os.urandom(64))],
        "broken chain link": [nxt[0], dataclasses.replace(nxt[1], prev=os.urandom(32)), nxt[2]],
        "unsigned end": [*nxt[:2], dataclasses.replace(nxt[2], sig=b"")],
        "another key under this host": _forged_under(a, new_author(), 3, head),
    }


@pytest.mark.parametrize(
    "case",
    [
        "tampered payload",
        "tampered timestamp",
        "forged signature",
        "broken chain link",
        "unsigned end",
        "another key under this host",
    ],
)
async def test_a_forged_push_is_refused_and_nothing_of_it_is_stored(
    victim: tuple[Node, Node, list[Record]], case: str
) -> None:
    a, b, records = victim
    batch = _hostile_batches(a.author, records)[case]
    other = new_author()
    good_other_log = signed_chain(other, "fine", 3)  # all-or-nothing: this goes too
    before = await b.store.index()
    async with b.client() as peer:
        with pytest.raises(ForgeryError):  # as the peer raised it, not a ProtocolError
            await peer.push(batches_of((good_other_log + batch, keys_of(a.author, other))))
        with pytest.raises(ForgeryError):  # on its own too
            await peer.push(batches_of((batch, {})))
    assert await b.store.index() == before
    assert await b.store.forks() == []
    assert await b.store.frozen_logs() == set()


async def test_a_new_host_offered_with_someone_elses_key_is_refused(nodes: Nodes) -> None:
    a, m = new_author(), new_author()
    b = await nodes.node("b")
    forged = _forged_under(a, m, 2, Head(0))
    async with b.client() as peer:
        with pytest.raises(ForgeryError, match="not its key"):
            await peer.push(batches_of((forged, {a.host: m.signing.public_key})))
        with pytest.raises(IntegrityError) as unknown:  # no key at all: FAILED_PRECONDITION
            await peer.push(batches_of((signed_chain(a, "t", 2), {})))
        assert not isinstance(unknown.value, GapError)
    assert await b.store.index() == {}


async def test_a_gap_is_refused_with_the_idx_expected(
    victim: tuple[Node, Node, list[Record]],
) -> None:
    a, b, records = victim
    before = await b.store.index()
    async with b.client() as peer:
        with pytest.raises(GapError) as caught:
            await peer.push(batches_of((records[5:], keys_of(a.author))))
        assert caught.value.expected_idx == 3
        # A good first batch then a gap: the first stays (each batch is its own unit).
        with pytest.raises(GapError) as again:
            await peer.push(batches_of((records[3:4], {}), (records[6:], {})))
        assert again.value.expected_idx == 4
    assert before[LogKey(a.author.host, "t")].next_idx == 3
    assert await next_idx(b.store, LogKey(a.author.host, "t")) == 4
    assert await b.store.read_range(a.author.host, "t", 0, 100) == records[:4]


# -- forks ------------------------------------------------------------------------------


async def test_a_fork_is_refused_kept_and_its_log_is_frozen_everywhere_it_is_seen(
    nodes: Nodes,
) -> None:
    key = SyncKey.generate()
    a = await nodes.node("a", sync=key)
    b = await nodes.node("b", sync=key)
    c = await nodes.node("c", sync=key, serve=False)
    honest = await a.append_each("t", 3)
    await a.append_each("u", 2)
    await sync(b, a)
    log = a.log("t")
    # The same host key signs another record at idx 1 (a cloned device).
    fork = a.author.write("t", Head(1, record_hash(honest[0])), [5], [b"evil"])

    async with b.client() as peer:
        with pytest.raises(ForkDetected):
            await peer.push(batches_of((fork, {})))
        remote = await peer.get_index()
        assert remote.frozen == {log}
        assert remote.logs[log] == Head(3, record_hash(honest[2]))
        # Frozen: honest records of that log are refused too, and it is not served.
        more = await a.append_each("t", 2)
        with pytest.raises(LogFrozen):
            await peer.push(batches_of((more, {})))
        assert [r async for r in peer.pull([Range(a.host, "t", 0, 3)])] == []

    (evidence,) = await b.store.forks()
    assert (evidence.log, evidence.idx, evidence.offered) == (log, 1, tuple(fork))
    assert evidence.held_hash == record_hash(honest[1])
    assert await b.store.read_range(a.host, "t", 0, 10) == honest

    # a wrote on (its own copy is not frozen); sessions leave the frozen log alone.
    await a.append_each("u", 1)
    pushed = await sync(a, b)
    assert (pushed.pulled, pushed.pushed) == (0, 1)
    assert log not in pushed.per_log
    pulled = await sync(b, a)  # b as the client does not pull it either
    assert (pulled.pulled, pulled.pushed) == (0, 0)
    assert await next_idx(b.store, log) == 3

    fresh = await sync(c, b)  # a third node gets everything but the frozen log
    assert fresh.pulled == 3
    assert set(await everything(c.store)) == {a.log("u")}


async def test_equal_lengths_with_different_heads_prove_the_fork_instead_of_diverging(
    nodes: Nodes,
) -> None:
    """Two nodes hold the same number of records of a log but different last records (a
    cloned key wrote both): the session pulls the peer's head so the fork is proven and
    kept, rather than both nodes diverging silently (reliability C9)."""
    key = SyncKey.generate()
    a = await nodes.node("a", sync=key)
    b = await nodes.node("b", sync=key, serve=False)
    honest = await a.append_each("t", 3)
    keys = {a.host: a.author.signing.public_key}
    await b.store.insert_batch(honest[:2], keys)
    fork = a.author.write("t", Head(2, record_hash(honest[1])), [9], [b"other"])
    await b.store.insert_batch(fork, keys)  # b holds 3 records too, the last one different
    with pytest.raises(ForkDetected):
        await sync(b, a)
    (evidence,) = await b.store.forks()
    assert (evidence.log, evidence.idx, evidence.offered) == (a.log("t"), 2, (honest[2],))
    assert await b.store.read_range(a.host, "t", 0, 10) == [*honest[:2], *fork]  # kept
    again = await sync(b, a)  # frozen now: left alone, the session completes
    assert a.log("t") not in again.per_log and again.diverged == []


# -- concurrent writers in one node --------------------------------------------------------


async def test_two_peers_pushing_at_once_both_succeed(nodes: Nodes) -> None:
    b = await nodes.node("b")
    writers = [new_author(), new_author()]
    chains = {w.host: signed_chain(w, "t", 60) for w in writers}

    async def push(writer: Author) -> tuple[int, int]:
        chain = chains[writer.host]
        async with b.client() as peer:
            parts = [(chain[n : n + 5], keys_of(writer)) for n in range(0, len(chain), 5)]
            return await peer.push(batches_of(*parts))

    try:
        results = await asyncio.wait_for(asyncio.gather(*map(push, writers)), SESSION_TIMEOUT_S)
    except PeerUnavailable as exc:
        pytest.fail(f"a push failed: {exc}")
    assert results == [(60, 0), (60, 0)]
    for host, chain in chains.items():
        assert await b.store.read_range(host, "t", 0, 100) == chain


async def test_appending_while_receiving_a_batch_succeeds(store: Store, author: Author) -> None:
    other = new_author()
    results = await asyncio.gather(
        store.append(author, "mine", [b"1"]),
        store.insert_batch(signed_chain(other, "t", 2), keys_of(other)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
