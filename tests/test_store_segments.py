"""The store keeps records as segments (peer.store.segments): reads by idx that start
and end anywhere inside them, merged small segments, and the arrival order (scan,
last_seq) as exact as with a row per record."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

from peer.crypto import Author
from peer.records import Record, message_size
from peer.segment import decode
from peer.store import Store
from peer.store.segments import MERGE_BELOW, SEGMENT_RECORDS
from tests.conftest import new_author


def segment_rows(path: Path) -> list[tuple[str, int, int, bytes]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT tag, first_idx, count, data FROM segments ORDER BY host, tag, first_idx"
        ).fetchall()


async def test_reads_start_and_end_anywhere_inside_segments(
    store: Store, author: Author, rng: random.Random
) -> None:
    records: list[Record] = []
    for size in (1, 1, 5, 300, 1, 6000, 2, 1):  # single appends merge; 6000 is cut in two
        records += await store.append(author, "t", [b"p%d" % n for n in range(size)])
    rows = segment_rows(store.path)
    assert 3 <= len(rows) < 8
    assert all(decode(data)[-1].sig for _, _, _, data in rows)  # each ends on a signature
    assert [r for _, _, _, data in rows for r in decode(data)] == records
    edges = sorted({first for _, first, _, _ in rows} | {first + n for _, first, n, _ in rows})
    points = sorted({0, len(records)} | {e + d for e in edges for d in (-1, 0, 1)})
    points = [p for p in points if 0 <= p <= len(records)]
    for start in points:
        for end in points:
            if end >= start:
                got = await store.read_range(author.host, "t", start, end - start)
                assert got == records[start:end], (start, end)
    for _ in range(200):
        start, limit = rng.randrange(len(records) + 2), rng.randrange(len(records) + 2)
        assert (
            await store.read_range(author.host, "t", start, limit) == records[start : start + limit]
        )
    sizes = await store.record_sizes(author.host, "t", 250, 400)
    assert sizes == [(message_size(r), bool(r.sig)) for r in records[250:650]]


async def test_single_appends_merge_into_the_last_segment_up_to_its_cap(
    store: Store, author: Author
) -> None:
    records = [r for n in range(400) for r in await store.append(author, "t", [b"x" * 200])]
    rows = segment_rows(store.path)
    assert sum(n for _, _, n, _ in rows) == 400
    assert len(rows) <= 400 * 500 // MERGE_BELOW + 2  # ~120 records of ~500 bytes each
    assert all(len(data) < MERGE_BELOW + 1000 for _, _, _, data in rows)
    assert await store.read_range(author.host, "t", 0, 1000) == records


async def test_a_large_batch_is_cut_into_segments_that_end_signed(
    store: Store, replica: Store, author: Author
) -> None:
    """Alike as appended (cut once, from the entries' lengths) and as received."""
    records = await store.append(author, "t", [b"y"] * (2 * SEGMENT_RECORDS + 10))
    result = await replica.insert_batch(records, {author.host: author.signing.public_key})
    assert result.added == len(records)
    for path, holder in ((store.path, store), (replica.path, replica)):
        rows = segment_rows(path)
        assert [n for _, _, n, _ in rows] == [SEGMENT_RECORDS, SEGMENT_RECORDS, 10]
        assert all(decode(data)[-1].sig for _, _, _, data in rows)
        assert await holder.read_range(author.host, "t", 0, 10**9) == records


async def test_scan_and_last_seq_keep_the_arrival_order_across_merged_segments(
    tmp_path: Path, rng: random.Random
) -> None:
    authors = [new_author(), new_author()]
    store = await Store.open(tmp_path / "s.db")
    expected: list[Record] = []  # in arrival order
    try:
        for author in authors:
            await store.add_host(author.signing.public_key)
        for n in range(300):  # interleaved single appends and a few runs: segments merge
            author, tag = rng.choice(authors), rng.choice(["a", "b"])
            expected += await store.append(author, tag, [b"%d" % n] * rng.choice([1, 1, 1, 3]))
        assert len(segment_rows(store.path)) < len(expected) // 4  # merged
        rows = await store.scan(limit=10**6)
        assert rows == list(enumerate(expected, start=1))
        for after in (0, 1, 5, 50, len(expected) - 1, len(expected), len(expected) + 5):
            for limit in (1, 3, 100):
                assert await store.scan(after=after, limit=limit) == rows[after : after + limit]
        for tag in ("a", "b"):
            tagged = [(seq, r) for seq, r in rows if r.tag == tag]
            for after in (0, 7, 100):
                got = await store.scan(tag=tag, after=after, limit=5)
                assert got == [(s, r) for s, r in tagged if s > after][:5]
            for back in (0, 1, 10, len(tagged) - 1, len(tagged), len(tagged) + 3):
                want = tagged[-1 - back][0] if back < len(tagged) else 0
                assert await store.last_seq(tag, back=back) == want
        for back in (0, 4, len(expected) - 1, len(expected)):
            want = len(expected) - back if back < len(expected) else 0
            assert await store.last_seq(back=back) == want
    finally:
        await store.close()


async def test_a_received_run_continues_the_arrivals_of_a_local_one(
    store: Store, replica: Store, author: Author
) -> None:
    records = await store.append(author, "t", [b"a", b"b"])
    records += await store.append(author, "t", [b"c"])
    keys = {author.host: author.signing.public_key}
    await replica.insert_batch(records[:2], keys)
    await replica.insert_batch(records[2:], keys)
    assert await replica.scan() == list(enumerate(records, start=1))
    assert await replica.last_seq(back=1) == 2
