"""Group C, hostile relays and keyed peers: tampering (C6), forgery of another host
(C8) and fork injection (C9).

Real stores on SQLite files under tmp_path, real grpc.aio servers on 127.0.0.1:0
(plaintext loopback for the counts, mutual TLS with pinned ids where the per-peer strike
policy is under test). Every random choice comes from the printed `rng` seed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from peer import codec
from peer.client import PeerClient
from peer.crypto import Author, SyncKey, record_hash
from peer.errors import LimitExceeded, PeerError
from peer.records import Head, Record
from peer.remote import Batch
from peer.service import Limits
from peer.sync import sync_with
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, signed_chain
from tests.nodes import Node, Nodes, everything
from tests.reliability.conftest import Report, Tier
from tests.reliability.rel_c import LEAK, FakePeer, answer
from tests.test_security import TlsNodes

CONCURRENCY = 32
HELD = 10  # records of A's log the victim holds before the relay speaks


@pytest.fixture
async def tls_nodes(tmp_path: Path) -> AsyncIterator[TlsNodes]:
    made = TlsNodes(tmp_path / "tls")
    made.root.mkdir()
    try:
        yield made
    finally:
        await made.close()


def _push_body(records: list[Record], keys: dict[bytes, bytes]) -> bytes:
    return codec.encode_batch(pb.PushRecordsRequest, records, keys)


async def _one(batch: Batch) -> AsyncIterator[Batch]:
    yield batch


# -- C6: tampering by a relay ------------------------------------------------------------------


def _flip(data: bytes, rng: random.Random, start: int = 0, end: int | None = None) -> bytes:
    end = len(data) if end is None else end
    at = rng.randrange(start, end)
    return data[:at] + bytes((data[at] ^ (1 << rng.randrange(8)),)) + data[at + 1 :]


def _tamper(  # noqa: PLR0911
    kind: str, chain: list[Record], other: Author, rng: random.Random
) -> list[Record]:
    """A batch a blind relay made from A's genuine records (the next slot is HELD)."""
    k = chain[HELD]
    replace = dataclasses.replace
    if kind == "ciphertext bit flip":
        return [replace(k, payload=_flip(k.payload, rng))]
    if kind == "nonce change":  # wrapped_key = 0x01 | key id[8] | nonce[12] | ciphertext
        return [replace(k, wrapped_key=_flip(k.wrapped_key, rng, 9, 21))]
    if kind == "swap two records' idx":
        first, second = chain[HELD], chain[HELD + 1 + rng.randrange(len(chain) - HELD - 1)]
        return [replace(second, idx=first.idx), replace(first, idx=second.idx)]
    if kind == "change host":
        return [replace(k, host=rng.choice([other.host, rng.randbytes(16)]))]
    if kind == "change tag":
        return [replace(k, tag=rng.choice(["u", "t2", "notes", f"x{rng.randrange(99)}"]))]
    if kind == "change id or version":
        if rng.random() < 0.5:
            return [replace(k, id=_flip(k.id, rng))]
        return [replace(k, version=rng.choice(["v2", "v0", "v1.1"]))]
    if kind == "replay idx k as k+n":
        source = chain[rng.randrange(HELD)]
        return [replace(source, idx=HELD, prev=k.prev)]
    assert kind == "truncated ciphertext"
    return [replace(k, payload=k.payload[: rng.randrange(len(k.payload))])]


KINDS = (
    "ciphertext bit flip",
    "nonce change",
    "swap two records' idx",
    "change host",
    "change tag",
    "change id or version",
    "replay idx k as k+n",
    "truncated ciphertext",
)


def _reason(details: str) -> str:
    """A short reason from the status details (the text a peer sees)."""
    for word in ("signature", "does not link", "public key", "no public key", "expects idx"):
        if word in details:
            return word
    return details.rsplit(":", maxsplit=1)[-1].strip()[:40]


async def test_c6_relay_tampering_rejected(  # noqa: PLR0915
    nodes: Nodes, tls_nodes: TlsNodes, rng: random.Random, tier: Tier, report: Report
) -> None:
    per_kind = tier.pick(125, 500)
    key = SyncKey.generate()
    a = new_author(key)
    other = new_author(key)
    chain = signed_chain(a, "t", HELD + 20)
    keys = {a.host: a.signing.public_key, other.host: other.signing.public_key}

    # 1. Every tampered batch over the wire to B (plaintext loopback: no strike policy,
    #    so all 8 x N reach the checks).
    b = await nodes.node("b", sync=key, limits=Limits(streams_per_caller=1000))
    await b.store.insert_batch(chain[:HELD], keys)
    before = await everything(b.store)
    bodies = [(kind, _tamper(kind, chain, other, rng)) for kind in KINDS for _ in range(per_kind)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def push(records: list[Record]) -> tuple[str, str]:
        async with gate:
            return await answer(channel, "PushRecords", _push_body(records, keys))

    async with aio.insecure_channel(b.target) as channel:
        answers = await asyncio.gather(*(push(records) for _, records in bodies))
    accepted = sum(code == "OK" for code, _ in answers)
    by_kind = {
        kind: Counter(code for (k, _), (code, _) in zip(bodies, answers, strict=True) if k == kind)
        for kind in KINDS
    }
    reasons = Counter(_reason(d) for code, d in answers if code != "OK")
    leaks = [d for _, d in answers if LEAK.search(d)]
    rejected_counter = dict(b.running.servicer.rejected) if b.running.servicer else {}  # type: ignore[union-attr]
    unchanged = await everything(b.store) == before
    # The honest records still go in afterwards.
    async with b.client() as peer:
        added, _ = await peer.push(_one((chain[HELD:], keys)))
    honest_ok = added == len(chain) - HELD and await b.store.read_range(
        a.host, "t", 0, 100
    ) == list(chain)

    # 2. The pull direction: B pulls from a relay that serves tampered records.
    pulled_refused = 0
    for kind in KINDS:
        served = _tamper(kind, chain, other, rng)

        async def get_index(request: bytes, context: Any) -> bytes:
            message = pb.GetIndexResponse(node_id="relay", protocol_version=1)
            message.logs.add(host=a.host, tag="t", next_idx=HELD + 1, head_hash=bytes(32))
            for host, public in keys.items():
                message.hosts.add(host=host, public_key=public)
            return message.SerializeToString()

        async def pull(
            request: bytes, context: Any, served: list[Record] = served
        ) -> AsyncIterator[bytes]:
            yield codec.encode_batch(pb.PullRecordsResponse, served, keys)

        victim = await nodes.node(f"v{len(kind)}{pulled_refused}", sync=key, serve=False)
        await victim.store.insert_batch(chain[:HELD], keys)
        relay = FakePeer(get_index, pull)
        await relay.start()
        try:
            async with PeerClient(relay.target, timeout=5) as session:
                try:
                    await asyncio.wait_for(sync_with(victim.store, session), 20)
                except PeerError:
                    pulled_refused += 1
        finally:
            await relay.stop()
        assert await victim.store.read_range(a.host, "t", 0, 100) == chain[:HELD]

    # 3. A pinned relay that keeps tampering is cut off by the strike policy, and an
    #    honest pinned peer is still served.
    r_creds = tls_nodes
    relay_node = await r_creds.node("r", sync=key)
    honest_node = await r_creds.node("h", sync=key)
    victim_tls = await r_creds.node(
        "b", sync=key, pins=(relay_node.credentials, honest_node.credentials)
    )
    await victim_tls.store.insert_batch(chain[:HELD], keys)
    invalid_before_cut = 0
    cut = False
    async with relay_node.client_of(victim_tls, timeout=5) as session:
        for attempt in range(64):
            kind = KINDS[attempt % len(KINDS)]
            try:
                await session.push(_one((_tamper(kind, chain, other, rng), keys)))
            except LimitExceeded as exc:
                cut = "invalid" in str(exc)
                break
            except PeerError:
                invalid_before_cut += 1
        try:
            await session.get_index()
            honest_call_of_cut_relay = "served"
        except LimitExceeded:
            honest_call_of_cut_relay = "refused"
    async with honest_node.client_of(victim_tls, timeout=5) as session:
        served_honest = len((await session.get_index()).logs) > 0
    tls_unchanged = await victim_tls.store.read_range(a.host, "t", 0, 100) == chain[:HELD]

    total = len(bodies)
    print(f"per kind: { {k: dict(v) for k, v in by_kind.items()} }")
    print(f"reasons: {dict(reasons)}; server counter rejected_total: {rejected_counter}")
    print(
        f"pull direction: {pulled_refused}/{len(KINDS)} refused; relay cut after "
        f"{invalid_before_cut} invalid pushes; its next call {honest_call_of_cut_relay}; "
        f"honest peer served: {served_honest}"
    )
    passed = (
        accepted == 0
        and unchanged
        and honest_ok
        and not leaks
        and sum(rejected_counter.values()) == total
        and pulled_refused == len(KINDS)
        and cut
        and invalid_before_cut <= 64
        and honest_call_of_cut_relay == "refused"
        and served_honest
        and tls_unchanged
    )
    report(
        "a relay alters A's records 8 ways (ciphertext flip, wrapping nonce, idx swap, "
        "host, tag, id/version, replay of idx k at another idx, truncation): 0 accepted "
        "(push and pull), store unchanged but for honest records, rejections counted by "
        "reason, the relay cut off by the strike policy after <= 64 invalid batches while "
        "an honest peer is served",
        f"{len(KINDS)} kinds x {per_kind} = {total:,} tampered pushes, {accepted} accepted; "
        f"pull direction {pulled_refused}/{len(KINDS)} refused; relay cut off after "
        f"{invalid_before_cut} invalid pushes; honest peer served",
        passed,
        tampered=total,
        accepted=accepted,
        reasons=dict(reasons),
        cut_after=invalid_before_cut,
    )
    assert accepted == 0, by_kind
    assert unchanged and honest_ok and tls_unchanged
    assert not leaks, leaks[:3]
    assert sum(rejected_counter.values()) == total, rejected_counter
    assert pulled_refused == len(KINDS)
    assert cut and invalid_before_cut <= 64
    assert honest_call_of_cut_relay == "refused"
    assert served_honest


# -- C8: a keyed peer forges another host's records ----------------------------------------


async def test_c8_forge_other_host(
    nodes: Nodes, tls_nodes: TlsNodes, rng: random.Random, tier: Tier, report: Report
) -> None:
    forged_total = tier.pick(1000, 5000)
    key = SyncKey.generate()
    a = new_author(key)
    chain = signed_chain(a, "t", HELD)
    b = await nodes.node("b", sync=key, limits=Limits(streams_per_caller=1000))
    await b.store.insert_batch(chain, {a.host: a.signing.public_key})
    mallory = new_author(key)  # the E2E key and its own signing key

    def forged() -> tuple[list[Record], dict[bytes, bytes]]:
        impostor = Author(mallory.signing, key)
        impostor.host = a.host  # writes as A, signs with M's key
        tag = rng.choice(["t", "t", "notes", "u"])
        head = Head(HELD, record_hash(chain[-1])) if tag == "t" else Head(0)
        records = impostor.write(tag, head, [1_000 + n for n in range(3)], [b"f1", b"f2", b"f3"])
        offered = rng.choice([{}, {a.host: mallory.signing.public_key}])
        return records[: rng.randint(1, 3)], offered

    batches = [forged() for _ in range(forged_total)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def push(batch: tuple[list[Record], dict[bytes, bytes]]) -> str:
        async with gate:
            return (await answer(channel, "PushRecords", _push_body(*batch)))[0]

    before = await everything(b.store)
    async with aio.insecure_channel(b.target) as channel:
        codes = Counter(await asyncio.gather(*(push(batch) for batch in batches)))
    unchanged = await everything(b.store) == before

    # Over mutual TLS, M's strikes rise and it is cut off.
    m_node = await tls_nodes.node("m", sync=key)
    victim = await tls_nodes.node("v", sync=key, pins=(m_node.credentials,))
    await victim.store.insert_batch(chain, {a.host: a.signing.public_key})
    strikes_seen: list[int] = []
    servicer = victim.running.servicer
    assert servicer is not None
    m_id = m_node.node_id.hex()
    cut = False
    async with m_node.client_of(victim, timeout=5) as session:
        for _ in range(20):
            try:
                await session.push(_one(forged()))
            except LimitExceeded:
                cut = True
                break
            except PeerError:
                strikes_seen.append(servicer.policy.strikes(m_id))
    print(f"codes {dict(codes)}; strikes {strikes_seen}, cut off: {cut}")
    accepted = codes.get("OK", 0)
    report(
        "a keyed peer M (E2E key + its own signing key) sends records with host = A: "
        "0 accepted (per-host signatures), M's strikes rise and M is cut off",
        f"{forged_total:,} forged, {accepted} accepted ({dict(codes)}); over mTLS M's "
        f"strikes went {strikes_seen} (the ban clears them) and it was cut off",
        accepted == 0 and unchanged and cut and 1 <= len(strikes_seen) <= 64,
        forged=forged_total,
        accepted=accepted,
    )
    assert accepted == 0 and unchanged
    assert cut and 1 <= len(strikes_seen) <= 64
    assert strikes_seen[:-1] == sorted(strikes_seen[:-1])  # the ban clears them at the last


# -- C9: fork injection ------------------------------------------------------------------------


async def _sync_both(x: Node, y: Node) -> list[str]:
    """One session each way between two honest nodes; the errors seen (forks, ...)."""
    errors: list[str] = []
    for client, server in ((x, y), (y, x)):
        async with PeerClient(server.target, timeout=10) as session:
            try:
                await asyncio.wait_for(sync_with(client.store, session), 30)
            except PeerError as exc:
                errors.append(type(exc).__name__)
    return errors


async def test_c9_fork_detection(  # noqa: PLR0915
    nodes: Nodes, rng: random.Random, tier: Tier, report: Report
) -> None:
    count = tier.pick(100, 400)
    key = SyncKey.generate()
    a = new_author(key)  # the genuine host; M holds a copy of its signing key
    keys = {a.host: a.signing.public_key}
    b = await nodes.node("b", sync=key)  # the victim
    c = await nodes.node("c", sync=key)  # holds the genuine records
    d = await nodes.node("d", sync=key, serve=False)  # learns only from b afterwards
    cases: list[tuple[str, int, str]] = []  # (tag, k, when)
    genuine: dict[str, list[Record]] = {}
    forged: dict[str, list[Record]] = {}
    m = Author(a.signing, key)  # a cloned device: same host, same key
    fork_answers: Counter[str] = Counter()
    for n in range(count):
        tag, k = f"f{n}", rng.randint(1, 12)
        when = rng.choice(["before", "after"])
        chain = signed_chain(a, tag, k + 1 + rng.randint(0, 4))
        genuine[tag] = chain
        await c.store.insert_batch(chain, keys)
        held = chain[: k + 1] if when == "after" else chain[:k]
        await b.store.insert_batch(held, keys)
        fork = m.write(tag, Head(k, record_hash(chain[k - 1])), [7], [b"evil %d" % n])
        forged[tag] = fork
        async with aio.insecure_channel(b.target) as channel:
            code, _ = await answer(channel, "PushRecords", _push_body(fork, keys))
        fork_answers[f"{when}:{code}"] += 1
        cases.append((tag, k, when))

    errors: list[str] = []
    for _ in range(4):  # bounded: forks are found in the first rounds, then frozen
        errors += await _sync_both(b, c)
    async with PeerClient(b.target, timeout=10) as session:
        await asyncio.wait_for(sync_with(d.store, session), 30)

    flagged = {
        name: {e.log.tag for e in await node.store.forks()} for name, node in (("b", b), ("c", c))
    }
    overwrites = silent = detected = relayed = 0
    for tag, k, when in cases:
        on_b = await b.store.read_range(a.host, tag, 0, 100)
        on_c = await c.store.read_range(a.host, tag, 0, 100)
        if when == "after" and (len(on_b) <= k or on_b[k] != genuine[tag][k]):
            overwrites += 1  # b held the genuine record: it must never be replaced
        if when == "before" and on_b[k] != forged[tag][0]:
            overwrites += 1  # b stored M's record first: that is what it holds
        is_flagged = tag in flagged["b"] or tag in flagged["c"]
        detected += is_flagged
        if on_b != on_c and not is_flagged:
            silent += 1
        on_d = await d.store.read_range(a.host, tag, 0, 100)
        if is_flagged and any(r in forged[tag] for r in on_d):
            relayed += 1
    print(f"push answers {dict(fork_answers)}; sync errors {Counter(errors)}")
    print(f"flagged on b {len(flagged['b'])}, on c {len(flagged['c'])}")
    report(
        "a keyed M presents a second, validly signed record for 100 random (A, tag, k) to B, "
        "before and after B holds the genuine one (held by C): B never replaces a stored "
        "record, the fork is flagged with evidence and the log frozen, the second record is "
        "never relayed, and no two honest nodes diverge silently",
        f"{count} forks injected ({sum(w == 'before' for *_, w in cases)} before, "
        f"{sum(w == 'after' for *_, w in cases)} after), {detected} detected, "
        f"{overwrites} overwrites, {silent} silent divergences, {relayed} relayed",
        detected == count and overwrites == 0 and silent == 0 and relayed == 0,
        forks=count,
        detected=detected,
        overwrites=overwrites,
        silent=silent,
        relayed=relayed,
    )
    assert overwrites == 0
    assert silent == 0
    assert relayed == 0
    assert detected == count
