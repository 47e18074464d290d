"""Protocol 1.2: records travel as segments (docs/protocol.md §7.6), and older peers
still get and give records. Real servers on 127.0.0.1:0 and real stores."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peer import codec
from peer.client import PeerClient
from peer.codec import wire
from peer.crypto import Author, verify_segment
from peer.errors import ForgeryError, InvalidRecord, ProtocolError
from peer.records import Head, LogKey, Range, Record
from peer.segment import Segment, Segments, check, encode
from peer.service import start_server
from peer.sync import sync_with
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, open_store, signed_chain
from tests.nodes import assert_converged

Seen = list[tuple[str, bool]]  # (message kind, carried segments?)


def watch_batches(monkeypatch: pytest.MonkeyPatch) -> Seen:
    """Record, for every batch message decoded in this process, whether it carried
    segments or records."""
    seen: Seen = []
    decode: Callable[..., Any] = wire.decode_batch

    def spy(kind: Any, raw: bytes) -> Any:
        message = kind.FromString(raw)
        if message.records or getattr(message, "segments", None):
            seen.append((kind.__name__, bool(getattr(message, "segments", None))))
        return decode(kind, raw)

    monkeypatch.setattr(wire, "decode_batch", spy)  # the servicer's
    monkeypatch.setattr(codec, "decode_batch", spy)  # the client's
    return seen


async def test_a_pull_and_a_push_carry_segments_between_1_2_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = watch_batches(monkeypatch)
    a, b = new_author(), new_author()
    there = await open_store(tmp_path / "there.db", a)
    here = await open_store(tmp_path / "here.db", b)
    await there.append(a, "t", [b"a%d" % n for n in range(700)])
    await here.append(b, "t", [b"b%d" % n for n in range(300)])
    running = await start_server(there, "there", "127.0.0.1:0")
    try:
        async with PeerClient(f"127.0.0.1:{running.port}") as peer:
            summary = await sync_with(here, peer, batch=256)
            assert peer.protocol_minor == wire.PROTOCOL_MINOR == 2
        assert (summary.pulled, summary.pushed) == (700, 300)
        await assert_converged(here, there)
        print(f"messages decoded: {seen}")
        assert {kind for kind, _ in seen} == {"PullRecordsResponse", "PushRecordsRequest"}
        assert all(segments for _, segments in seen)
    finally:
        await running.stop(grace=0.2)
        await here.close()
        await there.close()


async def test_a_1_1_server_gets_records_pushed_and_sends_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that says minor 1 and ignores `segments` in a pull (as a 1.1 node does)
    gets records pushed, and its records are taken."""
    seen = watch_batches(monkeypatch)
    monkeypatch.setattr(wire, "PROTOCOL_MINOR", 1)
    decode_pull = wire.decode_pull_request
    monkeypatch.setattr(wire, "decode_pull_request", lambda raw: (*decode_pull(raw)[:2], False))
    a, b = new_author(), new_author()
    there = await open_store(tmp_path / "there.db", a)
    here = await open_store(tmp_path / "here.db", b)
    await there.append(a, "t", [b"a%d" % n for n in range(40)])
    await here.append(b, "t", [b"b%d" % n for n in range(30)])
    running = await start_server(there, "there", "127.0.0.1:0")
    try:
        async with PeerClient(f"127.0.0.1:{running.port}") as peer:
            summary = await sync_with(here, peer)
            assert peer.protocol_minor == 1
        assert (summary.pulled, summary.pushed) == (40, 30)
        await assert_converged(here, there)
        assert seen and not any(segments for _, segments in seen), seen
    finally:
        await running.stop(grace=0.2)
        await here.close()
        await there.close()


async def test_a_pull_of_a_range_inside_stored_segments_sends_their_slices(
    tmp_path: Path,
) -> None:
    """The server slices stored segments: a range that starts and ends inside one is
    sent as the same bytes, cut at entry boundaries."""
    a = new_author()
    there = await open_store(tmp_path / "there.db", a)
    records = signed_chain(a, "t", 600)
    await there.insert_batch(records)
    running = await start_server(there, "there", "127.0.0.1:0")
    try:
        async with PeerClient(f"127.0.0.1:{running.port}") as peer:
            batches = [batch async for batch, _ in peer.pull([Range(a.host, "t", 10, 300)])]
        (batch,) = batches
        assert isinstance(batch, Segments)
        assert [(p.first_idx, p.count) for p in batch.parts] == [(10, 290)]
        assert batch.parts[0].data == encode(records[10:300])
        assert list(batch) == records[10:300]
    finally:
        await running.stop(grace=0.2)
        await there.close()


async def test_interleaved_records_of_a_v1_message_are_taken(tmp_path: Path) -> None:
    """A v1 message may interleave logs; each log's records form its own segments."""
    a, b = new_author(), new_author()
    ra = signed_chain(a, "t", 3)
    rb = signed_chain(b, "t", 2)
    interleaved = [ra[0], rb[0], ra[1], rb[1], ra[2]]
    store = await open_store(tmp_path / "s.db", a, b)
    try:
        result = await store.insert_batch(interleaved)
        assert result.added == 5
        assert await store.read_range(a.host, "t", 0, 9) == ra
    finally:
        await store.close()


# -- what a receiver refuses ------------------------------------------------------------


def segment_of(author: Author, count: int = 3) -> tuple[Segment, list[Record]]:
    records = author.write("t", Head(0), [1000 + n for n in range(count)], [b"x"] * count)
    return Segment.of(records), records


def test_a_segment_header_must_match_its_bytes(author: Author) -> None:
    segment, _ = segment_of(author)
    check(segment)  # sound
    wrong = [
        dataclasses.replace(segment, count=2),
        dataclasses.replace(segment, count=4),
        dataclasses.replace(segment, first_idx=1),
        dataclasses.replace(segment, tag="u"),
        dataclasses.replace(segment, host=bytes(16)),
        dataclasses.replace(segment, data=segment.data[:-1]),
        dataclasses.replace(segment, data=segment.data + b"\0"),
    ]
    for bad in wrong:
        with pytest.raises(InvalidRecord, match="segment") as caught:
            check(bad)
        print(f"{bad.first_idx}+{bad.count} {bad.tag}: {caught.value}")


def test_every_changed_byte_of_a_segment_is_refused_or_unsigned(author: Author) -> None:
    """Flip each byte of a segment's hash inputs and lengths: `check` or the signature
    refuses every one, with a PeerError saying where."""
    segment, _ = segment_of(author, 2)
    refused = 0
    for at in range(len(segment.data)):
        data = bytearray(segment.data)
        data[at] ^= 0x01
        damaged = dataclasses.replace(segment, data=bytes(data))
        with pytest.raises((InvalidRecord, ForgeryError)):
            verify_segment(damaged, author.signing.public_key)
        refused += 1
    assert refused == len(segment.data)


def test_a_broken_link_inside_a_segment_is_a_forgery(author: Author) -> None:
    records = signed_chain(author, "t", 4)
    relinked = [*records[:2], dataclasses.replace(records[2], prev=bytes(32)), records[3]]
    with pytest.raises(ForgeryError, match="prev is not the hash of record #1"):
        check(Segment.of(relinked))


def test_a_segment_must_end_signed(author: Author) -> None:
    records = signed_chain(author, "t", 4)
    unsigned = Segment.of([*records[:3], dataclasses.replace(records[3], sig=b"")])
    with pytest.raises(ForgeryError, match="must end on a signed record"):
        verify_segment(unsigned, author.signing.public_key)


def _message(**fields: Any) -> bytes:
    return pb.PullRecordsResponse(**fields).SerializeToString()


def test_the_codec_bounds_segment_headers(author: Author) -> None:
    segment, records = segment_of(author)
    good = pb.Segment(host=segment.host, tag="t", first_idx=0, count=3, data=segment.data)
    batch, _ = wire.decode_batch(pb.PullRecordsResponse, _message(segments=[good]))
    assert isinstance(batch, Segments) and list(batch) == records
    record = pb.Record(id=records[0].id, host=records[0].host, tag="t", prev=bytes(32))
    cases = {
        "records and segments": _message(segments=[good], records=[record]),
        "no records": _message(segments=[pb.Segment(host=segment.host, tag="t", count=0)]),
        "too many records": _message(
            segments=[pb.Segment(host=segment.host, tag="t", count=wire.MAX_RECORDS_PER_MESSAGE)]
            * 2
        ),
        "a short host": _message(segments=[pb.Segment(host=b"x", tag="t", count=1)]),
        "a bad tag": _message(segments=[pb.Segment(host=segment.host, tag="T!", count=1)]),
        "past the last idx": _message(
            segments=[pb.Segment(host=segment.host, tag="t", first_idx=2**63 - 2, count=2)]
        ),
    }
    for name, raw in cases.items():
        with pytest.raises(ProtocolError) as caught:
            wire.decode_batch(pb.PullRecordsResponse, raw)
        print(f"{name}: {caught.value}")


async def test_a_damaged_segment_pushed_stores_nothing(tmp_path: Path, author: Author) -> None:
    store = await open_store(tmp_path / "s.db", author)
    try:
        records = signed_chain(author, "t", 5)
        segment = Segment.of(records)
        (length,) = struct.unpack_from(">I", segment.data, 0)
        data = bytearray(segment.data)
        data[4 + length - 40] ^= 0xFF  # inside the first record's wrapped key
        with pytest.raises((InvalidRecord, ForgeryError)):
            await store.insert_batch(Segments([dataclasses.replace(segment, data=bytes(data))]))
        assert await store.index() == {}
        await store.insert_batch(Segments([segment]))
        assert (await store.index())[LogKey(author.host, "t")].next_idx == 5
    finally:
        await store.close()
