"""The store watcher: one poll of `data_version` per store, shared by every watch, and
the doorbell that makes it look at once.

Another process's commits are played by a second connection to the same database file
(what the CLI is); this process's by the watched store itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from peer.crypto import Author
from peer.store import Store, TrustedPeer
from peer.watch import Doorbell, StoreWatcher, doorbell_path, ring
from tests.conftest import open_store

SETTLE_S = 0.3  # several polls of 50 ms


@pytest.fixture
async def other(tmp_path: Path, store: Store, author: Author) -> AsyncIterator[Store]:
    """Another connection to the watched store's file: another process, as SQLite sees it."""
    opened = await open_store(tmp_path / "a.db", author)
    yield opened
    await opened.close()


def counter() -> tuple[list[int], Callable[[], Awaitable[None]]]:
    calls = [0]

    async def on_change() -> None:
        calls[0] += 1

    return calls, on_change


def polls() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "store-watch"]


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_one_poll_tells_every_watch_of_another_process_commit(
    store: Store, other: Store
) -> None:
    watcher = StoreWatcher(store)
    (feed, on_feed), (trust, on_trust) = counter(), counter()
    watches = [watcher.watch("feed", on_feed), watcher.watch("trust", on_trust)]
    assert len(polls()) == 1
    await asyncio.sleep(SETTLE_S)
    assert (feed, trust) == ([0], [0])  # no commit: no call, however many polls
    await other.peers.add(TrustedPeer(bytes(32), "laptop"))
    await eventually(lambda: feed == [1] and trust == [1])
    for watch in watches:
        await watch.close()
    assert not polls()  # the poll stops with the last watch


async def test_a_watch_with_every_is_called_at_most_that_often(store: Store, other: Store) -> None:
    watcher = StoreWatcher(store)
    calls, on_change = counter()
    watch = watcher.watch("trust", on_change, every=0.5)
    try:
        for n in range(12):  # a commit every 50 ms for 0.6 s
            await other.peers.add(TrustedPeer(bytes([n]) * 32))
            await asyncio.sleep(0.05)
        await eventually(lambda: calls[0] >= 1)
        assert calls[0] <= 3  # not once per commit: at most every 0.5 s (and a last one)
        before = calls[0]
        await asyncio.sleep(0.5 + SETTLE_S)
        assert before <= calls[0] <= before + 1  # the changes left over: one more call
    finally:
        await watch.close()


async def test_a_local_watch_wakes_at_once_on_this_process_commit(
    store: Store, author: Author
) -> None:
    watcher = StoreWatcher(store, poll_s=3600.0)  # the poll alone would never tell
    (local, on_local), (polled, on_polled) = counter(), counter()
    watches = [watcher.watch("feed", on_local, local=True), watcher.watch("trust", on_polled)]
    try:
        await store.append(author, "notes", [b"hello"])
        await eventually(lambda: local == [1], timeout=1.0)
        assert polled == [0]
    finally:
        for watch in watches:
            await watch.close()


async def test_at_once_calls_back_without_a_commit(store: Store) -> None:
    calls, on_change = counter()
    watch = StoreWatcher(store).watch("feed", on_change, at_once=True)
    try:
        await eventually(lambda: calls == [1])
    finally:
        await watch.close()


async def test_a_wake_asks_at_once_what_the_poll_would_ask_later(
    store: Store, other: Store
) -> None:
    watcher = StoreWatcher(store, poll_s=3600.0)  # the poll alone would never tell
    (feed, on_feed), (trust, on_trust) = counter(), counter()
    watches = [watcher.watch("feed", on_feed, local=True), watcher.watch("trust", on_trust)]
    try:
        # the watcher's first data_version is its baseline: read before the commit
        # below (on a loaded machine it could be read after it, and see no change)
        await asyncio.sleep(SETTLE_S)
        await other.peers.add(TrustedPeer(bytes(32), "laptop"))  # another process
        await asyncio.sleep(SETTLE_S)
        assert (feed, trust) == ([0], [0])
        watcher.wake()  # what the doorbell does
        await eventually(lambda: feed == [1] and trust == [1])  # every watch, as a poll would
        watcher.wake()  # nothing committed since: nobody is called
        await asyncio.sleep(SETTLE_S)
        assert (feed, trust) == ([1], [1])
    finally:
        for watch in watches:
            await watch.close()


async def test_ringing_the_doorbell_calls_it_and_nobody_else(tmp_path: Path) -> None:
    rung: list[int] = []
    path = doorbell_path(tmp_path / "peer.sock")
    assert path == tmp_path / "peer.wake"
    doorbell = await Doorbell.open(path, lambda: rung.append(1))
    try:
        assert ring(path)
        await eventually(lambda: rung == [1])
    finally:
        doorbell.close()
    assert not path.exists()  # the daemon leaves no socket behind
    assert not ring(path)  # nobody to ring: False, not an error


def test_a_ring_nobody_answers_fails_at_once_and_quietly(tmp_path: Path) -> None:
    """A missing socket, a socket of a daemon that died, a full queue of one that does
    not read: each is False, and ringing never waits."""
    assert not ring(tmp_path / "missing" / "peer.wake")
    stale = tmp_path / "stale.wake"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(stale))
    assert stale.exists() and not ring(stale)  # refused
    (tmp_path / "file.wake").write_text("not a socket")
    assert not ring(tmp_path / "file.wake")
    assert not ring(tmp_path / ("x" * 200))  # longer than a socket address
    full = tmp_path / "full.wake"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind(str(full))
        answers = [ring(full) for _ in range(5000)]  # more than any queue holds
    assert answers[0] and not answers[-1]
