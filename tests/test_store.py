"""The store enforces the log's rules: contiguity, idempotence, forks, atomic batches."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.crypto import MAX_PLAINTEXT, Author, open_record, record_hash, verify_chain
from peer.errors import (
    ForgeryError,
    ForkDetected,
    GapError,
    InvalidRecord,
    LogFrozen,
    SchemaTooNew,
    StoreError,
    UnknownHost,
)
from peer.records import Head, LogKey, Record
from peer.store import Store
from tests.conftest import new_author, open_store, signed_chain


def keys_of(*authors: Author) -> dict[bytes, bytes]:
    return {a.host: a.signing.public_key for a in authors}


async def all_records(store: Store, log: LogKey) -> list[Record]:
    return await store.read_range(log.host, log.tag, 0, 10**9)


async def test_appends_get_contiguous_idx_and_a_maintained_head(
    store: Store, author: Author
) -> None:
    first = await store.append(author, "notes", [b"a", b"b"])
    second = await store.append(author, "notes", [b"c"])
    assert [r.idx for r in first + second] == [0, 1, 2]
    log = LogKey(author.host, "notes")
    index = await store.index()
    assert index == {log: Head(3, record_hash(second[-1]))}
    assert await all_records(store, log) == first + second


async def test_timestamps_increase_and_the_clock_survives_a_restart(
    tmp_path: Path, author: Author
) -> None:
    store = await open_store(tmp_path / "c.db", author)
    records = await store.append(author, "notes", [b"a"] * 50)
    stamps = [r.timestamp for r in records]
    assert stamps == sorted(set(stamps))
    await store.close()
    store = await open_store(tmp_path / "c.db", author)
    assert await store.clock_floor() == stamps[-1]
    (later,) = await store.append(author, "notes", [b"b"])
    assert later.timestamp > stamps[-1]
    await store.close()


async def bulk_with_a_write_between(
    path: Path, author: Author, between: Callable[[Store], Awaitable[object]]
) -> tuple[list[tuple[int, int]], list[Record]]:
    """A bulk append of 50 records in chunks of 10 to `path`, `between` run on another
    connection (another process's) after the first chunk, while the second is being
    sealed ahead; returns the idx ranges written and the log's records, whose chain
    and contiguity it checks."""
    store = await open_store(path, author)
    other = await Store.open(path)
    try:
        bulk = store.append_many(author, "notes", [b"bulk%d" % n for n in range(50)], chunk=10)
        ranges = [await anext(bulk)]  # chunk 2 is being sealed on chunk 1's head now
        await between(other)
        ranges += [r async for r in bulk]
        records = await all_records(store, LogKey(author.host, "notes"))
        verify_chain(records, author.signing.public_key)
        await assert_contiguous(store)
        return ranges, records
    finally:
        await other.close()
        await store.close()


async def test_a_bulk_append_sealed_ahead_is_sealed_again_when_another_writer_came_first(
    tmp_path: Path, author: Author
) -> None:
    """append_many seals each chunk while the one before is written, on a guess of the
    head and the clock; another connection writing the same log (or raising the clock)
    meanwhile makes the guess wrong, and the chunk is sealed again: the log stays one
    contiguous, correctly chained, signed log, its timestamps rising."""
    ranges, records = await bulk_with_a_write_between(
        tmp_path / "b.db", author, lambda other: other.append(author, "notes", [b"between"])
    )
    assert ranges == [(0, 9), (11, 20), (21, 30), (31, 40), (41, 50)]
    assert [open_record(author.sync, r) for r in records[9:12]] == [
        b"bulk9",
        b"between",
        b"bulk10",
    ]
    stamps = [r.timestamp for r in records]
    assert stamps == sorted(set(stamps))


async def test_a_bulk_append_sealed_ahead_is_sealed_again_when_the_clock_moved(
    tmp_path: Path, author: Author
) -> None:
    """The other half of the guess: another connection raising the clock floor (a
    record received with a later timestamp) leaves the head alone, and a chunk sealed
    before it still gets timestamps above it."""
    stranger = new_author()
    later = time.time_ns() + 3600 * 10**9  # an hour ahead: within what moves the clock
    (received,) = stranger.write("notes", Head(0), [later], [b"from a clock ahead"])
    ranges, records = await bulk_with_a_write_between(
        tmp_path / "c.db", author, lambda other: other.insert_batch([received], keys_of(stranger))
    )
    assert ranges == [(0, 9), (10, 19), (20, 29), (30, 39), (40, 49)]
    assert records[9].timestamp < later < records[10].timestamp


async def test_a_bulk_append_stopped_early_leaves_no_stray_error(
    store: Store, author: Author
) -> None:
    """A chunk sealed ahead that is never written (the consumer stopped) is let go
    quietly, even when sealing it failed: that failure was nobody's to handle."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    try:
        too_big = b"x" * (MAX_PLAINTEXT + 1)
        bulk = store.append_many(author, "notes", [b"a"] * 10 + [too_big], chunk=10)
        assert await anext(bulk) == (0, 9)
        await asyncio.sleep(0.2)  # the second chunk's sealing fails meanwhile, in its thread
        await bulk.aclose()
        gc.collect()
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_a_replica_receives_exactly_the_same_records(
    store: Store, replica: Store, author: Author
) -> None:
    records = await store.append(author, "notes", [b"x%d" % i for i in range(700)])
    result = await replica.insert_batch(records, keys_of(author))
    assert (result.added, result.duplicates) == (700, 0)
    log = LogKey(author.host, "notes")
    assert await all_records(replica, log) == records
    assert await replica.index() == await store.index()


async def test_re_inserting_held_records_is_a_no_op(
    store: Store, replica: Store, author: Author
) -> None:
    records = await store.append(author, "notes", [b"a", b"b", b"c"])
    await replica.insert_batch(records, keys_of(author))
    before = await replica.index()
    again = await replica.insert_batch(records)
    assert (again.added, again.duplicates) == (0, 3)
    assert await replica.index() == before
    assert len(await all_records(replica, LogKey(author.host, "notes"))) == 3


async def test_an_overlapping_batch_adds_only_what_is_new(replica: Store, author: Author) -> None:
    records = signed_chain(author, "notes", 10)
    await replica.insert_batch(records[:6], keys_of(author))
    result = await replica.insert_batch(records[3:])
    assert (result.added, result.duplicates) == (4, 3)
    assert await all_records(replica, LogKey(author.host, "notes")) == records


async def test_a_gap_is_rejected_with_the_idx_expected(replica: Store, author: Author) -> None:
    records = signed_chain(author, "notes", 10)
    await replica.insert_batch(records[:4], keys_of(author))
    with pytest.raises(GapError) as caught:
        await replica.insert_batch(records[6:])
    assert caught.value.expected_idx == 4
    assert "expects idx 4" in str(caught.value)
    assert (await replica.index())[LogKey(author.host, "notes")].next_idx == 4


async def test_a_fork_is_detected_kept_as_evidence_and_freezes_the_log(
    store: Store, replica: Store, author: Author
) -> None:
    records = await store.append(author, "notes", [b"a", b"b", b"c"])
    await replica.insert_batch(records, keys_of(author))
    # The same host key signs a different record at idx 1 (a cloned or restored device).
    fork = author.write("notes", Head(1, record_hash(records[0])), [7], [b"evil"])
    with pytest.raises(ForkDetected, match="idx 1"):
        await replica.insert_batch(fork)
    log = LogKey(author.host, "notes")
    assert await all_records(replica, log) == records  # nothing overwritten
    (evidence,) = await replica.forks()
    assert (evidence.log, evidence.idx) == (log, 1)
    assert evidence.held_hash == record_hash(records[1])
    assert evidence.offered == tuple(fork)
    assert await replica.frozen_logs() == {log}
    later = await store.append(author, "notes", [b"d"])
    with pytest.raises(LogFrozen):
        await replica.insert_batch(later)


async def test_a_batch_that_links_to_another_head_is_a_fork(replica: Store, author: Author) -> None:
    records = signed_chain(author, "notes", 3)
    await replica.insert_batch(records, keys_of(author))
    other_past = signed_chain(author, "notes", 4)  # same host, different history
    with pytest.raises(ForkDetected):
        await replica.insert_batch(other_past[3:])
    assert await replica.frozen_logs() == {LogKey(author.host, "notes")}


async def test_a_host_does_not_append_to_its_own_frozen_log(
    store: Store, replica: Store, author: Author
) -> None:
    records = await store.append(author, "notes", [b"a", b"b"])
    fork = author.write("notes", Head(1, record_hash(records[0])), [9], [b"other"])
    with pytest.raises(ForkDetected):
        await store.insert_batch(fork)
    with pytest.raises(LogFrozen):
        await store.append(author, "notes", [b"c"])


async def test_out_of_range_fields_are_a_clear_error_not_an_overflow(
    replica: Store, author: Author
) -> None:
    (record,) = author.write("notes", Head(0), [1], [b"a"])
    for bad in (
        dataclasses.replace(record, idx=2**63),
        dataclasses.replace(record, idx=2**64 + 5),
        dataclasses.replace(record, timestamp=2**63),
        dataclasses.replace(record, tag="No Such Tag"),
    ):
        with pytest.raises(InvalidRecord):
            await replica.insert_batch([bad], keys_of(author))
    assert await replica.index() == {}


async def test_a_call_is_all_or_nothing_across_logs(replica: Store, author: Author) -> None:
    good = signed_chain(author, "good", 5)
    bad = signed_chain(author, "bad", 5)
    bad[2] = dataclasses.replace(bad[2], payload=b"tampered")
    with pytest.raises(ForgeryError):
        await replica.insert_batch(good + bad, keys_of(author))
    assert await replica.index() == {}


async def test_an_unknown_host_or_a_wrong_key_is_refused(replica: Store, author: Author) -> None:
    records = signed_chain(author, "notes", 2)
    with pytest.raises(UnknownHost):
        await replica.insert_batch(records)
    with pytest.raises(ForgeryError, match="not its key"):
        await replica.insert_batch(records, {author.host: new_author().signing.public_key})
    assert await replica.index() == {}


async def test_a_full_disk_mid_batch_leaves_nothing_of_the_batch(
    tmp_path: Path, store: Store, author: Author
) -> None:
    records = await store.append(author, "notes", [bytes(200)] * 3000)
    small = await open_store(tmp_path / "small.db", max_bytes=700_000)
    await small.insert_batch(records[:1024], keys_of(author))
    with pytest.raises(StoreError, match="full"):
        await small.insert_batch(records[1024:])
    log = LogKey(author.host, "notes")
    assert (await small.index())[log].next_idx == 1024
    assert await all_records(small, log) == records[:1024]
    await small.close()


async def test_a_database_from_a_newer_peer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaTooNew, match="newer peer"):
        await Store.open(path)


async def test_tail_scans_in_arrival_order(store: Store, author: Author) -> None:
    await store.append(author, "a", [b"1"])
    await store.append(author, "b", [b"2"])
    await store.append(author, "a", [b"3"])
    rows = await store.scan()
    assert [(r.tag, r.idx) for _, r in rows] == [("a", 0), ("b", 0), ("a", 1)]
    only_a = await store.scan(tag="a", after=rows[0][0])
    assert [(r.tag, r.idx) for _, r in only_a] == [("a", 1)]


@settings(max_examples=40)
@given(data=st.data())
async def test_any_delivery_order_with_duplicates_converges_to_the_source(
    data: st.DataObject,
) -> None:
    """Batches cut anywhere, shuffled and repeated: gaps are refused and retried later,
    duplicates are no-ops, and the replica always holds a contiguous prefix."""
    authors = [new_author(), new_author()]
    source = {a.host: signed_chain(a, "t", data.draw(st.integers(1, 25))) for a in authors}
    batches: list[list[Record]] = []
    for records in source.values():
        cuts = sorted(data.draw(st.sets(st.integers(1, max(len(records) - 1, 1)), max_size=6)))
        bounds = [0, *[c for c in cuts if c < len(records)], len(records)]
        batches += [records[a:b] for a, b in itertools.pairwise(bounds)]
    pending = list(data.draw(st.permutations(batches)))
    pending += data.draw(st.lists(st.sampled_from(batches), max_size=5))
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(Path(tmp) / "r.db")
        try:
            for _ in range(len(pending) ** 2 + 1):
                if not pending:
                    break
                batch = pending.pop(0)
                try:
                    await store.insert_batch(batch, keys_of(*authors))
                except GapError:
                    pending.append(batch)
                await assert_contiguous(store)
            assert not pending
            for host, records in source.items():
                assert await all_records(store, LogKey(host, "t")) == records
        finally:
            await store.close()


async def assert_contiguous(store: Store) -> None:
    for log, head in (await store.index()).items():
        records = await all_records(store, log)
        assert [r.idx for r in records] == list(range(head.next_idx))
        assert head.head_hash == record_hash(records[-1])
