"""Every message this node sends fits a stock gRPC client's 4 MiB receive limit (1.1).

gRPC's official libraries refuse a message over 4 MiB unless told otherwise, and a
client written from docs/protocol.md is told nothing. So the worst cases are built
here for real (64-character tags, payloads at the bound, runs of 2 MiB between
signatures, a host key per record, an index page of one host per log) and read through
a channel with gRPC's default limits, counting every encoded byte.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.client import PeerClient
from peer.codec import wire
from peer.crypto import (
    MAX_PLAINTEXT,
    RUN_PAYLOAD_BYTES,
    SIGN_BYTES,
    SyncKey,
    record_hash,
    verify_chain,
)
from peer.errors import InvalidRecord, ProtocolError
from peer.outbound import Outbound
from peer.records import (
    MAX_IDX,
    MAX_PAYLOAD,
    MAX_TIMESTAMP,
    MAX_WRAPPED_KEY,
    Head,
    LogKey,
    Range,
    Record,
    message_size,
)
from peer.service import start_server
from peer.service.memory import MemoryRemote
from peer.settings import STOCK_MESSAGE_BYTES
from peer.store import Store
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, open_store

LONG_TAG = "t" * 64
PULL = "/peer.v1.SyncService/PullRecords"
SUBSCRIBE = "/peer.v1.SyncService/Subscribe"
GET_INDEX = "/peer.v1.SyncService/GetIndex"


# -- the size of a record in a message -----------------------------------------------------


def _largest_record() -> Record:
    return Record(
        bytes(16),
        bytes(16),
        LONG_TAG,
        MAX_IDX,
        MAX_TIMESTAMP,
        "v" * 16,
        bytes(MAX_PAYLOAD),
        bytes(MAX_WRAPPED_KEY),
        bytes(32),
        bytes(64),
    )


def _encoded(records: Sequence[Record]) -> int:
    message = pb.PullRecordsResponse()
    wire._fill_records(message.records, records)
    return message.ByteSize()


def test_the_framing_bound_is_exact_for_the_largest_record() -> None:
    record = _largest_record()
    assert _encoded([record]) == message_size(record)


@settings(max_examples=200, deadline=None)
@given(
    idx=st.integers(0, MAX_IDX),
    timestamp=st.integers(0, MAX_TIMESTAMP),
    tag=st.text("ab", min_size=1, max_size=64),
    payload=st.integers(0, MAX_PAYLOAD),
    sig=st.sampled_from([b"", bytes(64)]),
)
def test_message_size_never_undercounts(
    idx: int, timestamp: int, tag: str, payload: int, sig: bytes
) -> None:
    record = dataclasses.replace(
        _largest_record(), idx=idx, timestamp=timestamp, tag=tag, payload=b"p" * payload, sig=sig
    )
    assert _encoded([record]) <= message_size(record)


# -- runs between signatures ---------------------------------------------------------------


def test_a_writer_keeps_every_run_within_the_bound() -> None:
    """Payloads just under a MiB: the writer signs every second record, so the longest
    run is 2 MiB less a little, and a receiver accepts it."""
    author = new_author()
    records = author.write(LONG_TAG, Head(0), range(6), [b"x" * (MAX_PLAINTEXT - 1024)] * 6)
    assert [bool(r.sig) for r in records] == [False, True] * 3
    assert SIGN_BYTES - 1 + MAX_PAYLOAD <= RUN_PAYLOAD_BYTES
    verify_chain(records, author.signing.public_key)


def test_a_run_over_the_bound_is_refused_as_invalid() -> None:
    """A conforming v1 writer could sign only every 256th record: a run that fits no
    message. The signatures here all verify; the run is what is refused."""
    author = new_author()
    records = author.write(LONG_TAG, Head(0), range(4), [b"x" * (MAX_PLAINTEXT - 1024)] * 4)
    unsigned_middle = [records[0], dataclasses.replace(records[1], sig=b""), *records[2:]]
    with pytest.raises(InvalidRecord, match="since the last signature"):
        verify_chain(unsigned_middle, author.signing.public_key)


async def test_a_store_refuses_a_log_with_an_overlong_run(tmp_path: Path) -> None:
    author = new_author()
    records = author.write(LONG_TAG, Head(0), range(4), [b"x" * (MAX_PLAINTEXT - 1024)] * 4)
    overlong = [records[0], dataclasses.replace(records[1], sig=b""), *records[2:]]
    store = await open_store(tmp_path / "b.db")
    try:
        with pytest.raises(InvalidRecord):
            await store.insert_batch(overlong, {author.host: author.signing.public_key})
        assert await store.index() == {}
    finally:
        await store.close()


# -- the worst case, through a stock channel ------------------------------------------------


async def _worst_store(path: Path, hosts: int) -> Store:
    """`hosts` hosts with one record each of ~1.5 KB under a 64-character tag (a host
    key per record: the most keys a message can need), and one log of records just
    under a MiB, signed every second one (runs of 2 MiB less a little)."""
    sync = SyncKey.generate()
    store = await open_store(path / "a.db")
    records: list[Record] = []
    keys: dict[bytes, bytes] = {}
    for n in range(hosts):
        author = new_author(sync)
        records += author.write(LONG_TAG, Head(0), [n], [os.urandom(1_400)])
        keys[author.host] = author.signing.public_key
    await store.insert_batch(records, keys)
    big = new_author(sync)
    head = Head(0)
    for _ in range(3):
        run = big.write(LONG_TAG, head, [1, 2], [os.urandom(MAX_PLAINTEXT - 1024)] * 2)
        await store.insert_batch(run, {big.host: big.signing.public_key})
        head = Head(run[-1].idx + 1, record_hash(run[-1]))
    return store


async def _everything(store: Store) -> list[Range]:
    return [
        Range(log.host, log.tag, 0, head.next_idx) for log, head in (await store.index()).items()
    ]


async def _stream(channel: grpc.aio.Channel, method: str, request: bytes) -> AsyncIterator[bytes]:
    call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    stream = call(request, timeout=60)
    try:
        async for raw in stream:
            yield raw
    finally:
        stream.cancel()


async def test_pull_and_subscribe_fit_a_stock_client_in_the_worst_case(tmp_path: Path) -> None:
    store = await _worst_store(tmp_path, hosts=2_100)
    total = 2_100 + 6
    server = await start_server(store, "a", "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as stock:
            pull = wire.encode_pull_request(await _everything(store), 2048)
            sizes = [len(raw) async for raw in _stream(stock, PULL, pull)]
            received = 0
            subscribe = wire.encode_subscribe_request({})
            async for raw in _stream(stock, SUBSCRIBE, subscribe):
                sizes.append(len(raw))
                received += len(pb.SubscribeResponse.FromString(raw).records)
                if received == total:
                    break
        print(f"largest message: {max(sizes):,} bytes of {STOCK_MESSAGE_BYTES:,}")
        assert received == total
        assert max(sizes) <= STOCK_MESSAGE_BYTES
        assert max(sizes) > STOCK_MESSAGE_BYTES // 2  # the case is a real one
    finally:
        await server.stop()
        await store.close()


async def test_push_and_live_batches_fit_in_the_worst_case(tmp_path: Path) -> None:
    """Push and live traffic leave through the same Outbound, by ranges or by the
    segments a live read holds."""
    store = await _worst_store(tmp_path, hosts=2_100)
    try:
        ranges = await _everything(store)
        sizes: list[int] = []
        async for records, keys in Outbound(store, 2048).ranges(ranges):
            sizes.append(len(wire.encode_batch(pb.PushRecordsRequest, records, keys)))
        every = [
            p for span in ranges for p in await store.read_segments(span.host, span.tag, 0, 10)
        ]
        async for records, keys in Outbound(store, 2048).segments(every):
            sizes.append(len(wire.encode_batch(pb.SubscribeResponse, records, keys)))
        assert STOCK_MESSAGE_BYTES // 2 < max(sizes) <= STOCK_MESSAGE_BYTES
    finally:
        await store.close()


# -- a paged index ---------------------------------------------------------------------


async def test_an_index_past_one_page_comes_in_pages_that_fit(tmp_path: Path) -> None:
    """One host per log, 64-character tags: the largest page there is."""
    logs = wire.INDEX_PAGE + 50
    store = await open_store(tmp_path / "a.db")
    sync = SyncKey.generate()
    records, keys = [], {}
    for n in range(logs):
        author = new_author(sync)
        records += author.write(f"{n:064d}", Head(0), [n], [b"x"])
        keys[author.host] = author.signing.public_key
    await store.insert_batch(records, keys)
    server = await start_server(store, "a", "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as stock:
            ask = stock.unary_unary(GET_INDEX, request_serializer=None, response_deserializer=None)
            raw = await ask(wire.encode_get_index_request(), timeout=30)
        first = wire.decode_index(raw)
        print(f"first page: {len(raw):,} bytes, {len(first.logs):,} logs")
        assert len(raw) <= STOCK_MESSAGE_BYTES
        assert len(first.logs) == len(first.keys) == wire.INDEX_PAGE
        assert first.next_page == max(first.logs) and first.protocol_minor == wire.PROTOCOL_MINOR
        expected = await store.index()
        async with PeerClient(f"127.0.0.1:{server.port}") as client:
            whole = await client.get_index()
        assert whole.logs == expected and len(whole.keys) == logs and whole.next_page is None
        assert (await MemoryRemote(server.servicer).get_index()).logs == expected
    finally:
        await server.stop()
        await store.close()


async def _pages(*pages: wire.RemoteIndex) -> wire.RemoteIndex:
    answers = iter(pages)

    async def ask(request: bytes) -> bytes:
        return wire.encode_index(next(answers))

    return await wire.read_whole_index(ask)


def _page(logs: list[LogKey], next_page: LogKey | None) -> wire.RemoteIndex:
    return wire.RemoteIndex(
        "x", 1, {log: Head(1, bytes(32)) for log in logs}, {}, frozenset(), next_page
    )


async def test_a_v1_peer_answers_one_page_and_that_is_the_index() -> None:
    log = LogKey(bytes(16), "a")
    assert (await _pages(_page([log], None))).logs.keys() == {log}


async def test_pages_that_do_not_move_forward_are_refused() -> None:
    a, b = LogKey(bytes(16), "a"), LogKey(bytes(16), "b")
    with pytest.raises(ProtocolError, match="do not move forward"):
        await _pages(_page([a, b], b), _page([a, b], b))
    with pytest.raises(ProtocolError, match="do not move forward"):
        await _pages(_page([a], a), _page([], a))


def test_a_page_token_this_node_did_not_give_is_refused() -> None:
    for token in (b"short", bytes(16) + b"Not A Tag", bytes(16) + b"\xff"):
        with pytest.raises(ProtocolError, match="page_token"):
            wire.decode_get_index_request(pb.GetIndexRequest(page_token=token).SerializeToString())
    size, after = wire.decode_get_index_request(
        pb.GetIndexRequest(page_size=10**6).SerializeToString()
    )
    assert (size, after) == (wire.INDEX_PAGE, None)
