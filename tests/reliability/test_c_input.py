"""Group C, hostile input: idx bounds (C10), message size limits (C11), 10,000
malformed messages (C12), and a property fuzz of decode -> prepare (C13).

Real grpc.aio servers on 127.0.0.1:0 over real SQLite stores; bodies go in as raw bytes,
exactly as a hostile peer sends them. Random choices come from the printed `rng` seed
or Hypothesis (its seed is in the pytest header).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from grpc import aio
from hypothesis import given, settings
from hypothesis import strategies as st

from peer import codec
from peer.client import PeerClient
from peer.codec import wire
from peer.errors import LimitExceeded, PeerError
from peer.records import MAX_IDX, Head, LogKey, Range
from peer.service import Limits
from peer.settings import MAX_MESSAGE_BYTES
from peer.store import Store
from peer.sync import sync_with
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, open_store, signed_chain
from tests.nodes import Nodes
from tests.reliability.conftest import Report, Tier
from tests.reliability.rel_c import LEAK, FakePeer, answer, key, ld, rss_mb, varint

RPCS = ("GetIndex", "PullRecords", "PushRecords", "Subscribe")
CONCURRENCY = 48


# -- C12: the corpus ----------------------------------------------------------------------


def _valid(rpc: str) -> bytes:
    author = new_author()
    host = author.host
    if rpc == "GetIndex":
        return ld(15, b"unknown field")  # an unknown field: still a valid request
    if rpc == "PullRecords":
        return codec.encode_pull_request([Range(host, "t", 0, 5), Range(host, "u", 3, 9)], 10)
    if rpc == "Subscribe":
        return codec.encode_subscribe_request({LogKey(host, "t"): 3}, [host], ["t"])
    records = signed_chain(author, "t", 3)
    return codec.encode_batch(
        pb.PushRecordsRequest, records, {author.host: author.signing.public_key}
    )


def _bad_utf8(rpc: str, rng: random.Random) -> bytes:
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"t\x80", b"\xf8\x88\x80\x80\x80"])
    host = rng.randbytes(16)
    if rpc == "PullRecords":
        return ld(1, ld(1, host) + ld(2, bad) + key(4, 0) + varint(5))
    if rpc == "Subscribe":
        return rng.choice([ld(3, bad), ld(1, ld(1, host) + ld(2, bad))])
    if rpc == "PushRecords":
        return ld(1, ld(1, rng.randbytes(16)) + ld(2, host) + ld(3, bad))
    return ld(1, bad) + b"\x0a"  # GetIndex has no string field: a truncated one


def _deep(rng: random.Random) -> bytes:
    depth = rng.randint(100, 400)
    groups = key(15, 3) * depth  # start-group, never closed (or closed too often)
    return groups if rng.random() < 0.5 else groups + key(15, 4) * (depth + 1)


def _repeated(valid: bytes, rng: random.Random) -> bytes:
    """A scalar field 10^5 times (legal on its own), then a broken tail."""
    field = key(rng.choice((14, 15)), 0) + varint(rng.randint(0, 2**32))
    return valid + field * 100_000 + rng.choice([b"\x0a\x7f", b"\x10\xff", b"\x0b"])


def _mutant(rpc: str, valid: bytes, rng: random.Random) -> bytes:  # noqa: PLR0911, PLR0912
    kind = rng.randrange(10)
    if kind == 5 and rng.random() < 0.9:  # 600 KB each: about 1 % of the corpus
        kind = 0
    if kind == 0:  # arbitrary bytes (what st.binary() gives)
        return rng.randbytes(rng.randint(1, 256))
    if kind == 1:  # truncated anywhere
        return valid[: rng.randint(1, max(1, len(valid) - 1))]
    if kind == 2:  # bytes flipped
        body = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        return bytes(body)
    if kind == 3:  # a wrong wire type on a known field
        number = rng.randint(1, 6)
        return key(number, rng.choice((0, 1, 5))) + rng.randbytes(rng.randint(0, 9)) + valid
    if kind == 4:
        return _bad_utf8(rpc, rng)
    if kind == 5:
        return _repeated(valid, rng)
    if kind == 6:
        return _deep(rng) + valid
    if kind == 7:  # unknown fields, then a length past the end
        return valid + ld(rng.randint(16, 999), rng.randbytes(8)) + key(1, 2) + varint(1 << 20)
    if kind == 8:  # a truncated varint / an 11-byte varint
        return valid + key(rng.randint(1, 6), 0) + b"\xff" * rng.choice((3, 11))
    # out-of-range numbers in otherwise well-formed messages
    big = rng.choice([2**63, 2**64 - 1, MAX_IDX + 2])
    host = rng.randbytes(16)
    if rpc == "PullRecords":
        return ld(1, ld(1, host) + ld(2, b"t") + key(3, 0) + varint(0) + key(4, 0) + varint(big))
    if rpc == "Subscribe":
        return ld(1, ld(1, host) + ld(2, b"t") + key(3, 0) + varint(big))
    if rpc == "PushRecords":
        return ld(1, ld(1, rng.randbytes(16)) + ld(2, host) + ld(3, b"t") + key(4, 0) + varint(big))
    return key(rng.randint(1, 6), 2) + varint(big)


DECODE: dict[str, Callable[[bytes], object]] = {
    "GetIndex": codec.decode_get_index_request,
    "PullRecords": codec.decode_pull_request,
    "PushRecords": lambda raw: codec.decode_batch(pb.PushRecordsRequest, raw),
    "Subscribe": codec.decode_subscribe_request,
}


def _malformed(rpc: str, rng: random.Random) -> bytes | None:
    """A mutant the decoder refuses as malformed (None: it parsed, or hit a count cap)."""
    body = _mutant(rpc, _valid(rpc) if rng.random() < 0.2 else VALID[rpc], rng)
    try:
        DECODE[rpc](body)
    except LimitExceeded:
        return None
    except PeerError:
        return body
    return None


VALID = {rpc: _valid(rpc) for rpc in RPCS}


async def test_c12_malformed_messages(nodes: Nodes, rng: random.Random, report: Report) -> None:
    total = 10_000
    node = await nodes.node("n", limits=Limits(streams_per_caller=1024))
    await node.append_each("t", 3)
    before = await node.store.index()
    bodies: list[tuple[str, bytes]] = []
    discarded = 0
    for n in range(total * 5):  # bounded: most mutants are malformed
        rpc = RPCS[n % len(RPCS)]
        body = _malformed(rpc, rng)
        if body is None:
            discarded += 1
            continue
        bodies.append((rpc, body))
        if len(bodies) == total:
            break
    assert len(bodies) == total
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(rpc: str, body: bytes) -> tuple[str, str]:
        async with gate:
            return await answer(channel, rpc, body)

    started = time.monotonic()
    async with aio.insecure_channel(node.target) as channel:
        answers = await asyncio.wait_for(
            asyncio.gather(*(one(rpc, body) for rpc, body in bodies)), 200
        )
        # An accepted Subscribe is cut at a short deadline; under load a refusal can
        # come later than that: ask those again with time to answer.
        for n, ((rpc, body), (code, _)) in enumerate(zip(bodies, answers, strict=True)):
            if rpc == "Subscribe" and code == "OK":
                answers[n] = await answer(channel, rpc, body, live_s=5.0)
    took = time.monotonic() - started
    codes: Counter[str] = Counter(code for code, _ in answers)
    per_rpc: Counter[str] = Counter(rpc for (rpc, _), (c, _) in zip(bodies, answers, strict=True))
    leaks = [(rpc, d) for (rpc, _), (_, d) in zip(bodies, answers, strict=True) if LEAK.search(d)]
    details = Counter(d for _, d in answers)
    async with node.client() as peer:  # a valid request afterwards succeeds
        after = (await peer.get_index()).logs
    unchanged = await node.store.index() == before and after == before
    invalid = codes["INVALID_ARGUMENT"]
    print(f"codes {dict(codes)}; per rpc {dict(per_rpc)}; {discarded} mutants parsed or capped")
    print(f"details seen ({len(details)} distinct): {list(details)[:12]}")
    report(
        "10,000 malformed bodies over 4 RPCs (random bytes, truncations, flips, wrong wire "
        "types, bad UTF-8, a field 10^5 times, nesting >= 100, unknown fields, lengths past "
        "the end, out-of-range numbers): 0 crashes, all INVALID_ARGUMENT, no leaked text, "
        "a valid call afterwards works, store unchanged",
        f"{total:,} malformed messages in {took:.1f} s, 0 crashes, "
        f"{invalid:,}/{total:,} INVALID_ARGUMENT, {len(leaks)} leaked details, "
        f"store unchanged: {unchanged}",
        invalid == total and not leaks and unchanged,
        messages=total,
        invalid_argument=invalid,
        codes=dict(codes),
        leaks=len(leaks),
        seconds=round(took, 1),
    )
    assert not leaks, leaks[:5]
    assert codes == {"INVALID_ARGUMENT": total}, codes
    assert unchanged


# -- C10: idx bounds -------------------------------------------------------------------------

BOUNDARY = {"-1": 2**64 - 1, "0": 0, "2^53": 2**53, "2^63-1": 2**63 - 1, "2^63": 2**63}
BOUNDARY["2^64-1"] = 2**64 - 1
IN_RANGE = {"0", "2^53"}  # MAX_IDX = 2^63 - 2; -1 is 2^64-1 on the wire (uint64)


def _lying_index(log: LogKey, next_idx: int, keys: dict[bytes, bytes]) -> bytes:
    message = pb.GetIndexResponse(node_id="liar", protocol_version=codec.PROTOCOL_VERSION)
    message.logs.add(host=log.host, tag=log.tag, next_idx=next_idx, head_hash=bytes(32))
    for host, public in keys.items():
        message.hosts.add(host=host, public_key=public)
    return message.SerializeToString()


async def test_c10_idx_bounds(  # noqa: PLR0915
    nodes: Nodes, tmp_path: Path, report: Report
) -> None:
    node = await nodes.node("n")
    author = new_author()
    honest = signed_chain(author, "t", 100)
    keys = {author.host: author.signing.public_key}
    outcomes: dict[str, dict[str, str]] = {}
    async with aio.insecure_channel(node.target) as channel:
        for name, value in BOUNDARY.items():
            (record,) = author.write("b", Head(value if name in IN_RANGE else 0), [1], [b"x"])
            message = pb.PushRecordsRequest()
            wire._fill_records(message.records, [record])
            message.records[0].idx = value
            message.hosts.add(host=author.host, public_key=author.signing.public_key)
            start_body = ld(1, ld(1, author.host) + ld(2, b"t") + key(3, 0) + varint(value))
            end_body = ld(1, ld(1, author.host) + ld(2, b"t") + key(4, 0) + varint(value))
            since = ld(1, ld(1, author.host) + ld(2, b"t") + key(3, 0) + varint(value))
            outcomes[name] = {
                "push": (await answer(channel, "PushRecords", message.SerializeToString()))[0],
                "pull_start": (await answer(channel, "PullRecords", start_body))[0],
                "pull_end": (await answer(channel, "PullRecords", end_body))[0],
                "subscribe_since": (await answer(channel, "Subscribe", since, live_s=0.3))[0],
            }
    stored = {log.tag: head.next_idx for log, head in (await node.store.index()).items()}
    assert stored == {"b": 1}  # only the valid record at idx 0; nothing else reached SQLite

    # Status adverts: a lying peer advertises each value (and local max + 10^12).
    adverts: dict[str, str] = {}
    pulls_per_round: list[int] = []
    replica = await open_store(tmp_path / "replica.db")
    lie: dict[str, int] = {"next_idx": 0}

    async def get_index(request: bytes, context: Any) -> bytes:
        return _lying_index(LogKey(author.host, "t"), lie["next_idx"], keys)

    async def pull(request: bytes, context: Any) -> AsyncIterator[bytes]:
        ranges, _, _ = codec.decode_pull_request(request)
        for r in ranges:  # what the liar really holds
            held = honest[r.start : min(r.end, len(honest))]
            if held:
                yield codec.encode_batch(pb.PullRecordsResponse, held, keys)

    liar = FakePeer(get_index, pull)
    await liar.start()
    rss_before = rss_mb()
    try:
        for name, value in BOUNDARY.items():
            lie["next_idx"] = value
            adverts[name] = await _sync_outcome(replica, liar.target)
        for _ in range(3):  # three rounds against a jump of 10^12 past what we hold
            held = (await replica.index()).get(LogKey(author.host, "t"))
            lie["next_idx"] = (held.next_idx if held else 0) + 10**12
            before = liar.calls.get("PullRecords", 0)
            adverts["+10^12"] = await _sync_outcome(replica, liar.target)
            pulls_per_round.append(liar.calls.get("PullRecords", 0) - before)
        rss_growth = rss_mb() - rss_before
        final = (await replica.index()).get(LogKey(author.host, "t"))
    finally:
        await liar.stop()
        await replica.close()

    # The largest valid value per path: a record idx up to MAX_IDX; an end or next_idx
    # one past it.
    largest = {"push": MAX_IDX, "pull_start": MAX_IDX + 1, "pull_end": MAX_IDX + 1}
    largest["subscribe_since"] = MAX_IDX + 1
    bad = {
        f"{name}/{path}": code
        for name, paths in outcomes.items()
        for path, code in paths.items()
        if code in ("UNKNOWN", "INTERNAL", "UNAVAILABLE")
        or (BOUNDARY[name] > largest[path] and code not in ("INVALID_ARGUMENT", "OUT_OF_RANGE"))
    }
    advert_bad = {n: o for n, o in adverts.items() if o.startswith("crash")}
    print(f"request paths: {outcomes}")
    print(f"adverts: {adverts}; PullRecords calls per round at +10^12: {pulls_per_round}")
    passed = (
        not bad
        and not advert_bad
        and max(pulls_per_round) <= 1
        and rss_growth < 20
        and final is not None
        and final.next_idx == len(honest)
    )
    report(
        "idx in {-1, 0, 2^53, 2^63-1, 2^63, 2^64-1} in pushed records, pull ranges, "
        "subscribe heads and index adverts: out-of-range values refused with INVALID_ARGUMENT "
        "before SQLite, 0 UNKNOWN; an advert of local max + 10^12: at most one pull per "
        "round, no loop, RSS < +20 MB",
        f"6 boundary values x 5 paths, 0 UNKNOWN/INTERNAL; 10^12 jump: "
        f"{max(pulls_per_round)} pull per round over 3 rounds, RSS +{rss_growth:.1f} MB, "
        f"replica holds {final.next_idx if final else 0}/{len(honest)} real records",
        passed,
        boundary_values=len(BOUNDARY),
        paths=5,
        pulls_per_round=max(pulls_per_round),
        rss_mb=round(rss_growth, 1),
    )
    assert not bad, bad
    assert not advert_bad, adverts
    assert max(pulls_per_round) <= 1
    assert rss_growth < 20
    assert final is not None and final.next_idx == len(honest)


async def _sync_outcome(replica: Store, target: str) -> str:
    async with PeerClient(target, timeout=5) as peer:
        try:
            summary = await asyncio.wait_for(sync_with(replica, peer), 20)
        except PeerError as exc:
            return f"refused: {type(exc).__name__}"
        except Exception as exc:
            return f"crash: {type(exc).__name__}: {exc}"
    return f"ok, pulled {summary.pulled}"


# -- C11: message size limits ---------------------------------------------------------------


async def test_c11_message_size_limits(nodes: Nodes, report: Report) -> None:
    node = await nodes.node("n")
    limit = MAX_MESSAGE_BYTES
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

    def unknown_field_body(size: int) -> bytes:
        header = key(15, 2)
        payload = size - len(header) - len(varint(size))
        body = header + varint(payload) + bytes(payload)
        if len(body) != size:  # the length varint is one byte shorter than guessed
            payload += size - len(body)
            body = header + varint(payload) + bytes(payload)
        assert len(body) == size
        return body

    results: dict[str, tuple[str, str]] = {}
    async with aio.insecure_channel(node.target, options=options) as channel:
        results["exact limit"] = await answer(channel, "GetIndex", unknown_field_body(limit))
        results["limit + 1"] = await answer(channel, "GetIndex", unknown_field_body(limit + 1))
        results["64 MiB"] = await answer(channel, "GetIndex", unknown_field_body(64 << 20))
        rss_before = rss_mb()
        amplification = b"\x0a\x00" * (2 * 1024 * 1024)  # 4 MiB of 2M empty records [M3]
        results["2M empty records"] = await answer(channel, "PushRecords", amplification)
        padded = b"\x8a\x00\x00" * (1024 * 1024)  # the same with padded tags, 3 MiB
        results["1M padded empty records"] = await answer(channel, "PushRecords", padded)
        rss_growth = rss_mb() - rss_before
    async with node.client() as peer:
        await peer.get_index()  # still serving
    codes = {name: code for name, (code, _) in results.items()}
    leaks = [d for _, d in results.values() if LEAK.search(d)]
    print(f"{codes}; amplification RSS +{rss_growth:.1f} MB")
    expected = {
        "exact limit": "OK",
        "limit + 1": "RESOURCE_EXHAUSTED",
        "64 MiB": "RESOURCE_EXHAUSTED",
        "2M empty records": "RESOURCE_EXHAUSTED",  # the records-per-message cap
        "1M padded empty records": "RESOURCE_EXHAUSTED",
    }
    report(
        "exactly the 8 MiB limit accepted; limit + 1 byte and 64 MiB refused by the "
        "transport (RESOURCE_EXHAUSTED); the 2M-empty-records amplification refused by the "
        "records-per-message cap before parsing, RSS growth < 50 MB (240 MB uncapped, M3)",
        f"exact limit {codes['exact limit']}; +1 {codes['limit + 1']}; 64 MiB "
        f"{codes['64 MiB']}; amplification {codes['2M empty records']} with RSS "
        f"+{rss_growth:.1f} MB",
        codes == expected and rss_growth < 50 and not leaks,
        rss_mb=round(rss_growth, 1),
        codes=codes,
    )
    assert codes == expected
    assert rss_growth < 50
    assert not leaks


# -- C13: property fuzz of decode -> prepare -------------------------------------------------


async def test_c13_fuzz_decode_then_prepare(tmp_path: Path, tier: Tier, report: Report) -> None:
    """Hypothesis drives mutated batches through codec.decode_batch then Store.prepare
    (the pure checks of the receive path): only our own errors may come out."""
    examples = tier.pick(600, 20_000)
    author = new_author()
    store = await open_store(tmp_path / "fuzz.db", author)
    records = signed_chain(author, "t", 4)
    seed = codec.encode_batch(
        pb.PushRecordsRequest, records, {author.host: author.signing.public_key}
    )
    tally: Counter[str] = Counter()
    crashes: list[str] = []

    @settings(max_examples=examples, database=None)
    @given(
        st.one_of(
            st.binary(max_size=512),
            st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255), st.integers(0, 3)).map(
                lambda t: _edit(seed, *t)
            ),
        )
    )
    def target(raw: bytes) -> None:
        try:
            decoded, keys = codec.decode_batch(pb.PushRecordsRequest, raw)
            if decoded:
                store.prepare(decoded, keys)
            tally["accepted"] += 1
        except PeerError as exc:
            tally[type(exc).__name__] += 1
        except Exception as exc:  # the finding this test exists for
            crashes.append(f"{type(exc).__name__}: {exc} for {raw[:40]!r}")

    started = time.monotonic()
    try:
        target()
    finally:
        await store.close()
    took = time.monotonic() - started
    print(f"{sum(tally.values())} inputs in {took:.1f} s: {dict(tally)}")
    report(
        "hypothesis-driven fuzz of the receive path (codec.decode_batch -> Store.prepare) "
        "over raw bytes and edits of a valid signed batch: no exception but our own errors "
        "(atheris not used: a coverage-guided run is optional, M16)",
        f"{sum(tally.values()):,} inputs in {took:.1f} s, {len(crashes)} crashes "
        f"({tally['accepted']} accepted, {sum(tally.values()) - tally['accepted']} refused)",
        not crashes,
        inputs=sum(tally.values()),
        crashes=len(crashes),
    )
    assert not crashes, crashes[:5]


def _edit(seed: bytes, position: int, value: int, how: int) -> bytes:
    if how == 0:  # overwrite one byte
        return seed[:position] + bytes((value,)) + seed[position + 1 :]
    if how == 1:  # insert one byte
        return seed[:position] + bytes((value,)) + seed[position:]
    if how == 2:  # delete from here on
        return seed[:position]
    return seed[:position] + seed[position + 1 :]  # drop one byte
