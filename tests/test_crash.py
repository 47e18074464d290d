"""kill -9 in the middle of a batch: the store holds all of it or none of it."""

from __future__ import annotations

import random
import sqlite3
import sys
import textwrap
from pathlib import Path

from peer.store import Store
from tests.reliability.procs import kill_when_ready

COUNT = 60_000
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from peer.crypto import Author, SigningKey, SyncKey
    from peer.store import Store

    async def main(source, target, count):
        author = Author(SigningKey.generate(), SyncKey.generate())
        src = await Store.open(source)
        await src.add_host(author.signing.public_key)
        async for _ in src.append_many(author, "t", [b"x" * 200] * count):
            pass
        records = await src.read_range(author.host, "t", 0, count)
        dst = await Store.open(target)
        print("ready", flush=True)
        await dst.insert_batch(records, {author.host: author.signing.public_key})
        print("done", flush=True)
        await src.close()
        await dst.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def kill_mid_batch(tmp_path: Path, round_no: int, delay: float) -> Path:
    target = tmp_path / f"target{round_no}.db"
    source = tmp_path / f"src{round_no}.db"
    kill_when_ready([sys.executable, "-c", CHILD, str(source), str(target), str(COUNT)], delay)
    return target


async def test_a_killed_batch_leaves_all_or_nothing(tmp_path: Path, rng: random.Random) -> None:
    outcomes = []
    for round_no in range(5):
        target = kill_mid_batch(tmp_path, round_no, rng.uniform(0.1, 0.8))
        store = await Store.open(target)
        try:
            index = await store.index()
            held = sum(head.next_idx for head in index.values())
            rows = len(await store.scan(limit=COUNT + 1))
        finally:
            await store.close()
        with sqlite3.connect(target) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert held in (0, COUNT)
        assert rows == held
        outcomes.append(held)
    print(f"records held after each kill: {outcomes}")
