"""Duplicates cost nothing (issue 14): a record this node holds already is found by a
plain read and a hash, before any chain or signature work and without a write
transaction, on every way in (pull, push, live); and it is counted as a duplicate.
A different record at a held idx still takes the full path: a fork, evidence kept."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from peer.crypto import Author, record_hash
from peer.errors import ForgeryError, ForkDetected, GapError, LogFrozen
from peer.inbound import Inbound
from peer.records import Head, LogKey, Range, Record
from peer.remote import Batch
from peer.segment import Segment, Segments
from peer.status import LinkState
from peer.store import Faults, InsertResult, Store
from peer.store.known import held_count, same_as_held
from peer.sync import SyncSession
from tests.conftest import new_author, open_store, signed_chain
from tests.nodes import Nodes, assert_converged, batches_of, keys_of

LOCK_HELD_S = 5.0  # a write waiting for the lock would take at least this long


@contextlib.asynccontextmanager
async def write_lock_held(path: Path) -> AsyncIterator[None]:
    """Another process's writer holding the store's write lock (BEGIN IMMEDIATE) for
    the block; released after LOCK_HELD_S whatever happens, so that a write stuck
    behind it fails the test instead of hanging it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    release = asyncio.get_running_loop().call_later(LOCK_HELD_S, other.rollback)
    try:
        yield
    finally:
        release.cancel()
        if other.in_transaction:
            other.rollback()
        other.close()


async def counting_writes(path: Path, author: Author) -> tuple[Store, Faults]:
    """A store whose write statements (BEGIN, each statement, COMMIT) are counted."""
    faults = Faults()
    store = await Store.open(path, faults=faults)
    await store.add_host(author.signing.public_key)
    faults.arm(at=10**9)  # never fires: it only counts
    return store, faults


# -- the pure rule -----------------------------------------------------------------------


def test_a_linked_run_is_the_held_one_when_its_last_hash_is_held(author: Author) -> None:
    records = signed_chain(author, "t", 5)
    assert held_count(2, 3, next_idx=4) == 2  # idx 2, 3 held; 4 not
    assert held_count(2, 3, next_idx=2) == 0
    assert held_count(0, 3, next_idx=9) == 3

    def parts(run: list[Record]) -> list[Segment]:
        return Segments.of(run).parts

    assert same_as_held(parts(records[1:4]), 3, record_hash(records[3]))
    assert same_as_held(parts(records[1:4]), 2, record_hash(records[2]))  # a prefix
    assert not same_as_held(parts(records[1:4]), 3, record_hash(records[2]))
    relinked = [records[1], dataclasses.replace(records[2], prev=bytes(32)), records[3]]
    assert not same_as_held(parts(relinked), 3, record_hash(records[3]))  # a broken link
    split = [*parts(records[1:2]), *parts(records[3:4])]
    assert not same_as_held(split, 2, record_hash(records[3]))  # a gap
    assert not same_as_held(parts(records[1:4]), 4, record_hash(records[3]))  # too few


# -- no verification, no write transaction -----------------------------------------------


async def test_a_message_of_held_records_changes_nothing_and_takes_no_write_lock(
    store: Store, replica: Store, author: Author
) -> None:
    records = await store.append(author, "t", [b"r%d" % n for n in range(300)])
    await replica.insert_batch(records, keys_of(author))
    before = await replica.index()
    inbound = Inbound(replica)
    async with write_lock_held(replica.path):
        started = time.monotonic()
        result = await replica.insert_batch(records)
        below = await replica.insert_batch(records[10:20])  # ends before the head
        taken = await inbound.take(records[100:], {})
        await inbound.flush()
        elapsed = time.monotonic() - started
    assert elapsed < LOCK_HELD_S / 2, "the duplicate path waited for the write lock"
    assert result == InsertResult(0, 300)
    assert below == InsertResult(0, 10)
    assert taken == {LogKey(author.host, "t"): 200}
    assert (inbound.added, inbound.duplicates, inbound.received) == (0, 200, 200)
    assert await replica.index() == before


async def test_held_records_cost_no_write_statement_and_new_ones_do(
    tmp_path: Path, author: Author
) -> None:
    store, writes = await counting_writes(tmp_path / "w.db", author)
    try:
        records = signed_chain(author, "t", 12)
        await store.insert_batch(records[:8])
        assert writes.count > 0  # the positive control: new records are written
        writes.arm(at=10**9)
        assert await store.insert_batch(records[:8]) == InsertResult(0, 8)  # to the head
        assert await store.insert_batch(records[2:5]) == InsertResult(0, 3)  # below it
        assert writes.count == 0
        assert await store.insert_batch(records[4:]) == InsertResult(4, 4)  # then new ones
        assert writes.count > 0
    finally:
        await store.close()


async def test_a_held_prefix_is_left_out_and_the_new_rest_stored(
    replica: Store, author: Author
) -> None:
    records = signed_chain(author, "t", 10)
    await replica.insert_batch(records[:6], keys_of(author))
    assert await replica.insert_batch(records[2:]) == InsertResult(4, 4)
    assert await replica.read_range(author.host, "t", 0, 20) == records


async def test_the_new_rest_must_still_end_signed_and_link_to_the_head(
    tmp_path: Path, replica: Store, author: Author
) -> None:
    """What is left after a held prefix is verified as a message of its own: it ends
    on a signature, and its first record continues the stored head."""
    records = await _bulk(tmp_path, author, 300)  # signed at idx 255 and 299 only
    await replica.insert_batch(records[:256], keys_of(author))
    unsigned_end = records[200:280]
    with pytest.raises(ForgeryError, match="must end on a signed record"):
        await replica.insert_batch(unsigned_end)
    assert await replica.insert_batch(records[200:]) == InsertResult(44, 56)
    # A different continuation signed by the same key, after a held prefix: a fork.
    other = author.write("t", Head(299, record_hash(records[298])), [9], [b"other"])
    with pytest.raises(ForkDetected, match="idx 299"):
        await replica.insert_batch(records[290:299] + other)
    (evidence,) = await replica.forks()
    assert (evidence.idx, evidence.offered) == (299, tuple(other))


async def _bulk(tmp_path: Path, author: Author, count: int) -> list[Record]:
    source = await open_store(tmp_path / "bulk.db", author)
    try:
        return await source.append(author, "t", [b"b%d" % n for n in range(count)])
    finally:
        await source.close()


# -- forks and frozen logs take the full path, as before ---------------------------------


@pytest.mark.parametrize("at", [2, 5], ids=["below the head", "the head"])
async def test_a_different_record_at_a_held_idx_is_a_fork_with_evidence(
    replica: Store, author: Author, at: int
) -> None:
    records = signed_chain(author, "t", 6)
    await replica.insert_batch(records, keys_of(author))
    forged = author.write("t", Head(at, record_hash(records[at - 1])), [7], [b"evil"])
    with pytest.raises(ForkDetected, match=f"idx {at}"):
        await replica.insert_batch(records[:at] + forged)  # a held prefix, then the fork
    (evidence,) = await replica.forks()
    assert (evidence.idx, evidence.held_hash) == (at, record_hash(records[at]))
    assert evidence.offered == tuple(forged)
    assert await replica.frozen_logs() == {LogKey(author.host, "t")}
    with pytest.raises(LogFrozen):  # held records of a frozen log are still refused
        await replica.insert_batch(records[:2])


async def test_a_held_record_with_a_broken_link_is_still_refused(
    replica: Store, author: Author
) -> None:
    records = signed_chain(author, "t", 6)
    await replica.insert_batch(records, keys_of(author))
    broken = [records[1], dataclasses.replace(records[2], prev=bytes(32)), records[3]]
    with pytest.raises(ForgeryError):
        await replica.insert_batch(broken)
    assert await replica.forks() == []


# -- counted on every way in -------------------------------------------------------------


async def test_a_pull_counts_what_arrived_held_already(nodes: Nodes) -> None:
    a = await nodes.node("a")
    b = await nodes.node("b", serve=False)
    records = await a.append_each("t", 10)
    async with a.client() as peer:
        session = await SyncSession.open(b.store, peer)
        original = peer.pull

        async def pull(ranges: list[Range], batch: int) -> AsyncIterator[Batch]:
            # The request is out; meanwhile the live stream of another peer brings 6.
            await b.store.insert_batch(records[:6], keys_of(a.author))
            async for item in original(ranges, batch):
                yield item

        peer.pull = pull  # type: ignore[method-assign]
        await session.pull()
    summary = session.summary
    assert (summary.pulled, summary.duplicates) == (10, 6)
    link = LinkState(b"a" * 32)
    link.took(summary.pulled, summary.duplicates)  # what Link._round counts
    assert (link.received, link.duplicates) == (10, 6)
    await assert_converged(a.store, b.store)


async def test_a_pull_does_not_ask_for_what_arrived_since_the_plan(nodes: Nodes) -> None:
    """Two nodes starting a round at once: the peer's push lands between our plan and
    our pull request; the request asks only for the rest, so nothing crosses twice."""
    a = await nodes.node("a")
    b = await nodes.node("b", serve=False)
    records = await a.append_each("t", 10)
    async with a.client() as peer:
        session = await SyncSession.open(b.store, peer)
        await b.store.insert_batch(records[:6], keys_of(a.author))  # a's push, meanwhile
        await session.pull()
        await session.check_served()
    assert (session.summary.pulled, session.summary.duplicates) == (4, 0)
    await assert_converged(a.store, b.store)


async def test_a_push_counts_what_the_receiver_held_already(nodes: Nodes) -> None:
    a = await nodes.node("a", serve=False)
    b = await nodes.node("b")
    records = signed_chain(a.author, "t", 10)
    await b.store.insert_batch(records[:4], keys_of(a.author))
    async with b.client() as peer:
        result = await peer.push(batches_of((records[:7], keys_of(a.author)), (records[2:], {})))
    assert result == (6, 4 + 5)  # (added, duplicates) as the receiver counted them


async def test_a_live_stream_counts_what_arrived_held_already(nodes: Nodes) -> None:
    a = await nodes.node("a")
    b = await nodes.node("b", serve=False)
    records = await a.append_each("t", 8)
    await b.store.insert_batch(records[:5], keys_of(a.author))
    inbound = Inbound(b.store, live=True)
    link = LinkState(b"a" * 32)
    async with a.client() as peer:
        stream = peer.subscribe({})  # from idx 0: 5 of the 8 are held here
        async for batch, keys in stream:
            added, stored = await inbound.store_now(batch, keys)
            link.took(len(stored), len(stored) - added)  # what Link._follow counts
            if inbound.received == 8:
                break
        await stream.aclose()  # type: ignore[attr-defined]
    assert (inbound.added, inbound.duplicates, inbound.received) == (3, 5, 8)
    assert (link.received, link.duplicates) == (8, 5)
    await assert_converged(a.store, b.store)


async def test_a_live_batch_tried_again_after_a_fork_is_counted_once(
    replica: Store, author: Author
) -> None:
    """Live, a fork in one log freezes it and the batch is tried again without it:
    the held records of the other log are counted once."""
    other = new_author()
    good = signed_chain(other, "t", 4)
    records = signed_chain(author, "t", 3)
    await replica.insert_batch(good + records, keys_of(author, other))
    forged = author.write("t", Head(1, record_hash(records[0])), [7], [b"evil"])
    inbound = Inbound(replica, live=True)
    added, taken = await inbound.store_now(good + forged, {})
    assert (added, taken) == (0, good)
    assert (inbound.added, inbound.duplicates) == (0, 4)
    assert await replica.frozen_logs() == {LogKey(author.host, "t")}


# -- any re-delivery converges, and every record delivered is counted once ------------


@settings(max_examples=40)
@given(data=st.data())
async def test_any_interleaving_of_re_deliveries_converges_and_counts_each_record(
    data: st.DataObject,
) -> None:
    """A log's batches (cut anywhere) delivered in any order, some again, runs across
    them, alone or two logs in one message: a gap is refused and offered again later;
    what is stored is what was written, and added + duplicates == the records of the
    messages taken."""
    authors = [new_author(), new_author()]
    source = {a.host: signed_chain(a, "t", data.draw(st.integers(1, 20))) for a in authors}
    batches: list[list[Record]] = []
    for records in source.values():
        cuts = data.draw(st.sets(st.integers(1, max(len(records) - 1, 1)), max_size=5))
        bounds = [0, *sorted(c for c in cuts if c < len(records)), len(records)]
        batches += [records[a:b] for a, b in itertools.pairwise(bounds)]
    pending = list(data.draw(st.permutations(batches)))
    pending += data.draw(st.lists(st.sampled_from(batches), max_size=4))  # re-deliveries
    for records in data.draw(st.lists(st.sampled_from(list(source.values())), max_size=4)):
        start = data.draw(st.integers(0, len(records) - 1))  # a run across what is held
        pending.insert(
            data.draw(st.integers(0, len(pending))),
            records[start : data.draw(st.integers(start + 1, len(records)))],
        )
    first, second = pending[0], pending[-1]
    if first[0].host != second[0].host and data.draw(st.booleans()):  # two logs, one message
        pending = [first + second, *pending[1:-1]]
    delivered = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(Path(tmp) / "r.db")
        inbound = Inbound(store, keys_of(*authors))
        try:
            for _ in range(len(pending) ** 2 + 1):
                if not pending:
                    break
                message = pending.pop(0)
                try:
                    added, _ = await inbound.store_now(message, {})
                except GapError:
                    pending.append(message)
                    continue
                delivered += len(message)
                event("all new" if added == len(message) else "all held" if not added else "mixed")
            assert not pending
            for host, records in source.items():
                assert await store.read_range(host, "t", 0, 100) == records
        finally:
            await store.close()
    note(f"added {inbound.added}, duplicates {inbound.duplicates}, delivered {delivered}")
    assert inbound.added == sum(map(len, source.values()))
    assert inbound.added + inbound.duplicates == delivered == inbound.received
