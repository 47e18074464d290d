"""A store of a row per record (schema 5) converts to segments when opened: every
record, every head and every arrival number kept; resumable after kill -9 at any
point of the conversion; `peer verify` passes after it."""

from __future__ import annotations

import json
import random
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from peer.crypto import Author, record_hash, verify_chain
from peer.records import Head, LogKey, Record
from peer.segment import decode
from peer.store import Store, convert
from peer.store.rows import RECORD_COLUMNS, to_row
from peer.store.schema import LATEST_VERSION, MIGRATIONS
from tests.cli import kill_when, ok
from tests.conftest import home_and_author, new_author

OLD_VERSION = 5  # the last schema with a row per record
_INSERT = f"INSERT INTO records ({RECORD_COLUMNS}) VALUES ({', '.join('?' * 10)})"


def old_store(path: Path, authors: list[Author], rng: random.Random, total: int) -> list[Record]:
    """A store at schema 5 as the peer of that schema wrote it: `total` records of
    `authors` under two tags, in appends of random sizes interleaved (one row each,
    seq their arrival order); returns the records in arrival order."""
    heads: dict[LogKey, Head] = {}
    arrived: list[Record] = []
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        for version in range(1, OLD_VERSION + 1):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {OLD_VERSION}")
        for author in authors:
            db.execute("INSERT INTO hosts VALUES (?, ?)", (author.host, author.signing.public_key))
        while len(arrived) < total:
            author, tag = rng.choice(authors), rng.choice(["notes", "kv.x"])
            size = min(rng.choice([1, 1, 1, 2, 7, 300, 3000]), total - len(arrived))
            log = LogKey(author.host, tag)
            head = heads.get(log, Head(0))
            stamps = list(range(head.next_idx + 1, head.next_idx + size + 1))
            records = author.write(tag, head, stamps, [b"%d" % rng.randrange(10**9)] * size)
            db.executemany(_INSERT, [to_row(r) for r in records])
            heads[log] = Head(records[-1].idx + 1, record_hash(records[-1]))
            arrived += records
        db.executemany(
            "INSERT INTO heads (host, tag, next_idx, head_hash) VALUES (?, ?, ?, ?)",
            [(log.host, log.tag, h.next_idx, h.head_hash) for log, h in heads.items()],
        )
        db.execute("COMMIT")
    return arrived


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master")}


async def check_converted(path: Path, arrived: list[Record], authors: list[Author]) -> None:
    """Every record, head and arrival number as before; chains verify; segments end
    signed; and the store goes on from there."""
    logs: dict[LogKey, list[Record]] = {}
    for record in arrived:
        logs.setdefault(record.log, []).append(record)
    async with await Store.open(path) as store:
        keys = await store.host_keys()
        for log, records in logs.items():
            held = await store.read_range(log.host, log.tag, 0, len(records) + 1)
            assert held == records
            verify_chain(held, keys[log.host])
        assert await store.index() == {
            log: Head(len(rs), record_hash(rs[-1])) for log, rs in sorted(logs.items())
        }
        assert await store.scan(limit=len(arrived) + 1) == list(enumerate(arrived, start=1))
        assert await store.last_seq(back=3) == len(arrived) - 3
        (more,) = await store.append(authors[0], "notes", [b"after"])
        assert more.idx == len(logs.get(LogKey(authors[0].host, "notes"), []))
        assert await store.last_seq() == len(arrived) + 1
    assert "records" not in tables(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LATEST_VERSION,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for (data,) in db.execute("SELECT data FROM segments"):
            assert decode(data)[-1].sig


async def test_an_old_store_converts_to_segments_in_chunks(
    tmp_path: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert, "CHUNK", 700)  # many chunks, most cut inside a log
    authors = [new_author(), new_author(), new_author()]
    path = tmp_path / "old.db"
    arrived = old_store(path, authors, rng, 12_000)
    await check_converted(path, arrived, authors)


async def test_an_empty_old_store_converts(tmp_path: Path, author: Author) -> None:
    path = tmp_path / "empty.db"
    assert old_store(path, [author], random.Random(0), 0) == []
    async with await Store.open(path) as store:
        assert await store.scan() == []
        await store.append(author, "t", [b"a"])
        assert await store.last_seq() == 1
    assert "records" not in tables(path)


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from peer.store import Store, convert

    async def main(path):
        convert.CHUNK = 1000
        print("ready", flush=True)
        store = await Store.open(path)
        await store.close()
        print("done", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def segments_written(path: Path) -> int:
    """Segment rows committed so far (0 while the conversion has not begun)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            return int(db.execute("SELECT count(*) FROM segments").fetchone()[0])
    except sqlite3.OperationalError:  # no such table yet
        return 0


def kill_during_conversion(path: Path, after_segments: int) -> int:
    """Convert `path` in a child process, SIGKILLed once `after_segments` segment rows
    are committed; returns how many were (the child must still be converting)."""
    kill_when(CHILD, path, lambda: segments_written(path) >= after_segments)
    return segments_written(path)


async def test_kill_9_during_the_conversion_loses_nothing_and_verify_passes(
    tmp_path: Path, rng: random.Random
) -> None:
    home, author = home_and_author(tmp_path / "home", "old")
    authors = [author]
    arrived = old_store(home.database, authors, rng, 40_000)
    kills = []
    for after in sorted(rng.sample(range(1, 25), 3)):
        kills.append(kill_during_conversion(home.database, after))
        assert "records" in tables(home.database), f"the conversion ended before kill {kills}"
    print(f"segment rows committed at each kill: {kills}")
    assert kills[-1] > 0
    report = json.loads(ok(home.root, "verify", "--json"))
    assert report["ok"] is True, report["problems"]
    assert report["records"] == report["decrypted"] == len(arrived)
    await check_converted(home.database, arrived, authors)
