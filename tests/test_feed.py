"""The live feed (`peer.feed`): what its subscribers are offered is whole, in order,
ends signed per log, and is the very bytes the store holds (nothing re-encoded on the
way to a follower, a relay's included)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from peer.batches import MAX_BATCH_BYTES, pack
from peer.codec import wire
from peer.codec.wire import FollowControl
from peer.crypto import SIGN_EVERY, record_hash
from peer.feed import SCAN_LIMIT, Feed, Read, Subscriber
from peer.records import Head, LogKey, Record, message_size
from peer.segment import Segment, Segments, decode
from peer.service.follow import FollowStream
from peer.store import Store
from peer.watch import StoreWatcher
from tests.conftest import new_author, open_store, signed_chain


async def _reads(subscriber: Subscriber, records: int) -> list[Read]:
    """The reads offered until they hold `records` records (bounded: 10 s)."""
    reads: list[Read] = []
    async with asyncio.timeout(10):
        while sum(part.count for read in reads for part in read.parts) < records:
            read = await subscriber.queue.get()
            assert read is not None, "the subscriber fell behind"
            reads.append(read)
    return reads


def _ends_signed(read: Read) -> bool:
    return all(decode(parts[-1].data)[-1].sig for parts in read.by_log.values())


async def _stored(store: Store, log: LogKey) -> list[Record]:
    return await store.read_range(log.host, log.tag, 0, 100_000)


async def test_a_transaction_a_scan_cuts_is_offered_once_it_ends_signed(tmp_path: Path) -> None:
    """Another process commits past the feed's scan limit inside a transaction: the
    first read offers the cut log only up to its last signature, the next read the rest
    (the held tail joined to it); every record once, in order, each read ending signed."""
    author = new_author()
    store = await open_store(tmp_path / "a.db", author)
    writer = await Store.open(tmp_path / "a.db")  # another connection: read back, not handed
    feed = Feed(store)
    await feed.start()
    subscriber = feed.subscribe()
    try:
        first, second = SCAN_LIMIT - 500, 1000  # the scan stops 500 records into `second`
        await writer.append(author, "x", [b"x%d" % n for n in range(first)])
        await writer.append(author, "y", [b"y%d" % n for n in range(second)])
        reads = await _reads(subscriber, first + second)
        assert len(reads) == 2 and all(_ends_signed(read) for read in reads)
        y = LogKey(author.host, "y")
        held_back = 500 - 500 // SIGN_EVERY * SIGN_EVERY
        assert reads[0].ends[y] == 500 - held_back  # up to its last signature
        assert reads[1].by_log[y][0].first_idx == 500 - held_back  # the tail, joined
        for log in (LogKey(author.host, "x"), y):
            offered = [part for read in reads for part in read.by_log.get(log, [])]
            assert Segments(offered) == await _stored(store, log)
    finally:
        await feed.close()
        await writer.close()
        await store.close()


async def test_own_appends_are_offered_as_the_segments_written(tmp_path: Path) -> None:
    """What this process appends is handed to the feed as the segments it stored
    (whole appends, nothing read back), and a follower of protocol 1.2 is sent those
    bytes as they are."""
    author = new_author()
    store = await open_store(tmp_path / "a.db", author)
    feed = Feed(store)
    await feed.start()
    subscriber = feed.subscribe()
    try:
        log = LogKey(author.host, "kv")
        stream = FollowStream(store, author.host, batch=300)
        caught_up = await _all(stream.control(FollowControl(segments=True, have={log: 0})))
        assert len(caught_up) == 1  # the hello: nothing is held yet
        await store.append(author, "kv", [b"a%d" % n for n in range(700)])
        await store.append(author, "kv", [b"b"])
        reads = await _reads(subscriber, 701)
        offered = [part for read in reads for part in read.by_log[log]]
        assert Segments(offered) == await _stored(store, log)
        sent: list[Segments] = []
        for read in reads:
            for message in await _all(stream.live(read)):
                batch = wire.decode_follow_response(message).records
                assert isinstance(batch, Segments) and len(batch) <= 300
                sent.append(batch)
        sent_bytes = b"".join(part.data for batch in sent for part in batch.parts)
        assert sent_bytes == b"".join(part.data for part in offered)
    finally:
        await feed.close()
        await store.close()


async def test_own_writes_are_published_without_reading_the_store_back(
    tmp_path: Path,
) -> None:
    """After its first read, a feed publishes what this process writes, appended or
    received, without a scan of the store; a commit it was not handed (another
    process's, once the watcher is woken) is still read and published, in arrival
    order."""
    author, other = new_author(), new_author()
    store = await open_store(tmp_path / "a.db", author, other)
    elsewhere = await Store.open(tmp_path / "a.db")  # another connection: not handed
    watcher = StoreWatcher(store, poll_s=3600)  # no poll: only wakes and this process
    feed = Feed(store, watcher)
    scans = 0
    scan = store.scan_segments

    async def counted(after: int, limit: int) -> list[tuple[int, Segment]]:
        nonlocal scans
        scans += 1
        return await scan(after=after, limit=limit)

    store.scan_segments = counted  # type: ignore[method-assign]
    await feed.start()
    subscriber = feed.subscribe()
    try:
        await _reads(subscriber, 0)
        async with asyncio.timeout(10):
            while scans == 0:  # the feed's first read, at start
                await asyncio.sleep(0.01)
        for n in range(20):
            await store.append(author, "kv", [b"own%d" % n])
            await _reads(subscriber, 1)
        assert scans == 1  # twenty appends, no read
        await store.insert_batch(signed_chain(other, "kv", 5))
        assert sum(p.count for r in await _reads(subscriber, 5) for p in r.parts) == 5
        assert scans == 1  # received here: handed over too
        await elsewhere.append(author, "x", [b"elsewhere"])
        watcher.wake()  # as the doorbell does
        (read,) = await _reads(subscriber, 1)
        assert read.ends == {LogKey(author.host, "x"): 1}
        assert scans == 2
    finally:
        await feed.close()
        await elsewhere.close()
        await store.close()


async def test_a_relay_sends_a_follower_the_bytes_it_received(tmp_path: Path) -> None:
    """A relay stores another host's segments as received; its live feed sends them to
    a follower that grafted the log as those very bytes (sliced, never re-encoded)."""
    other = new_author()
    source = await open_store(tmp_path / "source.db", other)
    relay = await open_store(tmp_path / "relay.db", other)
    feed = Feed(relay)
    await feed.start()
    subscriber = feed.subscribe()
    try:
        await source.append(other, "kv", [b"r%d" % n for n in range(300)])
        log = LogKey(other.host, "kv")
        received = await source.read_segments(other.host, "kv", 0, 300)
        stream = FollowStream(relay, None, batch=1000)
        grafted = FollowControl(segments=True, graft={log: 0})
        assert await _all(stream.control(grafted)) == []  # the relay holds none of it yet
        await relay.insert_batch(Segments(received))
        (read,) = await _reads(subscriber, 300)
        (message,) = await _all(stream.live(read))
        sent = wire.decode_follow_response(message).records
        assert isinstance(sent, Segments)
        assert b"".join(part.data for part in sent.parts) == b"".join(p.data for p in received)
    finally:
        await feed.close()
        await relay.close()
        await source.close()


def test_pack_cuts_segments_into_messages_that_end_signed_without_re_encoding() -> None:
    """`pack` cuts a live read's segments as a pull cuts stored ones: each message at
    most max_batch records (a signed cut within them exists) and MAX_BATCH_BYTES by
    `message_size`, every segment ending signed, and the bytes are the read's, in
    order. Large runs are cut, small appends go whole, large records fill by bytes."""
    parts: list[Segment] = []
    for count, payload in ((900, 200), (901, 200), (300, 60_000)):
        author = new_author()
        records = author.write(
            "t", Head(0), [1_000 + i for i in range(count)], [b"p" * payload] * count
        )
        parts += Segments.of(records).parts
    small = new_author()
    head = Head(0)
    for size in (1, 7, 40, 3, 200, 2):  # appends: each ends signed
        records = small.write("s", head, [1_000 + i for i in range(size)], [b"s"] * size)
        parts += Segments.of(records).parts
        head = Head(records[-1].idx + 1, record_hash(records[-1]))
    messages = pack(parts, max_batch=SIGN_EVERY * 2)
    assert sum(len(m) for m in messages) == sum(p.count for p in parts)
    for message in messages:
        assert len(message) <= SIGN_EVERY * 2
        assert sum(message_size(r) for r in message) <= MAX_BATCH_BYTES
        assert all(decode(part.data)[-1].sig for part in message.parts)
    assert max(sum(message_size(r) for r in m) for m in messages) > MAX_BATCH_BYTES // 2
    joined = b"".join(p.data for m in messages for p in m.parts)
    assert joined == b"".join(p.data for p in parts)


# -- helpers ------------------------------------------------------------------------------


async def _all(messages: AsyncIterator[bytes]) -> list[bytes]:
    return [message async for message in messages]
