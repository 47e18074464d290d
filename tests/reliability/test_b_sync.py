"""B1, B2, B4-B7: sync correctness, measured over the machinery of tests/test_sync.py
and tests/test_convergence.py (in-process nodes, real grpc.aio servers on loopback).

B1 re-runs test_sync's paging table as one loop that counts; B7 runs test_convergence's
state machine with the tier's example count. B2, B4, B5, B6 are new measurements.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from peer.errors import GapError, PeerError
from peer.records import LogKey, Record
from peer.store import Store
from tests.conftest import new_author, signed_chain
from tests.nodes import Nodes, assert_converged, batches_of, keys_of, next_idx, sync
from tests.reliability.conftest import Report, Tier, current_tier
from tests.test_convergence import Convergence
from tests.test_sync import PAGING_CASES, _source_and_receiver


async def test_b1_paging_boundaries(tmp_path: Path, report: Report) -> None:
    cases = [
        (direction, held, page, count)
        for direction in ("pull", "push")
        for held in ("empty", "partial")
        for page, count in PAGING_CASES
    ]
    off_by_one, resent, diverged = 0, 0, 0
    started = time.monotonic()
    for n, (direction, held, page, count) in enumerate(cases):
        (tmp_path / f"case{n}").mkdir()
        async with Nodes(tmp_path / f"case{n}") as nodes:
            already = page + 1 if held == "partial" else 0
            client, server, _ = await _source_and_receiver(nodes, direction, already, count)
            summary = await sync(client, server, batch=page)
            moved = summary.pulled if direction == "pull" else summary.pushed
            other = summary.pushed if direction == "pull" else summary.pulled
            off_by_one += moved != count
            try:
                await assert_converged(client.store, server.store)
            except AssertionError:
                diverged += 1
            again = await sync(client, server, batch=page)
            resent += bool(other or again.pulled or again.pushed)
    took = time.monotonic() - started
    figure = (
        f"{len(cases)} cases (counts 0, 1, B-1, B, B+1, 2B, 2B+1 x B 1, 4, 100, distinct "
        f"pairs, x pull, push x empty, partial): {off_by_one} off-by-one, {resent} "
        f"re-sent, {diverged} unequal frontiers; {took:.1f} s"
    )
    passed = not (off_by_one or resent or diverged) and len(cases) == 4 * len(PAGING_CASES)
    report(
        "exactly the missing records move, none re-sent, equal frontiers",
        figure,
        passed,
        cases=len(cases),
        off_by_one=off_by_one,
        resent=resent,
    )
    assert passed


async def test_b2_duplicate_and_overlap_idempotent(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    deliveries_wanted = tier.pick(1000, 10_000)
    total = 200
    async with Nodes(tmp_path) as nodes:
        b = await nodes.node("b")
        author = new_author()
        records = signed_chain(author, "t", total)
        log = LogKey(author.host, "t")
        deliveries = refused = added = duplicates = 0
        digest_changes = 0
        head = 0
        complete_index = None
        async with b.client() as peer:
            for _ in range(deliveries_wanted):  # bounded: one stream per round
                if deliveries >= deliveries_wanted:
                    break
                stream: list[tuple[list[Record], dict[bytes, bytes]]] = []
                for _ in range(rng.randint(1, 5)):  # [c, d) with c <= head: repeat or overlap
                    start = rng.randint(max(0, head - 12), head) if head < total else 0
                    end = rng.randint(start + 1, min(total, start + 16))
                    stream += [(records[start:end], keys_of(author))] * rng.randint(1, 3)
                    head = max(head, end)
                try:
                    got_added, got_dups = await peer.push(batches_of(*stream))
                except PeerError:
                    refused += 1
                    continue
                deliveries += len(stream)
                added += got_added
                duplicates += got_dups
                index = await b.store.index()
                if complete_index is not None and index != complete_index:
                    digest_changes += 1
                if index.get(log) is not None and index[log].next_idx == total:
                    complete_index = complete_index or index
        held = await b.store.read_range(author.host, "t", 0, total + 1)
    redundant = duplicates
    figure = (
        f"{deliveries} deliveries ({redundant} redundant records, repeats and overlaps): "
        f"{refused} refused, {added} records added of {total}, 0 duplicates stored "
        f"{'(checked)' if held == records else '(FAILED)'}, {digest_changes} index changes "
        f"after completion"
    )
    passed = refused == 0 and added == total and held == records and digest_changes == 0
    report(
        "OK each time; 0 duplicates; digest unchanged by repeats",
        figure,
        passed,
        deliveries=deliveries,
        redundant=redundant,
        refused=refused,
    )
    assert passed


async def test_b4_gap_is_not_advertised_and_is_repaired(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    positions = tier.pick(50, 200)
    length = 40
    async with Nodes(tmp_path) as nodes:
        b = await nodes.node("b")
        source = await nodes.node("source", serve=False)
        refused, false_frontiers, wrong_expected = 0, 0, 0
        logs: list[tuple[LogKey, list[Record]]] = []
        async with b.client() as peer:
            for _ in range(positions):
                author = new_author()
                records = signed_chain(author, "t", length)
                await source.store.insert_batch(records, keys_of(author))
                hole = rng.randrange(1, length - 1)  # rows 0..hole-1 arrive, then hole+1..
                await peer.push(batches_of((records[:hole], keys_of(author))))
                try:
                    await peer.push(batches_of((records[hole + 1 :], {})))
                except GapError as exc:
                    refused += 1
                    wrong_expected += exc.expected_idx != hole
                advertised = (await peer.get_index()).logs[LogKey(author.host, "t")]
                false_frontiers += advertised.next_idx != hole
                logs.append((LogKey(author.host, "t"), records))
        await sync(source, b)  # the next sync fills every hole
        repaired = 0
        for log, records in logs:
            repaired += await b.store.read_range(log.host, log.tag, 0, length + 1) == records
            assert await next_idx(b.store, log) in (length, length)
    figure = (
        f"a gap at {positions} random positions (idx k+1.. sent before k): {refused}/"
        f"{positions} refused with FAILED_PRECONDITION ({wrong_expected} with a wrong "
        f"expected idx), {false_frontiers} false frontiers advertised, {repaired}/"
        f"{positions} repaired by the next sync"
    )
    passed = refused == repaired == positions and not (false_frontiers or wrong_expected)
    report(
        "advertised frontier stays below the hole; FAILED_PRECONDITION; next sync fills it",
        figure,
        passed,
        positions=positions,
        repaired=repaired,
        false_frontiers=false_frontiers,
    )
    assert passed


async def test_b5_relay_line_topology(tmp_path: Path, tier: Tier, report: Report) -> None:
    count = tier.pick(2000, 20_000)
    async with Nodes(tmp_path) as nodes:
        a = await nodes.node("a")
        b = await nodes.node("b")
        c = await nodes.node("c", serve=False)
        written = await a.store.append(a.author, "notes", [b"n%d" % n for n in range(count)])
        await sync(b, a)  # b pulls a's log
        assert a.running is not None
        await a.running.stop(grace=0.2)  # a goes offline
        a.running = None
        started = time.monotonic()
        await sync(c, b)  # c gets a's log from b only
        took = time.monotonic() - started
        relayed = await c.store.read_range(a.host, "notes", 0, count + 1)
        equal = (
            relayed == written
            and (await c.store.index())[a.log("notes")] == (await a.store.index())[a.log("notes")]
        )
    figure = (
        f"A-B-C line, A offline after syncing to B: C got A's {count} records from B in "
        f"{took:.2f} s; digest {'equal to' if equal else 'DIFFERENT from'} A's"
    )
    report("C's digest for A's series = A's", figure, equal, records=count, seconds=round(took, 3))
    assert equal


async def test_b6_stale_or_regressed_peer(tmp_path: Path, report: Report) -> None:
    async with Nodes(tmp_path) as nodes:
        n = await nodes.node("n", serve=False)
        p = await nodes.node("p")
        own = await n.append_each("own", 20)
        await sync(n, p)  # p holds all 20 of n's records
        # n restored from a backup holding 10: p reports an idx above ours for our host
        restored = await Store.open(tmp_path / "restored.db")
        await restored.insert_batch(own[:10], keys_of(n.author))
        await n.store.close()
        n.store = restored
        above = await sync(n, p)
        back = await n.store.read_range(n.host, "own", 0, 100)
        continued = await n.store.append(n.author, "own", [b"after restore"])
        after_above = await sync(n, p)
        # and a peer that holds less of our log than we do: we re-send from its frontier
        q = await nodes.node("q")
        await q.store.insert_batch(own[:5], keys_of(n.author))
        below = await sync(n, q)
        at_q = await q.store.read_range(n.host, "own", 0, 100)
        final = await n.store.read_range(n.host, "own", 0, 100)
        at_p = await p.store.read_range(n.host, "own", 0, 100)
    deleted = sum(r not in held for held in (final, at_p, at_q) for r in own)
    log = LogKey(n.host, "own")
    alarms = {
        "above": above.own_log_behind,
        "after": after_above.own_log_behind,
        "below": below.own_log_behind,
    }
    alarm_ok = alarms == {"above": {log: (10, 20)}, "after": {}, "below": {}}
    above_ok = back == own and continued[0].idx == 20 and after_above.pushed == 1
    below_ok = below.pushed == 16 and at_q == [*own, *continued]
    figure = (
        f"peer above our own log (restored backup, 10 of 20): alarm raised "
        f"{'once (ours 10, theirs 20)' if alarm_ok else f'WRONGLY: {alarms}'}, "
        f"{above.pulled} authentic records pulled back, next append at idx "
        f"{continued[0].idx}, no fork; peer below (5 of 21): {below.pushed} re-sent from its "
        f"frontier, no alarm; {max(deleted, 0)} records deleted"
    )
    passed = above_ok and below_ok and alarm_ok and deleted == 0
    report(
        "above: alarm counted, no deletion or fork (our own signed records are pulled "
        "back); below: re-send from its frontier; 0 records deleted",
        figure,
        passed,
        pulled_back=above.pulled,
        resent=below.pushed,
        deleted=deleted,
    )
    assert passed


@pytest.mark.timeout(1800 if current_tier().soak else 300)
def test_b7_sync_state_machine(tier: Tier, report: Report) -> None:
    examples, steps = tier.pick(5, 300), 40
    started = time.monotonic()
    failure = ""
    try:
        run_state_machine_as_test(
            Convergence,
            settings=settings(
                max_examples=examples, stateful_step_count=steps, deadline=None, print_blob=True
            ),
        )
    except Exception as exc:  # the figure reports it; the assert below fails the test
        failure = f"{type(exc).__name__}: {str(exc)[:300]}"
    took = time.monotonic() - started
    figure = (
        f"{examples} examples x <= {steps} steps of tests/test_convergence.py's machine "
        f"(append, sync, sync3, shuffled/duplicated delivery, restart; 3-4 nodes): "
        f"{1 if failure else 0} failures; {took:.1f} s"
    )
    report(
        "I1-I3 after every step; I5 after heal + sync_all",
        figure,
        not failure,
        examples=examples,
        seconds=round(took, 1),
    )
    assert not failure, failure
