"""Subscribe: catch up from `since`, then live records as they are appended or received
(SPEC §4), filtered by host and tag, in batches a receiver can authenticate, and a
stuck subscriber is cut off instead of growing the node's memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import pytest
from grpc import aio

from peer import codec
from peer.crypto import MAX_PLAINTEXT, SyncKey
from peer.errors import LimitExceeded, PeerError
from peer.records import LogKey, Record
from peer.remote import Batch
from peer.service import Limits
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, open_store, signed_chain
from tests.nodes import (
    Node,
    Nodes,
    assert_converged,
    batches_of,
    ends_signed,
    keys_of,
    sync,
)


class Collector:
    """Reads one subscription in the background and keeps every batch it delivers."""

    def __init__(self, stream: AsyncIterator[Batch]) -> None:
        self.stream = stream
        self.batches: list[list[Record]] = []
        self.keys: dict[bytes, bytes] = {}
        self.error: PeerError | None = None
        self.arrived = asyncio.Event()  # set whenever a batch (or the end) arrives
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for records, keys in self.stream:
                self.batches.append(records)
                self.keys.update(keys)
                self.arrived.set()
        except PeerError as exc:
            self.error = exc
        finally:
            self.arrived.set()

    @property
    def records(self) -> list[Record]:
        return [r for batch in self.batches for r in batch]

    def of(self, log: LogKey) -> list[Record]:
        return [r for r in self.records if r.log == log]

    async def until(self, counts: Mapping[LogKey, int], timeout: float = 10.0) -> None:
        """Wait until at least `counts[log]` records of each log arrived (bounded)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:  # each turn waits for a batch; the deadline bounds the turns
            if self.error is not None:
                raise AssertionError(f"the subscription failed: {self.error}")
            have = Counter(r.log for r in self.records)
            if all(have[log] >= n for log, n in counts.items()):
                return
            if self.task.done():
                raise AssertionError(f"the subscription ended with {dict(have)}")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {dict(counts)}, have {dict(have)}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.aclose()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def subscribed(node: Node, **request: object) -> AsyncIterator[Collector]:
    peer = node.client()
    collector = Collector(peer.subscribe(**request))  # type: ignore[arg-type]
    try:
        yield collector
    finally:
        await collector.close()


async def registered(node: Node, collector: Collector, probe: str = "probe") -> None:
    """Make sure the server has registered the subscriber: a record it must see arrives."""
    (record,) = await node.store.append(node.author, probe, [b"probe"])
    await collector.until({record.log: record.idx + 1})


def assert_in_order_from(records: list[Record], start: int, stored: list[Record]) -> None:
    """Exactly the stored records from idx `start` on, in idx order, each once."""
    assert [r.idx for r in records] == list(range(start, start + len(records)))
    assert records == stored[start : start + len(records)]


# -- catch-up, then live ----------------------------------------------------------------------


async def test_catch_up_from_since_then_live_appends_and_received_records(
    nodes: Nodes,
) -> None:
    key = SyncKey.generate()
    s = await nodes.node("s", sync=key)
    p = await nodes.node("p", sync=key, serve=False)
    await s.append_each("t", 5)
    await s.append_each("u", 2)
    t, u = s.log("t"), s.log("u")

    async with subscribed(s, since={t: 2}) as sub:
        await sub.until({t: 3, u: 2})  # catch-up: t from idx 2, u (not named) from 0
        await s.append_each("t", 3)  # live, appended here
        await sub.until({t: 6})
        await p.append_each("t", 4)
        await p.store.append(p.author, "bulk", [b"%d" % i for i in range(300)])
        summary = await sync(p, s)  # live, received from another peer
        assert summary.pushed == 304
        stranger = new_author()
        pushed = signed_chain(stranger, "x", 3)
        async with s.client() as peer:  # live, pushed by a third host
            await peer.push(batches_of((pushed, keys_of(stranger))))
        await sub.until({p.log("t"): 4, p.log("bulk"): 300, LogKey(stranger.host, "x"): 3})

        stored = {
            log: await s.store.read_range(log.host, log.tag, 0, 1000) for log in sub_logs(sub)
        }
        assert_in_order_from(sub.of(t), 2, stored[t])
        assert_in_order_from(sub.of(u), 0, stored[u])
        for log in (p.log("t"), p.log("bulk"), LogKey(stranger.host, "x")):
            assert_in_order_from(sub.of(log), 0, stored[log])
        assert len(sub.records) == 3 + 3 + 2 + 4 + 300 + 3
        assert {p.host, stranger.host, s.host} <= sub.keys.keys()


def sub_logs(sub: Collector) -> set[LogKey]:
    return {r.log for r in sub.records}


async def test_a_subscriber_already_up_to_date_gets_only_new_records(nodes: Nodes) -> None:
    s = await nodes.node("s")
    written = await s.append_each("t", 4)
    async with subscribed(s, since={s.log("t"): 4}) as sub:
        later = await s.append_each("t", 2)
        await sub.until({s.log("t"): 2})
        assert sub.of(s.log("t")) == later
    assert written[-1].idx == 3


# -- filters ------------------------------------------------------------------------------------


async def test_subscriptions_filter_by_host_and_tag_in_catch_up_and_live(nodes: Nodes) -> None:
    s = await nodes.node("s")
    b = new_author()
    chains = {tag: signed_chain(b, tag, 6) for tag in ("kv", "history")}

    async def push_b(tag: str, start: int, end: int) -> None:
        async with s.client() as peer:
            await peer.push(batches_of((chains[tag][start:end], keys_of(b))))

    await s.append_each("kv", 2)
    await s.append_each("history", 2)
    await push_b("kv", 0, 2)
    await push_b("history", 0, 2)
    a_kv, a_hist = s.log("kv"), s.log("history")
    b_kv, b_hist = LogKey(b.host, "kv"), LogKey(b.host, "history")

    async with (
        subscribed(s, hosts=[s.host]) as only_a,
        subscribed(s, tags=["kv"]) as only_kv,
        subscribed(s, hosts=[b.host], tags=["history"]) as only_b_hist,
    ):
        await only_a.until({a_kv: 2, a_hist: 2})
        await only_kv.until({a_kv: 2, b_kv: 2})
        await only_b_hist.until({b_hist: 2})
        # Live: every log gets more; then the sentinels each subscription must see.
        # Delivery follows arrival order, so anything unwanted would show up before them.
        await s.append_each("history", 2)
        await push_b("kv", 2, 4)
        await push_b("history", 2, 4)
        await s.append_each("kv", 2)  # the sentinel for only_a and only_kv
        await push_b("history", 4, 6)  # the sentinel for only_b_hist
        await only_a.until({a_kv: 4, a_hist: 4})
        await only_kv.until({a_kv: 4, b_kv: 4})
        await only_b_hist.until({b_hist: 6})

        assert sub_logs(only_a) == {a_kv, a_hist}
        assert sub_logs(only_kv) == {a_kv, b_kv}
        assert sub_logs(only_b_hist) == {b_hist}
        assert len(only_a.records) == 8
        assert len(only_kv.records) == 8
        assert only_b_hist.of(b_hist) == chains["history"]
        assert s.host not in only_b_hist.keys


# -- live batches are authenticatable -----------------------------------------------------------


async def test_every_batch_ends_signed_and_a_third_store_accepts_them_in_order(
    nodes: Nodes, tmp_path: Path
) -> None:
    """Bulk appends are signed only every 256 records and at their end; a 3000-record
    append is read by the live feed in two scans (2000 rows each), so the unsigned
    tail of the first must be held back until the record that signs it."""
    key = SyncKey.generate()
    s = await nodes.node("s", sync=key)
    p = await nodes.node("p", sync=key, serve=False)
    await s.store.append(s.author, "before", [b"%d" % i for i in range(600)])

    async with subscribed(s) as sub:
        await sub.until({s.log("before"): 600})
        await s.store.append(s.author, "live", [b"%d" % i for i in range(3000)])
        await s.store.append(s.author, "live", [b"tail"])
        await p.store.append(p.author, "bulk", [b"%d" % i for i in range(700)])
        await sync(p, s)  # received from a peer, in batches
        await sub.until({s.log("live"): 3001, p.log("bulk"): 700}, timeout=20)

        third = await open_store(tmp_path / "third.db")
        try:
            for batch in sub.batches:
                assert ends_signed(batch), [(r.tag, r.idx, bool(r.sig)) for r in batch[-3:]]
                await third.insert_batch(batch, sub.keys)
            await assert_converged(s.store, third)
        finally:
            await third.close()
    assert max(len(batch) for batch in sub.batches) <= codec.MAX_RECORDS_PER_MESSAGE


async def test_a_live_burst_of_large_records_arrives(nodes: Nodes) -> None:
    s = await nodes.node("s")
    async with subscribed(s) as sub:
        await registered(s, sub)
        await s.store.append(s.author, "files", [os.urandom(MAX_PLAINTEXT) for _ in range(12)])
        await sub.until({s.log("files"): 12}, timeout=15)


# -- a stuck subscriber -------------------------------------------------------------------------

LIVE_RECORDS = 200
LIVE_SIZE = 64_000  # 200 x 64 KB = 12.8 MB, more than a stream's transport buffers (~5 MB)


async def test_a_stuck_subscriber_is_cut_off_while_another_keeps_receiving(
    nodes: Nodes,
) -> None:
    s = await nodes.node("s", limits=Limits(subscriber_queue=2))
    (first,) = await s.append_each("t", 1)
    log = s.log("t")
    request = codec.encode_subscribe_request({})
    method = f"/{codec.SERVICE_NAME}/Subscribe"
    async with aio.insecure_channel(s.target) as channel, subscribed(s) as good:
        stuck = channel.unary_stream(method, request_serializer=None, response_deserializer=None)(
            request
        )
        # The stuck one reads its catch-up message (so it is surely registered), then
        # stops reading while the node keeps appending.
        caught_up = pb.SubscribeResponse.FromString(await asyncio.wait_for(stuck.read(), 5))
        assert [r.idx for r in caught_up.records] == [first.idx]
        await good.until({log: 1})
        for n in range(LIVE_RECORDS):
            await s.store.append(s.author, "t", [os.urandom(LIVE_SIZE)])
            # Paced so the reading subscriber keeps up with its queue of 2 (one the
            # node's own event loop might otherwise starve for a moment is cut off too).
            await good.until({log: 2 + n})
        assert good.error is None
        assert [r.idx for r in good.of(log)] == list(range(1 + LIVE_RECORDS))

        # Now it reads: what the transport buffered, then the cut-off.
        received = 1
        with pytest.raises(aio.AioRpcError) as cut:
            for _ in range(LIVE_RECORDS + 1):
                raw = await asyncio.wait_for(stuck.read(), 5)
                assert raw is not aio.EOF
                received += len(pb.SubscribeResponse.FromString(raw).records)
        assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fell too far behind" in (cut.value.details() or "")
        assert received < 1 + LIVE_RECORDS
        print(f"stuck subscriber got {received} of {1 + LIVE_RECORDS} before the cut-off")

    # It resubscribes from what it holds and catches up from the store.
    async with subscribed(s, since={log: received}) as again:
        await again.until({log: 1 + LIVE_RECORDS - received}, timeout=20)
        assert [r.idx for r in again.of(log)] == list(range(received, 1 + LIVE_RECORDS))


async def test_a_cut_off_subscriber_sees_limit_exceeded_through_the_client(nodes: Nodes) -> None:
    """The same cut-off as the client library reports it, to a reader that stalls."""
    s = await nodes.node("s", limits=Limits(subscriber_queue=1))
    peer = s.client()
    stream = peer.subscribe()
    try:
        await s.append_each("t", 1)
        await asyncio.wait_for(anext(stream), 5)  # registered; now stall
        for _ in range(LIVE_RECORDS):
            await s.store.append(s.author, "t", [os.urandom(LIVE_SIZE)])
        with pytest.raises(LimitExceeded, match="resubscribe"):
            for _ in range(LIVE_RECORDS + 1):
                await asyncio.wait_for(anext(stream), 5)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
