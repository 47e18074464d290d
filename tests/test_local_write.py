"""Programs that write (issue 19): the daemon's group commit, thousands of appends at
once from one connection, the AppendStream with its acknowledgements, and the local
API driven with nothing but grpc and the generated stubs (as a Go or Node program
would).

Against real parts: `peer serve` subprocesses (`daemons`), or, where a limit must be
small to be reached, the local server itself in this process on a Unix socket in
tmp_path, over a real store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from peer import api
from peer.api.writing import Appends
from peer.client import LocalClient
from peer.commit import GroupCommit
from peer.crypto import MAX_PLAINTEXT
from peer.errors import (
    InvalidRecord,
    LimitExceeded,
    PeerError,
    PeerUnavailable,
    ProtocolError,
    StoreError,
)
from peer.feed import Feed
from peer.home import Home
from peer.node import Node
from peer.records import LogKey, Record
from peer.segment import Segments
from peer.service.local import LocalServer, LocalServicer, start_local_server
from peer.store import Faults, Store
from peer.v1 import local_pb2, local_pb2_grpc, sync_pb2, sync_pb2_grpc
from tests.cli import peer as run_cli
from tests.daemons import Daemons, aok, texts

STEP_S = 60.0  # a bound on each awaited step: the tests assert outcomes, not speed


async def test_many_appends_at_once_are_grouped_and_each_gets_its_own_idx(
    tmp_path: Path,
) -> None:
    node = await Node.init(Home(tmp_path / "home"))
    try:
        commit = GroupCommit(node.append_written)
        futures = [
            commit.submit("notes", [f"r{n}a".encode(), f"r{n}b".encode()]) for n in range(100)
        ]
        results = await asyncio.wait_for(asyncio.gather(*futures), STEP_S)
        print(f"100 requests written in {commit.transactions} transaction(s)")
        assert commit.transactions < 100
        for n, written in enumerate(results):  # each request's items consecutive, in order
            assert (written.first_idx, written.count) == (2 * n, 2)
        rows = await node.tail("notes")
        assert [entry.data for entry in rows] == [
            f"r{n}{part}".encode() for n in range(100) for part in "ab"
        ]
    finally:
        await node.close()


async def test_a_request_after_another_waits_for_it_even_in_another_log(
    tmp_path: Path,
) -> None:
    """A stream's messages, y then x then y: the second y is not grouped with the
    first (which it would be, same log, if it did not wait for x), and a request after
    one that failed is not written at all."""
    node = await Node.init(Home(tmp_path / "home"))
    try:
        commit = GroupCommit(node.append_written)
        first = commit.submit("y", [b"y1"])
        middle = commit.submit("x", [b"x1"], after=first)
        last = commit.submit("y", [b"y2"], after=middle)
        written = await asyncio.wait_for(asyncio.gather(first, middle, last), STEP_S)
        stamps = [part.timestamps[0] for part in written]
        assert stamps == sorted(stamps) and commit.transactions == 3
        bad = commit.submit("z", [b"x" * (MAX_PLAINTEXT + 1)])
        after_bad = commit.submit("z", [b"never"], after=bad)
        for future in (bad, after_bad):
            with pytest.raises(PeerError):
                await asyncio.wait_for(future, STEP_S)
        assert await node.tail("z") == []
    finally:
        await node.close()


async def test_closing_while_a_group_is_written_answers_it_never_leaves_it_waiting(
    tmp_path: Path,
) -> None:
    node = await Node.init(Home(tmp_path / "home"))
    try:
        commit = GroupCommit(node.append_written)
        writing = commit.submit("big", [b"%d" % n for n in range(10_000)])
        waiting = commit.submit("other", [b"queued behind it"])
        await asyncio.sleep(0)  # the writer has started the transaction
        await asyncio.wait_for(commit.close(), STEP_S)
        for future in (writing, waiting):
            with pytest.raises(PeerUnavailable):
                await asyncio.wait_for(future, STEP_S)
        held = {log.tag: head.next_idx for log, head in (await node.store.index()).items()}
        assert held.get("big", 0) in (0, 10_000)  # all or nothing
        assert "other" not in held
    finally:
        await node.close()


async def test_one_request_at_fault_fails_alone(tmp_path: Path) -> None:
    node = await Node.init(Home(tmp_path / "home"))
    try:
        commit = GroupCommit(node.append_written)
        good = [commit.submit("notes", [b"before"]), commit.submit("notes", [b"after"])]
        bad = commit.submit("notes", [b"x" * (MAX_PLAINTEXT + 1)])
        good.append(commit.submit("notes", [b"last"]))
        with pytest.raises(InvalidRecord):
            await asyncio.wait_for(bad, STEP_S)
        written = await asyncio.wait_for(asyncio.gather(*good), STEP_S)
        assert [part.first_idx for part in written] == [0, 1, 2]
        assert [e.data for e in await node.tail("notes")] == [b"before", b"after", b"last"]
    finally:
        await node.close()


async def test_a_group_that_fails_otherwise_fails_whole_and_is_not_written_again(
    tmp_path: Path,
) -> None:
    """A failure that is not one malformed request (here the disk failing at the
    commit) fails every request of the group, and none is retried on its own: such a
    failure may come after the commit, and a retry would write the records twice."""
    home = Home(tmp_path / "home")
    await (await Node.init(home)).close()
    faults = Faults()
    node = Node(home, home.load(), await Store.open(home.database, faults=faults))
    try:
        commit = GroupCommit(node.append_written)
        futures = [commit.submit("notes", [f"n{n}".encode()]) for n in range(3)]
        faults.arm(8)  # BEGIN, head, clock, clock floor, records, their seq, head, COMMIT
        done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), STEP_S)
        faults.disarm()
        assert all(isinstance(result, StoreError) for result in done), done
        assert faults.fired == 1
        assert await node.tail("notes") == []
        assert (await commit.append("notes", [b"later"])).first_idx == 0
    finally:
        await node.close()


@pytest.mark.parametrize("count", [3_000, 30_000])
async def test_thousands_of_appends_at_once_from_one_connection_all_succeed(
    daemons: Daemons, count: int
) -> None:
    (a,) = daemons.homes("a")
    daemons.start(a)
    program = await daemons.api(a)
    calls = [program.append("events", f"e{n}") for n in range(count)]
    done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), STEP_S)
    failed = [result for result in done if isinstance(result, BaseException)]
    assert failed == []
    appended = [result for result in done if isinstance(result, api.Appended)]
    assert sorted(r.first_idx for r in appended) == list(range(count))
    assert all(r.count == 1 and len(r.timestamps) == 1 for r in appended)
    held = texts(a.root, "events")
    assert {held[r.first_idx] for r in appended} == {f"e{n}" for n in range(count)}
    for n, result in enumerate(appended):  # each caller's own idx holds its own item
        assert held[result.first_idx] == f"e{n}"


async def test_a_writer_gets_every_record_acknowledged_beside_single_appends(
    daemons: Daemons,
) -> None:
    (a,) = daemons.homes("a")
    daemons.start(a)
    program = await daemons.api(a)

    async def singles() -> list[int]:
        return [(await program.append("log", f"single {n}")).first_idx for n in range(50)]

    async with program.writer("log", batch=64) as writer:
        beside = asyncio.create_task(singles())
        for n in range(2000):
            await writer.write(f"streamed {n}")
        acked = await asyncio.wait_for(writer.flush(), STEP_S)
        single_idx = await asyncio.wait_for(beside, STEP_S)
    print(f"acked ranges: {acked}")
    assert writer.durable == 2000
    streamed = [idx for first, last in writer.acked for idx in range(first, last + 1)]
    assert len(streamed) == 2000
    assert sorted(streamed + single_idx) == list(range(2050))
    held = texts(a.root, "log")
    assert [held[idx] for idx in streamed] == [f"streamed {n}" for n in range(2000)]


async def test_the_local_api_works_with_grpc_and_the_generated_stubs_alone(
    daemons: Daemons,
) -> None:
    """What docs/local-api.md tells a Go or Node program: the socket from serve.json,
    a `unix:` target, LocalService.AppendStream, and SyncService.Subscribe to read."""
    (a,) = daemons.homes("a")
    daemons.start(a)
    socket = json.loads((a.root / "serve.json").read_text())["socket"]
    async with aio.insecure_channel(f"unix:{socket}") as channel:
        local = local_pb2_grpc.LocalServiceStub(channel)
        requests = [
            local_pb2.AppendStreamRequest(tag="raw", items=[b"one", b"two"]),
            local_pb2.AppendStreamRequest(tag="raw", items=[b"three"]),
        ]
        acks = [
            ack
            async for response in local.AppendStream(iter(requests), timeout=STEP_S)
            for ack in response.acks
        ]
        assert [(k.seq, k.tag, k.first_idx, k.count) for k in acks] == [
            (0, "raw", 0, 2),
            (1, "raw", 2, 1),
        ]
        assert acks[0].host == bytes.fromhex(a.host)
        assert [len(k.timestamps) for k in acks] == [2, 1]
        unary = await local.Append(
            local_pb2.AppendRequest(tag="raw", items=[b"four"]), timeout=STEP_S
        )
        assert (unary.first_idx, unary.count) == (3, 1)

        sync = sync_pb2_grpc.SyncServiceStub(channel)
        stream = sync.Subscribe(sync_pb2.SubscribeRequest(tags=["raw"]))
        seen: list[int] = []
        async with asyncio.timeout(STEP_S):
            async for batch in stream:
                seen += [record.idx for record in batch.records]
                if len(seen) >= 4:
                    break
        stream.cancel()
    assert seen == [0, 1, 2, 3]
    assert texts(a.root, "raw") == ["one", "two", "three", "four"]


@dataclass
class InProcess:
    """The local server in this process, over a real store, with its group commit."""

    node: Node
    commit: GroupCommit
    server: LocalServer
    feed: Feed

    def client(self) -> LocalClient:
        return LocalClient(str(self.server.socket), timeout=STEP_S)


@contextlib.asynccontextmanager
async def _in_process(root: Path, **commit_options: int) -> AsyncIterator[InProcess]:
    node = await Node.init(Home(root / "home"))
    feed = Feed(node.store)
    await feed.start()
    commit = GroupCommit(node.append_written, **commit_options)
    server = await start_local_server(
        node.home.root, node.store, feed, "test", LocalServicer(commit, node.status)
    )
    try:
        yield InProcess(node, commit, server, feed)
    finally:
        await server.stop(0)
        await commit.close()
        await feed.close()
        await node.close()


@pytest.fixture
async def small_queue(tmp_path: Path) -> AsyncIterator[InProcess]:
    """A local server whose group commit holds at most 10 records waiting."""
    async with _in_process(tmp_path, queued_records=10) as serving:
        yield serving


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[InProcess]:
    """A local server with the daemon's own limits."""
    async with _in_process(tmp_path) as serving:
        yield serving


@pytest.mark.parametrize("together", [True, False], ids=["one-message", "one-message-each"])
async def test_single_appends_share_a_stream_and_the_one_refused_fails_alone(
    local: InProcess, together: bool
) -> None:
    """`Connection.append` calls ride one AppendStream. A call the daemon refuses (an
    item over the limit, sent past the API's own check) fails alone: the callers sent
    in its message or after it, whose messages the daemon then does not write, are
    sent again, and each gets its own item at its own idx."""
    appends = Appends(local.client())
    too_big = b"x" * (MAX_PLAINTEXT + 1)
    items = [b"a", b"b", too_big, b"c", b"d"]
    try:
        calls = []
        for item in items:
            calls.append(asyncio.ensure_future(appends.append("log", [item])))
            if not together:
                await asyncio.sleep(0)  # the sender takes each alone
        done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), STEP_S)
    finally:
        await appends.close()
    print(f"results: {[r if isinstance(r, BaseException) else r.first_idx for r in done]}")
    assert isinstance(done[2], InvalidRecord)
    written = [r for r in done if isinstance(r, api.Appended)]
    assert len(written) == 4 and all(len(r.timestamps) == r.count == 1 for r in written)
    held = [e.data for e in await local.node.tail("log")]
    assert sorted(held) == [b"a", b"b", b"c", b"d"]
    for item, result in zip(items, done, strict=True):
        if isinstance(result, api.Appended):
            assert held[result.first_idx] == item


async def test_an_append_no_message_can_carry_is_refused_before_it_is_sent(
    local: InProcess,
) -> None:
    """Over 10,000 items or 8 MiB: refused at once with what to do, and a call beside
    it, on the same stream, is written."""
    appends = Appends(local.client())
    try:
        many = appends.append("log", [b"i"] * 10_001)
        large = appends.append("log", [b"x" * MAX_PLAINTEXT] * 9)
        beside = appends.append("log", [b"beside"])
        done = await asyncio.wait_for(
            asyncio.gather(many, large, beside, return_exceptions=True), STEP_S
        )
    finally:
        await appends.close()
    for refused in done[:2]:
        assert isinstance(refused, InvalidRecord), refused
        assert "append them in parts, or stream them" in str(refused)
    assert isinstance(done[2], api.Appended) and done[2].first_idx == 0
    assert [e.data for e in await local.node.tail("log")] == [b"beside"]


async def test_a_single_append_the_daemon_never_acknowledges_fails_in_time(
    daemons: Daemons,
) -> None:
    """A daemon that stops answering (SIGSTOP): an append fails after the client's
    timeout, saying it may still be written, instead of waiting for keepalive."""
    (a,) = daemons.homes("a")
    (daemon,) = daemons.start(a)
    socket = json.loads((a.root / "serve.json").read_text())["socket"]
    appends = Appends(LocalClient(socket, timeout=1.0))
    try:
        await asyncio.wait_for(appends.append("log", [b"first"]), STEP_S)
        daemon.send(signal.SIGSTOP)
        try:
            with pytest.raises(PeerUnavailable, match=r"did not acknowledge.*next_idx"):
                await asyncio.wait_for(appends.append("log", [b"second"]), STEP_S)
        finally:
            daemon.send(signal.SIGCONT)
        third = await asyncio.wait_for(appends.append("log", [b"third"]), STEP_S)
    finally:
        await appends.close()
    assert third.first_idx in (1, 2)  # "second" may have been written after all


async def test_past_the_queue_a_call_is_refused_in_words_never_cancelled(
    small_queue: InProcess,
) -> None:
    client = small_queue.client()
    try:
        calls = [client.append("busy", [f"b{n}".encode()]) for n in range(3000)]
        done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), STEP_S)
    finally:
        await client.close()
    refused = [r for r in done if isinstance(r, BaseException)]
    written = [r for r in done if not isinstance(r, BaseException)]
    print(f"{len(written)} written, {len(refused)} refused: {refused[:1]}")
    assert refused and written
    for error in refused:
        assert isinstance(error, LimitExceeded), repr(error)
        assert "wait for your earlier appends" in str(error)
        assert "AppendStream" in str(error)
    assert sorted(r.first_idx for r in written) == list(range(len(written)))


async def test_a_stream_never_refuses_it_waits(small_queue: InProcess) -> None:
    """The same 10-record queue: a writer's 3,000 records all go through."""
    client = small_queue.client()
    try:
        writer = api.Writer(client.append_stream(), "streamed", batch=3)
        for n in range(3000):
            await writer.write(f"s{n}")
        assert await asyncio.wait_for(writer.flush(), STEP_S) == [(0, 2999)]
        await asyncio.wait_for(writer.close(), STEP_S)
    finally:
        await client.close()
    index = await small_queue.node.store.index()
    assert index[LogKey(small_queue.node.identity.host, "streamed")].next_idx == 3000


async def test_a_failing_stream_acknowledges_what_was_durable_then_says_why(
    small_queue: InProcess,
) -> None:
    client = small_queue.client()
    try:
        stream = client.append_stream()
        await stream.write("good", [b"kept 1", b"kept 2"])
        await stream.write("Not A Tag!", [b"refused"])
        await stream.write("good", [b"never read"])
        await stream.done_writing()
        acks = []
        with pytest.raises(PeerError) as failure:
            async with asyncio.timeout(STEP_S):
                while (more := await stream.read()) is not None:
                    acks += more
    finally:
        await client.close()
    assert isinstance(failure.value, ProtocolError | InvalidRecord)
    assert "tag" in str(failure.value)
    assert [(a.seq, a.tag, a.first_idx, a.count) for a in acks] == [(0, "good", 0, 2)]
    assert [e.data for e in await small_queue.node.tail()] == [b"kept 1", b"kept 2"]


async def test_a_writer_that_fails_keeps_exactly_what_was_acknowledged(
    small_queue: InProcess,
) -> None:
    client = small_queue.client()
    try:
        writer = api.Writer(client.append_stream(), "fine", batch=2)
        await writer.write("a", "b", "c")
        await asyncio.wait_for(writer.flush(), STEP_S)
        await small_queue.commit.close()  # the daemon stops writing
        with pytest.raises(PeerError):
            await writer.write("d", "e")
            await asyncio.wait_for(writer.flush(), STEP_S)
    finally:
        await client.close()
    assert writer.acked == [(0, 2)]
    assert writer.error is not None
    assert "Traceback" not in str(writer.error)


async def test_peer_append_from_stdin_goes_through_a_running_daemon(daemons: Daemons) -> None:
    (a,) = daemons.homes("a")
    daemons.start(a)
    program = await daemons.api(a)
    subscriber = program.subscribe(tags=["lines"])
    lines = [f"line {n}" for n in range(5000)]
    out = json.loads(
        await aok(a.root, "append", "--tag", "lines", "--json", stdin="\n".join(lines))
    )
    assert (out["count"], out["ranges"], out["host"]) == (5000, [[0, 4999]], a.host)
    seen: list[str] = []
    async with asyncio.timeout(STEP_S):
        async for message in subscriber:
            seen.append(str(message.text))
            if len(seen) == 5000:
                break
    assert seen == lines

    too_long = "short\n" + "x" * (MAX_PLAINTEXT + 1) + "\nnever read\n"
    failed = await asyncio.to_thread(run_cli, a.root, "append", "--tag", "lines", stdin=too_long)
    assert failed.returncode != 0
    assert "stdin line 2 is longer than the record limit" in failed.stderr
    assert "the 1 line(s) before it were appended" in failed.stderr
    assert texts(a.root, "lines")[5000:] == ["short"]


async def test_an_append_up_to_the_message_limit_is_taken(small_queue: InProcess) -> None:
    """Six items of the largest size, ~6 MiB in one message: over grpc's default of
    4 MiB, within the 8 MiB the sync port and our client allow."""
    client = small_queue.client()
    items = [bytes([n]) * MAX_PLAINTEXT for n in range(6)]
    try:
        appended = await asyncio.wait_for(client.append("big", items), STEP_S)
    finally:
        await client.close()
    assert (appended.first_idx, appended.count) == (0, 6)
    assert [e.data for e in await small_queue.node.tail("big")] == items


async def test_a_message_waiting_for_room_when_the_stream_fails_is_not_written(
    small_queue: InProcess,
) -> None:
    """The 10-record queue: A (5 items), B (one item over the limit), then C (5 items),
    which waits for room or goes in one transaction with B. B fails, and C must not be
    written (alone, or after its group is retried request by request): what a stream
    gets written is a prefix of what it sent, and the acks say how long."""
    client = small_queue.client()
    try:
        stream = client.append_stream()
        await stream.write("log", [b"a%d" % n for n in range(5)])
        await stream.write("log", [b"x" * (MAX_PLAINTEXT + 1)])
        await stream.write("log", [b"c%d" % n for n in range(5)])
        await stream.done_writing()
        acks = []
        with pytest.raises(InvalidRecord):
            async with asyncio.timeout(STEP_S):
                while (more := await stream.read()) is not None:
                    acks += more
    finally:
        await client.close()
    assert [(a.seq, a.first_idx, a.count) for a in acks] == [(0, 0, 5)]
    assert [e.data for e in await small_queue.node.tail("log")] == [b"a%d" % n for n in range(5)]


async def test_the_feed_publishes_its_own_appends_in_arrival_order_among_others(
    tmp_path: Path,
) -> None:
    """The daemon hands the records it appends to its feed instead of reading them
    back; what other writers stored in between (another process's append, a received
    batch) still comes first, in arrival order, each record once."""
    node = await Node.init(Home(tmp_path / "home"))
    other = await Node.init(Home(tmp_path / "other"))
    beside = await Store.open(node.home.database)  # another process's connection
    feed = Feed(node.store)  # not started: it publishes when told to, below
    subscriber = feed.subscribe()
    try:
        await node.append("mine", [b"m0", b"m1"])
        await beside.append(node.author, "beside", [b"b0"])  # not seen by this store
        await node.append("mine", [b"m2"])  # handed over, but after b0 in arrival order
        received = await other.append("theirs", [b"t0", b"t1"])
        keys = {other.identity.host: other.identity.signing.public_key}
        await node.store.insert_batch(received, keys=keys)
        await node.append("mine", [f"m{n}".encode() for n in range(3, 2_500)])  # > a read
        await feed._publish_new()  # what its watch does after a commit, all at once here
        stored = [record for _, record in await node.store.scan(limit=10_000)]
        published: list[Record] = []
        while not subscriber.queue.empty():
            read = subscriber.queue.get_nowait()
            assert read is not None
            published.extend(Segments(read.parts))
        assert [(r.tag, r.idx) for r in published] == [(r.tag, r.idx) for r in stored]
        assert published == stored
        assert [r.tag for r in stored[:6]] == ["mine", "mine", "beside", "mine", "theirs", "theirs"]
    finally:
        await feed.close()
        await beside.close()
        await other.close()
        await node.close()
