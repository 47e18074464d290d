"""Compaction merges a log's small segments (single appends, live traffic) into larger
rows: every record, head and arrival number kept, in steps that may stop anywhere;
kill -9 in the middle of it loses nothing and `peer verify` passes after it."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from peer.crypto import Author
from peer.records import Record
from peer.store import Store, compact
from peer.store.compact import SMALL_BYTES
from tests.cli import kill_when, ok
from tests.conftest import home_and_author, new_author
from tests.daemons import Daemons, texts, until


async def single_appends(
    store: Store, authors: list[Author], rng: random.Random, count: int
) -> list[Record]:
    """`count` appends of one record (sometimes a few) of random sizes, interleaved
    over the authors and two tags: the many small segments compaction is for."""
    written: list[Record] = []
    for _ in range(count):
        author = rng.choice(authors)
        items = [rng.randbytes(rng.choice((40, 300, 2000))) for _ in range(rng.choice((1, 1, 3)))]
        written += await store.append(author, rng.choice(("a", "b")), items)
    return written


async def contents(store: Store) -> tuple[list[tuple[int, Record]], dict[object, object]]:
    """Everything a reader sees: the records in arrival order with their numbers, and
    the index."""
    return await store.scan(limit=1_000_000), dict(await store.index())


async def test_compaction_merges_small_segments_and_keeps_everything(
    tmp_path: Path, rng: random.Random
) -> None:
    authors = [new_author(), new_author()]
    async with await Store.open(tmp_path / "s.db") as store:
        for author in authors:
            await store.add_host(author.signing.public_key)
        await single_appends(store, authors, rng, 600)
        before, rows = await contents(store), await store.segment_rows()
        merged, rewritten = await store.compact()
        after_rows = await store.segment_rows()
        print(f"segment rows {rows} -> {after_rows}; {rewritten:,} bytes rewritten")
        assert merged == rows - after_rows and after_rows < rows / 5
        assert await contents(store) == before
        assert await store.compact() == (0, 0)  # nothing small and adjacent is left
        more = await single_appends(store, authors, rng, 50)  # the log goes on as before
        scanned, _ = await contents(store)
        assert [r for _, r in scanned[len(before[0]) :]] == more


async def test_steps_that_stop_anywhere_reach_the_same_store(
    tmp_path: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps looking at a few rows each (a run cut between two steps waits for the
    next) leave the same records as one pass, and no small neighbours behind."""
    author = new_author()
    async with await Store.open(tmp_path / "s.db") as store:
        await store.add_host(author.signing.public_key)
        await single_appends(store, [author], rng, 300)
        before = await contents(store)
        step_rows = rng.randint(2, 9)
        monkeypatch.setattr(compact, "STEP_ROWS", step_rows)
        steps = 0
        after: compact.Cursor | None = compact.START
        while after is not None and steps < 10_000:
            after = (await store.compact_step(after)).after
            steps += 1
        assert after is None
        assert await contents(store) == before
        monkeypatch.setattr(compact, "STEP_ROWS", 2048)
        assert await store.compact() == (0, 0)
    print(f"{steps} steps of {step_rows} rows")


def small_neighbours(path: Path) -> int:
    """Pairs of consecutive segments of a log that are both small (merge candidates)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT host, tag, first_idx, count, length(data) FROM segments "
            "ORDER BY host, tag, first_idx"
        ).fetchall()
    return sum(
        1
        for a, b in itertools.pairwise(rows)
        if a[:2] == b[:2] and a[4] < SMALL_BYTES and b[4] < SMALL_BYTES
    )


def segment_rows(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return int(db.execute("SELECT count(*) FROM segments").fetchone()[0])


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from peer.store import Store, compact

    async def main(path):
        compact.STEP_ROWS = 8
        store = await Store.open(path)
        print("ready", flush=True)
        await store.compact(pause_s=0.001)
        await store.close()
        print("done", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_kill_9_during_compaction_loses_nothing_and_verify_passes(
    tmp_path: Path, rng: random.Random
) -> None:
    home, author = home_and_author(tmp_path / "home", "n")
    authors = [author]
    async with await Store.open(home.database) as store:
        await store.add_host(author.signing.public_key)
        await single_appends(store, authors, rng, 1500)
        before = await contents(store)
    rows = segment_rows(home.database)
    kills = []
    for fraction in sorted(rng.sample([0.9, 0.8, 0.7, 0.6, 0.5], 3), reverse=True):
        below = int(rows * fraction)
        kill_when(CHILD, home.database, lambda: segment_rows(home.database) < below)  # noqa: B023
        kills.append(segment_rows(home.database))
        assert small_neighbours(home.database) > 0, f"compaction ended before kill {kills}"
    print(f"segment rows {rows}, left at each kill: {kills}")
    assert kills[-1] < rows
    report = json.loads(ok(home.root, "verify", "--json"))
    assert report["ok"] is True, report["problems"]
    assert report["records"] == len(before[0])
    async with await Store.open(home.database) as store:
        assert await contents(store) == before
        await store.compact()
        assert await contents(store) == before
    assert small_neighbours(home.database) == 0


async def test_the_daemon_compacts_what_single_appends_left(daemons: Daemons) -> None:
    """A daemon merges the small segments of single appends by itself (here every
    0.2 s), while it goes on taking appends; every record is still there, in order."""
    (home,) = daemons.homes("a")
    (home.root / "config.toml").write_text("compact_every = 0.2\n")
    daemons.start(home)
    node = await daemons.api(home)
    items = [f"item {n} ".encode() * 40 for n in range(400)]  # ~300 B: ~13 per small row
    for item in items:
        await node.append("t", item)
    database = home.root / "peer.db"

    async def compacted() -> int | None:  # ~600 B stored each: 4 KiB rows became 64 KiB+
        rows = segment_rows(database)
        return rows if rows <= 6 and not small_neighbours(database) else None

    rows = await until(compacted, "the daemon to compact", 30)
    print(f"{len(items)} single appends in {rows} segment rows")
    assert texts(home.root, "t") == [item.decode() for item in items]
