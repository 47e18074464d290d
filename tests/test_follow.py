"""`Follow` (docs/protocol.md §7.5): the serving side, the v1 fallback, and meshes of
real nodes in one process (real stores, servicers, feeds and mesh links over the
in-memory channel) where each record reaches each node about once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc import aio

from peer.batches import Holdback
from peer.client import PeerClient
from peer.codec import wire
from peer.codec.wire import FollowControl, Followed
from peer.crypto import Author, SyncKey
from peer.errors import Unsupported
from peer.feed import Feed, Read
from peer.mesh import Mesh
from peer.records import Head, LogKey
from peer.segment import Segments
from peer.service.follow import Feeding
from peer.service.memory import MemoryRemote, serve_in_memory
from peer.service.servicer import SyncServicer, guarded_handlers
from peer.settings import Schedule
from peer.store import Store, TrustedPeer
from tests.conftest import new_author, open_store, signed_chain
from tests.daemons import until

# -- the serving side ---------------------------------------------------------------------


async def _controls(*items: FollowControl) -> AsyncIterator[FollowControl]:
    for item in items:
        yield item
    await asyncio.Event().wait()  # the follower keeps its side open


async def _read(stream: AsyncIterator[Followed], count: int) -> list[Followed]:
    messages: list[Followed] = []
    async with asyncio.timeout(10):
        while len(messages) < count:
            messages.append(await anext(stream))
    return messages


async def test_a_node_feeds_its_own_logs_and_notes_the_others(tmp_path: Path) -> None:
    own, other = new_author(), new_author()
    store = await open_store(tmp_path / "a.db", own, other)
    await store.append(own, "kv", [b"1", b"2"])
    await store.append(other, "kv", [b"3"])
    servicer, feed = await serve_in_memory(store, own_host=own.host)
    remote = MemoryRemote(servicer)
    stream = remote.follow(_controls(FollowControl(have={LogKey(own.host, "kv"): 1})))
    try:
        hello, fed, noted = await _read(stream, 3)
        assert hello.host == own.host and not hello.records
        assert [r.idx for r in fed.records] == [1] and fed.keys.keys() == {own.host}
        assert noted.notes == {LogKey(other.host, "kv"): 1} and not noted.records
        await store.append(other, "kv", [b"4"])  # live: a note, not the record
        (live,) = await _read(stream, 1)
        assert live.notes == {LogKey(other.host, "kv"): 2} and not live.records
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await feed.close()
        await store.close()


async def test_a_graft_sends_the_log_and_a_prune_turns_it_back_to_notes(tmp_path: Path) -> None:
    own, other = new_author(), new_author()
    store = await open_store(tmp_path / "a.db", own, other)
    await store.append(other, "kv", [b"1", b"2", b"3"])
    servicer, feed = await serve_in_memory(store, own_host=own.host)
    log = LogKey(other.host, "kv")
    controls: asyncio.Queue[FollowControl] = asyncio.Queue()

    async def from_queue() -> AsyncIterator[FollowControl]:
        while True:
            yield await controls.get()

    controls.put_nowait(FollowControl())
    stream = MemoryRemote(servicer).follow(from_queue())
    try:
        _, noted = await _read(stream, 2)
        assert noted.notes == {log: 3}
        controls.put_nowait(FollowControl(graft={log: 1}))
        (caught_up,) = await _read(stream, 1)
        assert [r.idx for r in caught_up.records] == [1, 2]
        await store.append(other, "kv", [b"4"])
        (live,) = await _read(stream, 1)
        assert [r.idx for r in live.records] == [3] and not live.keys  # key sent once
        controls.put_nowait(FollowControl(prune=frozenset({log})))
        await asyncio.sleep(0.05)  # the prune is read before the next append
        await store.append(other, "kv", [b"5"])
        (pruned,) = await _read(stream, 1)
        assert pruned.notes == {log: 5} and not pruned.records
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await feed.close()
        await store.close()


async def test_a_malformed_follow_request_is_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    servicer, feed = await serve_in_memory(store)

    async def garbage() -> AsyncIterator[bytes]:
        yield b"\x0a\x05\x0a\x01x"  # a `have` whose host is one byte

    try:
        answers = guarded_handlers(servicer)["Follow"](garbage(), _Context())
        with pytest.raises(_Aborted) as aborted:
            async for _ in answers:
                pass
        assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await feed.close()
        await store.close()


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code


class _Context:
    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code)


# -- a v1 peer ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _v1_server(store: Store) -> AsyncIterator[tuple[int, Feed]]:
    """A node as v1 served it: the four methods of 1.0, no Follow."""
    servicer, feed = await serve_in_memory(store)
    handlers = guarded_handlers(servicer)
    server = aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                wire.SERVICE_NAME,
                {
                    "GetIndex": grpc.unary_unary_rpc_method_handler(handlers["GetIndex"]),
                    "PullRecords": grpc.unary_stream_rpc_method_handler(handlers["PullRecords"]),
                    "PushRecords": grpc.stream_unary_rpc_method_handler(handlers["PushRecords"]),
                    "Subscribe": grpc.unary_stream_rpc_method_handler(handlers["Subscribe"]),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, feed
    finally:
        await server.stop(None)
        await feed.close()


async def test_a_v1_peer_is_followed_through_subscribe(tmp_path: Path) -> None:
    there_author = new_author()
    there = await open_store(tmp_path / "there.db", there_author)
    here = await open_store(tmp_path / "here.db")
    async with _v1_server(there) as (port, _):
        async with PeerClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(Unsupported):
                await anext(aiter(client.follow(_controls(FollowControl()))))
        await here.peers.add(TrustedPeer(b"t" * 32, "there", f"127.0.0.1:{port}"))

        async def connect(peer: TrustedPeer, address: str) -> PeerClient:
            return PeerClient(address)

        mesh = Mesh(here, Schedule(interval=60.0), connect)
        await mesh.start()
        try:
            (state,) = mesh.states()
            await until(_true(lambda: state.live), "the link to go live", 10)
            await there.append(there_author, "kv", [b"x"] * 5)
            await until(_holds(here, LogKey(there_author.host, "kv"), 5), "records live", 10)
            assert state.received_live == 5 and state.last_error is None
        finally:
            await mesh.close()
    await here.close()
    await there.close()


def _true(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return condition()

    return probe


def _holds(store: Store, log: LogKey, count: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        head = (await store.index()).get(log)
        return head is not None and head.next_idx >= count

    return probe


# -- meshes in one process ----------------------------------------------------------------


class _Counted:
    """A Remote that counts the records that cross it, per receiving node."""

    def __init__(self, inner: MemoryRemote, counts: Counter[str], receiver: str) -> None:
        self.inner, self.counts, self.receiver = inner, counts, receiver

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def __aenter__(self) -> _Counted:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def follow(self, controls: AsyncIterator[FollowControl]) -> AsyncIterator[Followed]:
        async for message in self.inner.follow(controls):
            self.counts[self.receiver] += len(message.records)
            yield message


class _Mesh:
    """N nodes, each a store, an author, a servicer and a mesh, linked as told."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sync = SyncKey.generate()
        self.stores: dict[str, Store] = {}
        self.authors: dict[str, Author] = {}
        self.servicers: dict[str, SyncServicer] = {}
        self.feeds: list[Feed] = []
        self.meshes: list[Mesh] = []
        self.copies: Counter[str] = Counter()

    async def add(self, name: str) -> None:
        author = new_author(self.sync)
        store = await open_store(self.root / f"{name}.db", author)
        servicer, feed = await serve_in_memory(store, name, own_host=author.host)
        self.stores[name], self.authors[name], self.servicers[name] = store, author, servicer
        self.feeds.append(feed)

    async def link(self, edges: list[tuple[str, str]]) -> None:
        for a, b in edges:
            await self.stores[a].peers.add(TrustedPeer(b.encode().ljust(32, b"."), b, b))
            await self.stores[b].peers.add(TrustedPeer(a.encode().ljust(32, b"."), a, a))
        for name, store in self.stores.items():

            async def connect(peer: TrustedPeer, address: str, me: str = name) -> _Counted:
                remote = MemoryRemote(self.servicers[address], address, f"ipv4:{me}:1")
                return _Counted(remote, self.copies, me)

            mesh = Mesh(store, Schedule(interval=60.0), connect, self.authors[name].host)
            await mesh.start()
            self.meshes.append(mesh)

    async def live(self) -> None:
        async def all_live() -> bool:
            return all(s.live for mesh in self.meshes for s in mesh.states())

        await until(all_live, "every link live", 10)

    async def converged(self, expected: int) -> None:
        async def same() -> bool:
            indexes = [await s.index() for s in self.stores.values()]
            total = sum(h.next_idx for h in indexes[0].values())
            return total == expected and all(i == indexes[0] for i in indexes)

        await until(same, f"every node to hold {expected} records", 20)

    async def close(self) -> None:
        for mesh in self.meshes:
            await mesh.close()
        for feed in self.feeds:
            await feed.close()
        for store in self.stores.values():
            await store.close()


@contextlib.asynccontextmanager
async def _mesh(root: Path, names: list[str], edges: list[tuple[str, str]]) -> AsyncIterator[_Mesh]:
    mesh = _Mesh(root)
    try:
        for name in names:
            await mesh.add(name)
        await mesh.link(edges)
        await mesh.live()
        yield mesh
    finally:
        await mesh.close()


async def test_in_a_full_mesh_each_record_reaches_each_node_once(tmp_path: Path) -> None:
    names = ["n0", "n1", "n2", "n3"]
    edges = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    async with _mesh(tmp_path, names, edges) as mesh:
        for n in range(5):  # appends on every node, a bulk one on n0
            for name in names:
                await mesh.stores[name].append(
                    mesh.authors[name], "kv", [b"r"] * (50 if n else 500)
                )
        total = 4 * (500 + 4 * 50)
        await mesh.converged(total)
        await asyncio.sleep(0.2)  # late copies would show now
        per_node = {name: mesh.copies[name] / (total - (500 + 200)) for name in names}
        print(f"copies of each record received per node: {per_node}")
        assert all(copies <= 1.1 for copies in per_node.values())
        hosts = {name.encode().ljust(32, b"."): mesh.authors[name].host for name in names}
        for node in mesh.meshes:  # each neighbour feeds its own log: `peer status` says so
            for state in node.states():
                assert state.feeds == [LogKey(hosts[state.node_id], "kv")]
                assert state.as_json()["feeds"] == [
                    {"host": hosts[state.node_id].hex(), "tag": "kv"}
                ]


async def test_records_cross_a_line_of_nodes_by_grafts(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    async with _mesh(tmp_path, names, [("a", "b"), ("b", "c"), ("c", "d")]) as mesh:
        for _ in range(3):
            await mesh.stores["a"].append(mesh.authors["a"], "kv", [b"r"] * 40)
            await mesh.stores["d"].append(mesh.authors["d"], "kv", [b"r"] * 40)
        await mesh.converged(240)
        await asyncio.sleep(0.2)  # late copies would show now
        print(f"records received per node: {dict(mesh.copies)}")
        for name in names:
            assert mesh.copies[name] <= 1.1 * (240 - (120 if name in "ad" else 0))


def test_have_is_split_into_messages_that_fit() -> None:
    held = {LogKey(bytes(16), f"t{n}"): n for n in range(wire.INDEX_PAGE * 2 + 1)}
    controls = wire.have_messages(held)
    assert [len(c.have) for c in controls] == [wire.INDEX_PAGE, wire.INDEX_PAGE, 1]
    assert [c.more for c in controls] == [True, True, False]
    assert max(len(wire.encode_follow_request(c)) for c in controls) < 4 << 20
    assert wire.have_messages({}) == [FollowControl()]


async def test_the_catch_up_waits_for_the_last_have(tmp_path: Path) -> None:
    own = new_author()
    store = await open_store(tmp_path / "a.db", own)
    await store.append(own, "kv", [b"1", b"2", b"3"])
    servicer, feed = await serve_in_memory(store, own_host=own.host)
    log = LogKey(own.host, "kv")
    first = FollowControl(have={LogKey(bytes(16), "other"): 1}, more=True)
    stream = MemoryRemote(servicer).follow(_controls(first, FollowControl(have={log: 2})))
    try:
        hello, fed = await _read(stream, 2)
        assert hello.host == own.host
        assert [r.idx for r in fed.records] == [2]  # not from 0: the second message said 2
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        await feed.close()
        await store.close()


def test_a_live_read_is_sent_per_log_from_where_the_follower_stands() -> None:
    """`Feeding.live` takes a read per log: of a fed log only the records past the
    follower's position (a read may overlap what a catch-up sent), of another log one
    note, and nothing at all of what the follower holds."""
    own, other = new_author(), new_author()
    mine, theirs = signed_chain(own, "kv", 6), signed_chain(other, "kv", 3)
    feeding = Feeding(own.host)
    feeding.position[LogKey(own.host, "kv")] = 4  # a catch-up sent 0-3 already
    interleaved = [mine[4], theirs[0], mine[5], theirs[1], theirs[2]]
    read = Read(Segments.of(interleaved).parts)
    send, notes = feeding.live(read, 1000)
    assert Segments(send) == mine[4:]
    assert notes == {LogKey(other.host, "kv"): 3}
    assert feeding.live(read, 1000) == ([], {})  # all sent or noted already


def test_a_live_read_cut_before_a_signature_is_held_back_until_it() -> None:
    """A read that ends a log's run on an unsigned record (the feed's scan limit cut
    a transaction) releases that log only with the record that signs it."""
    own, other = new_author(), new_author()
    mine = own.write("kv", Head(0), [1] * 4, [b"%d" % n for n in range(4)])  # one signature
    theirs = signed_chain(other, "kv", 1)
    assert [bool(r.sig) for r in mine] == [False, False, False, True]
    mine_run, theirs_run = Segments.of(mine).parts, Segments.of(theirs).parts
    holdback = Holdback()
    first = holdback.release([*theirs_run, mine_run[0].slice(0, 2)], cut=True)
    assert Segments(first) == theirs  # mine 0-1 wait for their signature
    assert holdback.release([mine_run[0].slice(2, 1)], cut=True) == []  # 2: still unsigned
    assert Segments(holdback.release([mine_run[0].slice(3, 1)], cut=False)) == mine
