"""kill -9 in the middle of a view catch-up: the machinery. The test itself is the
reliability suite's A8 (tests/reliability/test_a8_views.py), which reports its figure."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

from peer.apps import history, kv
from peer.apps.views import ViewEngine
from peer.crypto import Author, SigningKey, SyncKey
from peer.store import HistoryEntry, Skipped, Store
from tests.apps import snapshot
from tests.reliability.procs import kill_when_ready

KV_RECORDS = 30_000
HISTORY_RECORDS = 10_000
UNKNOWN = 1_000  # records of a version the views do not know: must be counted once
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from peer.apps.views import ViewEngine
    from peer.crypto import SyncKey
    from peer.store import Store

    async def main(path, key):
        store = await Store.open(path)
        print("ready", flush=True)
        await ViewEngine(store, SyncKey.from_text(key), chunk=500).catch_up()
        print("done", flush=True)
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def make_source(path: Path, sync: SyncKey) -> None:
    """A store holding kv and history records whose views were never applied."""
    author = Author(SigningKey.generate(), sync)
    store = await Store.open(path)
    await store.add_host(author.signing.public_key)
    sets = (kv.encode_set("ns", f"k{n % 7000}", b"v%d" % n) for n in range(KV_RECORDS))
    async for _ in store.append_many(author, kv.TAG, sets):
        pass
    future = Author(author.signing, sync, version="v9")
    await store.append(future, kv.TAG, [b"?"] * UNKNOWN)
    entries = (
        HistoryEntry(f"e{n % 4000}", f"cmd {n}", "/", 0, 0, n, "h", "s") for n in range(8000)
    )
    async for _ in store.append_many(author, history.TAG, map(history.encode_create, entries)):
        pass
    deletes = [history.encode_delete(f"e{n}") for n in range(0, 4000, 2)]
    await store.append(author, history.TAG, deletes)
    await store.close()


def kill_mid_catch_up(source: Path, target: Path, sync: SyncKey, delay: float) -> str:
    shutil.copy(source, target)
    return kill_when_ready([sys.executable, "-c", CHILD, str(target), sync.to_text()], delay)


async def check_resumed(path: Path, sync: SyncKey, total: int) -> None:
    store = await Store.open(path)
    views = ViewEngine(store, sync)
    try:
        await views.catch_up()
        assert await store.views.applied() == total
        assert await store.views.skipped() == Skipped(unknown_version=UNKNOWN)
        resumed = await snapshot(store)
        assert len(await store.views.kv_list()) == 7000
        last = max(n for n in range(KV_RECORDS) if n % 7000 == 6999)  # the last set wins
        assert await store.views.kv_get("ns", "k6999") == b"v%d" % last
        assert len(resumed.history) == 2000 and len(resumed.deleted) == 2000
        rebuilt = await views.rebuild()
        assert rebuilt.skipped == Skipped(unknown_version=UNKNOWN)
        assert await snapshot(store) == resumed
    finally:
        await store.close()
