"""Records near the 1 MiB payload bound still sync: batches are cut by bytes too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peer.client import PeerClient
from peer.crypto import MAX_PLAINTEXT, SyncKey
from peer.errors import InvalidRecord
from peer.service import start_server
from peer.sync import sync_with
from tests.conftest import new_author, open_store


async def test_a_dozen_one_mib_records_from_one_append_sync_both_ways(tmp_path: Path) -> None:
    key = SyncKey.generate()
    a, b = new_author(key), new_author(key)
    store_a = await open_store(tmp_path / "a.db", a)
    store_b = await open_store(tmp_path / "b.db", b)
    big = [os.urandom(MAX_PLAINTEXT) for _ in range(12)]
    await store_a.append(a, "files", big)
    await store_b.append(b, "files", big[:3])
    server = await start_server(store_a, "a", "127.0.0.1:0")
    try:
        async with PeerClient(f"127.0.0.1:{server.port}") as peer:
            summary = await sync_with(store_b, peer)
        assert (summary.pulled, summary.pushed) == (12, 3)
        assert await store_a.index() == await store_b.index()
    finally:
        await server.stop()
        await store_a.close()
        await store_b.close()


async def test_a_record_over_the_limit_is_refused_at_append(tmp_path: Path) -> None:
    author = new_author()
    store = await open_store(tmp_path / "a.db", author)
    try:
        with pytest.raises(InvalidRecord, match="over the limit"):
            await store.append(author, "files", [b"x" * (MAX_PLAINTEXT + 1)])
        assert await store.index() == {}
    finally:
        await store.close()
