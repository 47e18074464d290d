"""The `Remote` conformance suite (trio's idea: one suite, every implementation): the
grpc client against a real server on 127.0.0.1:0, and `MemoryRemote` against the same
servicer in-process, must behave alike, errors included."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from peer.client import PeerClient
from peer.errors import (
    ForgeryError,
    GapError,
    PeerError,
    PeerUnavailable,
    StoreFull,
    UnknownHost,
)
from peer.remote import Remote
from peer.service import start_server
from peer.service.memory import MemoryRemote, serve_in_memory
from peer.settings import Limits
from peer.store import Store
from peer.sync import sync_with
from tests.conftest import new_author, signed_chain
from tests.nodes import assert_converged, batches_of

Serve = Callable[[Store], AbstractAsyncContextManager[Remote]]


@asynccontextmanager
async def over_grpc(store: Store) -> AsyncIterator[Remote]:
    running = await start_server(store, "served", "127.0.0.1:0")
    try:
        async with PeerClient(f"127.0.0.1:{running.port}") as client:
            yield client
    finally:
        await running.stop(grace=0.2)


@asynccontextmanager
async def in_memory(store: Store) -> AsyncIterator[Remote]:
    servicer, feed = await serve_in_memory(store, "served")
    try:
        yield MemoryRemote(servicer, "served")
    finally:
        await feed.close()


@pytest.fixture(params=[over_grpc, in_memory], ids=["grpc", "memory"])
def serve(request: pytest.FixtureRequest) -> Serve:
    return request.param  # type: ignore[no-any-return]


async def test_a_session_converges_both_ways(tmp_path: Path, serve: Serve) -> None:
    here, there = new_author(), new_author()
    async with await Store.open(tmp_path / "a.db") as a, await Store.open(tmp_path / "b.db") as b:
        await a.add_host(here.signing.public_key)
        await b.add_host(there.signing.public_key)
        await a.append(here, "t", [b"a%d" % n for n in range(300)])
        await b.append(there, "t", [b"b%d" % n for n in range(200)])
        async with serve(b) as remote:
            summary = await sync_with(a, remote, batch=64)
        assert (summary.pulled, summary.pushed) == (200, 300)
        await assert_converged(a, b)


async def test_subscribe_catches_up_then_follows(tmp_path: Path, serve: Serve) -> None:
    author = new_author()
    async with await Store.open(tmp_path / "b.db") as b:
        await b.add_host(author.signing.public_key)
        await b.append(author, "t", [b"old"])
        async with serve(b) as remote:
            stream = remote.subscribe({})
            first, keys = await asyncio.wait_for(anext(stream), 5)
            await b.append(author, "t", [b"new"])
            second, _ = await asyncio.wait_for(anext(stream), 5)
            await stream.aclose()  # type: ignore[attr-defined]
    assert [r.idx for r in first + second] == [0, 1]
    assert author.host in keys


async def test_a_gap_is_the_same_error_with_the_idx_expected(tmp_path: Path, serve: Serve) -> None:
    author = new_author()
    async with await Store.open(tmp_path / "b.db") as b:
        records = signed_chain(author, "t", 3)
        async with serve(b) as remote:
            keys = {author.host: author.signing.public_key}
            with pytest.raises(GapError) as raised:
                await remote.push(batches_of((records[2:], keys)))
    assert raised.value.expected_idx == 0
    assert isinstance(raised.value, PeerError)


async def test_refusals_keep_their_class(tmp_path: Path, serve: Serve) -> None:
    """Each came back as its status code's class (ProtocolError, IntegrityError)."""
    author = new_author()
    records = signed_chain(author, "t", 3)
    keys = {author.host: author.signing.public_key}
    forged = [*records[:2], dataclasses.replace(records[2], payload=b"tampered")]
    async with await Store.open(tmp_path / "b.db") as b, serve(b) as remote:
        with pytest.raises(PeerError) as raised:
            await remote.push(batches_of((forged, keys)))
        assert type(raised.value) is ForgeryError
        assert "the signature does not verify" in str(raised.value)
        with pytest.raises(PeerError) as raised:
            await remote.push(batches_of((records, {})))
        assert type(raised.value) is UnknownHost
        assert await b.index() == {}


async def test_a_full_store_is_store_full(tmp_path: Path, serve: Serve) -> None:
    """Not LimitExceeded, which shares its status code, RESOURCE_EXHAUSTED."""
    author = new_author()
    async with (
        await Store.open(tmp_path / "a.db") as a,
        await Store.open(tmp_path / "b.db", max_bytes=300_000) as b,
    ):
        await a.add_host(author.signing.public_key)
        await a.append(author, "t", [bytes(200)] * 3000)
        async with serve(b) as remote:
            with pytest.raises(PeerError) as raised:
                await sync_with(a, remote, batch=256)
    assert type(raised.value) is StoreFull
    assert "the disk is full" in str(raised.value)


async def test_a_memory_stream_its_server_cuts_ends_that_stream_not_the_caller(
    tmp_path: Path,
) -> None:
    """A subscriber that reads nothing while it falls behind is cut by the server
    (`write_idle_s`). In memory the handler runs in a task of its own, as under grpc:
    the cut cancels that task, and the caller learns it at its next read (the call
    was cancelled: the peer is unavailable to it), instead of being cancelled itself."""
    author = new_author()
    limits = Limits(subscriber_queue=1, write_idle_s=0.05)
    async with await Store.open(tmp_path / "b.db") as b:
        await b.add_host(author.signing.public_key)
        servicer, feed = await serve_in_memory(b, "served", limits)
        try:
            stream = MemoryRemote(servicer, "served").subscribe({})
            await b.append(author, "t", [b"first"])
            await asyncio.wait_for(anext(stream), 5)
            for n in range(20):  # far more than the queue and the stream's buffer hold
                await b.append(author, "t", [b"more %d" % n])
                await asyncio.sleep(0.06)  # each one its own feed batch (the poll is 50 ms)
            await asyncio.sleep(0.3)  # past write_idle_s after falling behind
            with pytest.raises(PeerUnavailable, match="cancelled"):
                for _ in range(100):  # what was buffered before the cut, then the status
                    await asyncio.wait_for(anext(stream), 5)
            assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
        finally:
            await feed.close()
