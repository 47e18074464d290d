"""The SyncService facing hostile input (SPEC §4 "Hostile input", research M1-M4).

Raw bodies go through the real grpc.aio stack as bytes, exactly as a hostile peer
would send them; the answers must be INVALID_ARGUMENT (RESOURCE_EXHAUSTED past a
count cap), never UNKNOWN/INTERNAL or a Python message, and the node keeps serving.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from peer import codec, errors
from peer.client import channel_failure, channel_options
from peer.codec import ERROR_FOR_STATUS, STATUS_FOR_ERROR, error_for, status_for
from peer.errors import (
    GapError,
    IntegrityError,
    LimitExceeded,
    PeerError,
    PeerUnavailable,
    ProtocolError,
    WrongKey,
)
from peer.records import Record
from peer.service import Limits, server_options
from peer.settings import Schedule
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, signed_chain
from tests.nodes import Node, Nodes, batches_of, closing_gen, keys_of

BODIES_PER_RPC = 1000
CONCURRENCY = 48
SUBSCRIBE_WAIT_S = 0.5  # an accepted Subscribe stays open: it ends at this deadline
FORBIDDEN = re.compile(r"Traceback|<class|Exception|\b[A-Z]\w*Error\b|Error:")


# -- malformed bodies ---------------------------------------------------------------------

# Broken at the wire level for every request type (checked against the parser below).
WIRE_ERRORS = [
    b"\x0a",  # field 1, length-delimited, no length
    b"\x0a\x05ab",  # a length past the end
    b"\x0a\x80\x80\x80\x80\x08",  # a 2 GiB length
    b"\x10\xff\xff\xff",  # a truncated varint
    b"\x10" + b"\xff" * 10 + b"\x01",  # an 11-byte varint
    b"\x0f",  # wire type 7
    b"\x0e",  # wire type 6
    b"\x0b",  # a group that never ends
    b"\x0c",  # the end of a group never started
    b"\x00",  # field number 0
    b"\xff" * 10,  # a tag that is not a varint
    b"\x0d\x01\x02",  # a truncated fixed32
    b"\x09\x01",  # a truncated fixed64
    b"\x80" * 10 + b"\x01",  # a tag past 64 bits
]


def _record_pb(record: Record, **changes: object) -> pb.Record:
    fields = {
        "id": record.id,
        "host": record.host,
        "tag": record.tag,
        "idx": record.idx,
        "timestamp": record.timestamp,
        "version": record.version,
        "payload": record.payload,
        "wrapped_key": record.wrapped_key,
        "prev": record.prev,
        "sig": record.sig,
    }
    fields.update(changes)
    return pb.Record(**fields)  # type: ignore[arg-type]


def _push_cases() -> list[tuple[bytes, str]]:
    author = new_author()
    (record,) = signed_chain(author, "t", 1)
    key = pb.HostKey(host=author.host, public_key=author.signing.public_key)

    def push(**changes: object) -> bytes:
        return pb.PushRecordsRequest(
            records=[_record_pb(record, **changes)], hosts=[key]
        ).SerializeToString()

    wrong_key = pb.HostKey(host=author.host, public_key=new_author().signing.public_key)
    return [
        (push(idx=2**63), "INVALID_ARGUMENT"),
        (push(idx=2**64 - 1), "INVALID_ARGUMENT"),
        (push(idx=2**63 - 1), "INVALID_ARGUMENT"),  # MAX_IDX + 1: next_idx would overflow
        (push(timestamp=-1), "INVALID_ARGUMENT"),
        (push(host=record.host + b"\x00"), "INVALID_ARGUMENT"),  # 17-byte host id
        (push(id=record.id[:15]), "INVALID_ARGUMENT"),
        (push(tag="Notes"), "INVALID_ARGUMENT"),
        (push(tag="x" * 65), "INVALID_ARGUMENT"),
        (push(version="V1"), "INVALID_ARGUMENT"),
        (push(sig=record.sig[:63]), "INVALID_ARGUMENT"),
        (push(prev=b"\x01" * 32), "INVALID_ARGUMENT"),  # idx 0 with a prev
        (push(prev=bytes(31)), "INVALID_ARGUMENT"),
        (push(wrapped_key=bytes(129)), "INVALID_ARGUMENT"),
        (push(payload=bytes((1 << 20) + 1)), "INVALID_ARGUMENT"),
        (push(payload=b"tampered"), "INVALID_ARGUMENT"),  # authentic no more
        (
            pb.PushRecordsRequest(
                records=[_record_pb(record)], hosts=[wrong_key]
            ).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (b"\x0a\x00" * 10, "INVALID_ARGUMENT"),  # empty records
        (b"\x0a\x00" * codec.MAX_RECORDS_PER_MESSAGE, "INVALID_ARGUMENT"),  # at the cap
        (b"\x0a\x00" * (codec.MAX_RECORDS_PER_MESSAGE + 1), "RESOURCE_EXHAUSTED"),
        (b"\x0a\x00" * 100_000, "RESOURCE_EXHAUSTED"),
        (b"\x12\x00" * (codec.MAX_HOSTS_PER_MESSAGE + 1), "RESOURCE_EXHAUSTED"),
        (b"\x0a\x03\x1a\x01\xff", "INVALID_ARGUMENT"),  # a tag that is not UTF-8
    ]


def _pull_cases() -> list[tuple[bytes, str]]:
    host = new_author().host

    def pull(**changes: object) -> bytes:
        fields: dict[str, object] = {"host": host, "tag": "t", "start": 0, "end": 5}
        fields.update(changes)
        return pb.PullRecordsRequest(ranges=[pb.LogRange(**fields)]).SerializeToString()  # type: ignore[arg-type]

    return [
        (pull(host=host + b"\x00"), "INVALID_ARGUMENT"),
        (pull(host=b""), "INVALID_ARGUMENT"),
        (pull(tag="Notes"), "INVALID_ARGUMENT"),
        (pull(tag=""), "INVALID_ARGUMENT"),
        (pull(start=9, end=5), "INVALID_ARGUMENT"),
        (pull(end=2**63), "INVALID_ARGUMENT"),
        (pull(start=2**64 - 2, end=2**64 - 1), "INVALID_ARGUMENT"),
        (b"\x0a\x00" * 1000, "INVALID_ARGUMENT"),
        (b"\x0a\x00" * (codec.MAX_RANGES + 1), "RESOURCE_EXHAUSTED"),
        (b"\x0a\x03\x12\x01\xff", "INVALID_ARGUMENT"),  # a tag that is not UTF-8
    ]


def _subscribe_cases() -> list[tuple[bytes, str]]:
    host = new_author().host

    def since(**changes: object) -> bytes:
        fields: dict[str, object] = {"host": host, "tag": "t", "next_idx": 3}
        fields.update(changes)
        return pb.SubscribeRequest(since=[pb.LogHead(**fields)]).SerializeToString()  # type: ignore[arg-type]

    return [
        (since(host=host + b"\x00"), "INVALID_ARGUMENT"),
        (since(tag="Notes"), "INVALID_ARGUMENT"),
        (since(next_idx=2**63 + 5), "INVALID_ARGUMENT"),
        (pb.SubscribeRequest(hosts=[host + b"\x00"]).SerializeToString(), "INVALID_ARGUMENT"),
        (pb.SubscribeRequest(hosts=[b""]).SerializeToString(), "INVALID_ARGUMENT"),
        (pb.SubscribeRequest(tags=["Notes"]).SerializeToString(), "INVALID_ARGUMENT"),
        (pb.SubscribeRequest(tags=[""]).SerializeToString(), "INVALID_ARGUMENT"),
        (pb.SubscribeRequest(tags=["x" * 65]).SerializeToString(), "INVALID_ARGUMENT"),
        (b"\x1a\x01\xff", "INVALID_ARGUMENT"),  # a tag that is not UTF-8
        (b"\x0a\x00" * 1000, "INVALID_ARGUMENT"),
        (b"\x0a\x00" * (codec.MAX_RANGES + 1), "RESOURCE_EXHAUSTED"),
    ]


def _random_body(rng: random.Random) -> bytes:
    """Random bytes, or a random run of plausible fields with random contents."""
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, 64))
    out = bytearray()
    for _ in range(rng.randint(1, 6)):
        number, wire = rng.randint(1, 6), rng.choice((0, 0, 1, 2, 2, 2, 5))
        out.append(number << 3 | wire)
        if wire == 0:
            out += rng.randbytes(rng.randint(1, 3))
        elif wire == 2:
            body = rng.randbytes(rng.randint(0, 40))
            out.append(rng.choice((len(body), len(body), rng.randint(0, 127))))
            out += body
        else:
            out += rng.randbytes(rng.choice((4, 8)))
    return bytes(out)


HANDMADE: dict[str, Callable[[], list[tuple[bytes, str]]]] = {
    "GetIndex": lambda: [],
    "PullRecords": _pull_cases,
    "PushRecords": _push_cases,
    "Subscribe": _subscribe_cases,
}


def _bodies(rpc: str, rng: random.Random) -> list[tuple[bytes, str | None]]:
    """BODIES_PER_RPC bodies: hand-made (with the status each must get) then random
    (None: INVALID_ARGUMENT, or accepted if it happens to parse)."""
    made: list[tuple[bytes, str | None]] = [(w, "INVALID_ARGUMENT") for w in WIRE_ERRORS]
    made += HANDMADE[rpc]()
    while len(made) < BODIES_PER_RPC:
        made.append((_random_body(rng), None))
    return made


async def _answer(channel: aio.Channel, rpc: str, body: bytes) -> tuple[str, str]:
    """(status name, details) the server gave for `body`; an accepted Subscribe stays
    open, so it is cut at a short deadline and reported as OK."""
    method = f"/{codec.SERVICE_NAME}/{rpc}"
    try:
        if rpc == "GetIndex":
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            await call(body, timeout=10)
        elif rpc == "PushRecords":
            push = channel.stream_unary(method, request_serializer=None, response_deserializer=None)
            await push(iter([body]), timeout=10)
        else:
            stream = channel.unary_stream(
                method, request_serializer=None, response_deserializer=None
            )
            live = rpc == "Subscribe"
            async for _ in stream(body, timeout=SUBSCRIBE_WAIT_S if live else 10):
                pass
    except aio.AioRpcError as exc:
        if rpc == "Subscribe" and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "OK", ""
        return exc.code().name, exc.details() or ""
    return "OK", ""


def _decodes(rpc: str, body: bytes) -> bool:
    """Whether our own decoder accepts `body` (to cross-check "accepted" answers)."""
    decode: dict[str, Callable[[bytes], object]] = {
        "GetIndex": codec.decode_get_index_request,
        "PullRecords": codec.decode_pull_request,
        "PushRecords": lambda raw: codec.decode_batch(pb.PushRecordsRequest, raw),
        "Subscribe": codec.decode_subscribe_request,
    }
    try:
        decode[rpc](body)
    except PeerError:
        return False
    return True


@pytest.mark.parametrize("rpc", ["GetIndex", "PullRecords", "PushRecords", "Subscribe"])
async def test_a_thousand_malformed_bodies_get_invalid_argument(
    nodes: Nodes, rng: random.Random, rpc: str
) -> None:
    node = await nodes.node("n", limits=Limits(streams_per_caller=1024))
    bodies = _bodies(rpc, rng)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def answer(body: bytes) -> tuple[str, str]:
        async with gate:
            return await _answer(channel, rpc, body)

    async with aio.insecure_channel(node.target) as channel:
        answers = await asyncio.wait_for(asyncio.gather(*(answer(body) for body, _ in bodies)), 60)

    tally: Counter[str] = Counter()
    for (body, expected), (code, details) in zip(bodies, answers, strict=True):
        tally[code] += 1
        assert not FORBIDDEN.search(details), (body[:40], code, details)
        if expected is not None:
            assert code == expected, (body[:40], details)
        elif code == "OK":
            assert _decodes(rpc, body), body  # the server accepted what parses
        else:
            assert code == "INVALID_ARGUMENT", (body[:40], code, details)
    print(f"{rpc}: {dict(tally)} of {len(bodies)} ({len(bodies) - tally['OK']} refused)")
    assert set(tally) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OK"}
    assert tally["INVALID_ARGUMENT"] >= len(WIRE_ERRORS)

    async with node.client() as peer:  # still serving, and nothing was stored
        index = await peer.get_index()
    assert index.logs == {}
    assert await node.store.index() == {}


@pytest.mark.parametrize("rpc", ["GetIndex", "PullRecords", "PushRecords", "Subscribe"])
def test_the_wire_errors_are_errors_for_every_request_type(rpc: str) -> None:
    """The table above is only meaningful if the parser itself refuses every entry."""
    for body in WIRE_ERRORS:
        assert not _decodes(rpc, body), body


async def test_a_padded_tag_does_not_slip_past_the_record_cap(nodes: Nodes) -> None:
    node = await nodes.node("n")
    body = b"\x8a\x00\x00" * (codec.MAX_RECORDS_PER_MESSAGE + 1)
    assert len(pb.PushRecordsRequest.FromString(body).records) > codec.MAX_RECORDS_PER_MESSAGE
    async with aio.insecure_channel(node.target) as channel:
        code, _ = await _answer(channel, "PushRecords", body)
    assert code == "RESOURCE_EXHAUSTED"


async def test_an_oversized_message_is_refused_by_the_transport(nodes: Nodes) -> None:
    node = await nodes.node("n", limits=Limits(max_message_bytes=1 << 20))
    async with aio.insecure_channel(node.target) as channel:
        code, details = await _answer(channel, "GetIndex", b"\x0a\x00" * (1 << 20))
        assert code == "RESOURCE_EXHAUSTED"
        assert not FORBIDDEN.search(details)
    async with node.client() as peer:
        await peer.get_index()


# -- errors <-> status codes -----------------------------------------------------------------


def _all_subclasses(kind: type[PeerError]) -> Iterator[type[PeerError]]:
    yield kind
    for sub in kind.__subclasses__():
        yield from _all_subclasses(sub)


ALL_ERRORS = sorted(set(_all_subclasses(PeerError)), key=lambda k: k.__name__)


def test_every_error_class_is_declared_in_peer_errors() -> None:
    names = {k.__name__ for k in ALL_ERRORS}
    declared = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, PeerError)
    }
    assert declared <= names
    assert len(ALL_ERRORS) >= 20


def _instance(kind: type[PeerError]) -> PeerError:
    if kind is GapError:
        return GapError("gap", 7)
    if kind is WrongKey:
        return WrongKey("k1", "k2")
    return kind("message")


@pytest.mark.parametrize("kind", ALL_ERRORS, ids=lambda k: k.__name__)
def test_every_peer_error_maps_to_a_status_and_back(kind: type[PeerError]) -> None:
    code, metadata = status_for(_instance(kind))
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK)
    back = error_for(code, "details", dict(metadata), "peer-x")
    assert isinstance(back, PeerError)
    assert str(back) == "peer-x: details"
    assert issubclass(ERROR_FOR_STATUS[code], PeerError)


def test_the_tables_are_consistent() -> None:
    codes = {code for _, code in STATUS_FOR_ERROR}
    assert codes <= ERROR_FOR_STATUS.keys()
    assert grpc.StatusCode.UNKNOWN not in codes | ERROR_FOR_STATUS.keys()
    assert grpc.StatusCode.INTERNAL not in codes | ERROR_FOR_STATUS.keys()
    # Subclasses come before their bases, or the base would shadow them.
    kinds = [kind for kind, _ in STATUS_FOR_ERROR]
    for n, kind in enumerate(kinds):
        for later in kinds[n + 1 :]:
            assert not issubclass(later, kind) or later is kind, (kind, later)
    # Statuses a peer or the channel may give without any PeerError behind them.
    for code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.CANCELLED):
        assert issubclass(ERROR_FOR_STATUS[code], PeerError)
    assert isinstance(error_for(grpc.StatusCode.UNKNOWN, "?", {}), PeerUnavailable)


def test_a_gap_keeps_its_expected_idx_through_trailing_metadata() -> None:
    code, metadata = status_for(GapError("log x: batch starts at idx 9", 4))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    back = error_for(code, "log x: batch starts at idx 9", dict(metadata))
    assert isinstance(back, GapError)
    assert back.expected_idx == 4
    # A garbled expected idx from a peer is still an integrity error, not a crash.
    garbled = error_for(code, "x", {codec.EXPECTED_IDX_KEY: "four"})
    assert isinstance(garbled, IntegrityError)
    assert not isinstance(garbled, GapError)


def test_a_handshake_failing_on_certificate_dates_names_the_clock() -> None:
    """What grpc says when the peer's certificate has expired (our clock, or theirs)."""
    details = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls "
        "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
        "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate has expired: OK"
    )
    error = channel_failure(
        grpc.StatusCode.UNAVAILABLE, details, "127.0.0.1:1", tls=True, answered=False
    )
    assert "certificate has expired" in str(error)
    assert "clock" in str(error)
    assert "does not trust" not in str(error)


async def test_a_gap_over_the_wire_carries_the_expected_idx(nodes: Nodes) -> None:
    node = await nodes.node("n")
    author = new_author()
    records = signed_chain(author, "t", 8)
    async with node.client() as peer:
        await peer.push(batches_of((records[:2], keys_of(author))))
        with pytest.raises(GapError) as caught:
            await peer.push(batches_of((records[5:], keys_of(author))))
    assert caught.value.expected_idx == 2
    assert "expects idx 2" in str(caught.value)


# -- per-caller stream cap ---------------------------------------------------------------


async def test_streams_per_caller_are_capped(nodes: Nodes) -> None:
    node = await nodes.node("n", limits=Limits(streams_per_caller=2))
    await node.append_each("t", 1)  # so each stream gets a catch-up message at once
    peer = node.client()
    first, second, third = peer.subscribe(), peer.subscribe(), peer.subscribe()
    async with closing_gen(first), closing_gen(second), closing_gen(third):
        for stream in (first, second):  # both hold a slot once their first batch arrived
            records, _ = await asyncio.wait_for(anext(stream), 5)
            assert [r.idx for r in records] == [0]
        with pytest.raises(LimitExceeded, match="too many concurrent streams"):
            await asyncio.wait_for(anext(third), 5)
        with pytest.raises(LimitExceeded):  # a pull takes a slot too
            await asyncio.wait_for(anext(peer.pull([])), 5)
        assert (await peer.get_index()).logs  # unary calls are not streams

        await first.aclose()  # the server frees the slot once it sees the cancel
        for _ in range(200):
            fourth = peer.subscribe()
            async with closing_gen(fourth):
                try:
                    records, _ = await asyncio.wait_for(anext(fourth), 5)
                except LimitExceeded:
                    await asyncio.sleep(0.01)
                    continue
            assert [r.idx for r in records] == [0]
            break
        else:
            pytest.fail("the closed stream's slot was never freed")


# -- health and reflection -----------------------------------------------------------------


async def test_health_answers_serving_and_reflection_lists_the_service(nodes: Nodes) -> None:
    node = await nodes.node("n")
    async with aio.insecure_channel(node.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (codec.SERVICE_NAME, ""):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=codec.SERVICE_NAME),
        ]
        answers = [a async for a in reflection.ServerReflectionInfo(iter(requests), timeout=5)]
    listed = {s.name for s in answers[0].list_services_response.service}
    assert {codec.SERVICE_NAME, "grpc.health.v1.Health"} <= listed
    assert answers[1].file_descriptor_response.file_descriptor_proto  # the schema is served


# -- only committed state is advertised ------------------------------------------------------


async def test_get_index_never_shows_a_batch_that_is_rolled_back(nodes: Nodes) -> None:
    """Each push holds a good log "one" and a log "two" that starts with a gap, so the
    whole batch is refused and rolled back; meanwhile another peer polls GetIndex."""
    node: Node = await nodes.node("n")
    author = new_author()
    batch = signed_chain(author, "one", 3) + signed_chain(author, "two", 5)[3:]
    done = asyncio.Event()
    seen: list[int] = []

    async def watch() -> None:
        async with node.client() as peer:
            for _ in range(10_000):
                if done.is_set():
                    return
                logs = (await peer.get_index()).logs
                seen.append(sum(1 for log in logs if log.tag == "one"))

    watcher = asyncio.create_task(watch())
    async with node.client() as pusher:
        for _ in range(30):
            with pytest.raises(GapError):
                await pusher.push(batches_of((batch, keys_of(author))))
    done.set()
    await asyncio.wait_for(watcher, 10)
    assert await node.store.index() == {}
    assert len(seen) > 0
    assert sum(seen) == 0, f"{sum(seen)} of {len(seen)} answers showed uncommitted records"


async def test_a_protocol_error_reaches_the_client_as_its_class(nodes: Nodes) -> None:
    node = await nodes.node("n")
    author = new_author()
    (record,) = signed_chain(author, "t", 1)
    async with node.client() as peer:
        with pytest.raises(ProtocolError, match="invalid record"):
            await peer.push(batches_of(([replace(record, idx=2**63)], keys_of(author))))


KEEPALIVE_OPTIONS = (
    "grpc.keepalive_time_ms",
    "grpc.keepalive_timeout_ms",
    "grpc.http2.ping_timeout_ms",
)


def test_client_server_and_config_agree_on_the_keepalive() -> None:
    server, client = dict(server_options(Limits())), dict(channel_options())
    assert [server[o] for o in KEEPALIVE_OPTIONS] == [client[o] for o in KEEPALIVE_OPTIONS]
    schedule = Schedule()
    assert server["grpc.keepalive_time_ms"] == schedule.keepalive * 1000
    assert server["grpc.keepalive_timeout_ms"] == schedule.keepalive_timeout * 1000
    # a client pinging at the default keepalive is never a strike
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= client[KEEPALIVE_OPTIONS[0]]
