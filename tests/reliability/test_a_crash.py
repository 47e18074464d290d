"""A1-A2: kill -9 of the receiver, then of the sender, in the middle of a sync.

Real processes: the sender is `peer serve --no-sync` (its own home), the receiver a
`peer sync` process (its own home, a fresh copy each cycle). The sender's logs are
written 8 records per append and synced in batches of 8, so a sync is hundreds of
transactions long and a kill lands mid-stream: each cycle draws a target count from
the seed and kills once the receiver has committed that many records.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path

import pytest

from peer import api
from peer.crypto import SyncKey
from peer.errors import PeerError
from tests.reliability.conftest import Report, Tier, current_tier
from tests.reliability.procs import (
    TIMEOUT_S,
    Audit,
    Daemon,
    audit,
    finish,
    killed_syncs,
    make_home,
    make_homes,
    median,
    run_sync,
    start_sync,
    wait_held,
)

PER = 8  # records per append on the sender = records per batch
SENDER_KILL_RECORD_BYTES = 4000
WRITERS = 3
# 200 cycles of two process starts each take longer than the suite's 300 s per test
SOAK_TIMEOUT = pytest.mark.timeout(1800 if current_tier().soak else 300)


def _setup(tmp_path: Path, per_log: int, size: int = 0) -> tuple[Path, Path, int]:
    sender, template = tmp_path / "s", tmp_path / "r0"
    make_homes(sender, template, {tag: per_log for tag in "abcd"}, PER, size)
    return sender, template, 4 * per_log


def _resume(home: Path, address: str, source: Audit) -> tuple[bool, float, list[str]]:
    """Sync again to the end: converged (digests equal the sender's), seconds, problems."""
    started = time.monotonic()
    done = run_sync(home, address, PER)
    took = time.monotonic() - started
    final = audit(home / "peer.db")
    problems = list(final.problems)
    if done.returncode != 0:
        problems.append(f"resume failed: {done.stdout} {done.stderr}")
    converged = final.ok and done.returncode == 0 and final.digests() == source.digests()
    return converged, took, problems


@SOAK_TIMEOUT
def test_a1_kill9_receiver_during_sync(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    cycles, per_log = tier.pick(8, 200), 600
    sender, template, total = _setup(tmp_path, per_log)
    source = audit(sender / "peer.db")
    bad, mid, converged, resumes, problems = 0, 0, 0, list[float](), list[str]()
    daemon = Daemon(sender)
    try:
        kills = killed_syncs(
            tmp_path, template, daemon.address, batch=PER, cycles=cycles, total=total, rng=rng
        )
        for home in kills:
            after = audit(home / "peer.db")
            mid += 0 < after.count() < total
            if not after.ok or not after.prefix_of(source):
                bad += 1
                problems += after.problems or ["records differ from the sender's"]
            ok, took, failed = _resume(home, daemon.address, source)
            converged += ok
            resumes.append(took)
            problems += failed
    finally:
        assert daemon.stop() == 0
    figure = (
        f"{cycles} kill -9 of the receiver during sync ({mid} mid-stream, {total} records "
        f"in 4 logs, batch {PER}): {bad} stores with integrity failures, gaps, duplicates "
        f"or partial batches, {converged}/{cycles} converge after restart; median "
        f"resume-to-converged {median(resumes):.2f} s"
    )
    passed = bad == 0 and converged == cycles and mid > 0
    report(
        "every cycle: integrity ok, no gap, no duplicate, no partial batch; all converge",
        figure,
        passed,
        cycles=cycles,
        mid_stream=mid,
        bad=bad,
        converged=converged,
        median_resume_s=round(median(resumes), 3),
    )
    assert passed, problems[:5]


@SOAK_TIMEOUT
def test_a2_kill9_sender_during_sync(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    cycles, per_log = tier.pick(6, 200), 600
    # 4 kB records (9.6 MB): more than the transport buffers, so the sender is still
    # sending (with segments, 2.4 MB of 1 kB records fit them: 0-2 of 6 kills mid-stream)
    sender, template, total = _setup(tmp_path, per_log, SENDER_KILL_RECORD_BYTES)
    source = audit(sender / "peer.db")
    bad, mid, converged, resumes, problems = 0, 0, 0, list[float](), list[str]()
    unclean = 0
    for cycle in range(cycles):
        home = tmp_path / f"r{cycle + 1}"
        shutil.copytree(template, home)
        daemon = Daemon(sender)
        try:
            process = start_sync(home, daemon.address, PER)
            # the last fifth may already sit in the receiver's transport buffers when the
            # sender dies: kill while the sender still has records to send
            wait_held(home / "peer.db", rng.randrange(total * 4 // 5), process, TIMEOUT_S)
            daemon.kill()
            code, output = finish(process)
        finally:
            daemon.stop()
        if "Traceback" in output or (code != 0 and '"error": "' not in output):
            unclean += 1
            problems.append(f"receiver output after the sender died: {output[-500:]}")
        after, sent = audit(home / "peer.db"), audit(sender / "peer.db")
        mid += 0 < after.count() < total
        if not after.ok or not sent.ok or not after.prefix_of(source):
            bad += 1
            problems += after.problems + sent.problems or ["records differ from the sender's"]
        daemon = Daemon(sender)  # restarted
        try:
            ok, took, failed = _resume(home, daemon.address, source)
        finally:
            assert daemon.stop() == 0
        converged += ok
        resumes.append(took)
        problems += failed
        shutil.rmtree(home)
    figure = (
        f"{cycles} kill -9 of the sender during sync ({mid} mid-stream): {bad} stores with "
        f"integrity failures, gaps, duplicates or partial batches stored, {unclean} unclean "
        f"receiver exits, {converged}/{cycles} converge from the restarted sender; median "
        f"resume-to-converged {median(resumes):.2f} s"
    )
    passed = bad == 0 and unclean == 0 and converged == cycles and mid > 0
    report(
        "receiver and sender stores intact after each kill, no partial batch; all converge",
        figure,
        passed,
        cycles=cycles,
        mid_stream=mid,
        bad=bad,
        unclean=unclean,
        converged=converged,
        median_resume_s=round(median(resumes), 3),
    )
    assert passed, problems[:5]


async def _append_until_cut(home: Path, tag: str, rng: random.Random) -> list[tuple[int, int]]:
    """Append 1-4 records at a time through the public API until the daemon dies;
    the (first idx, count) of every acknowledged append."""
    acked: list[tuple[int, int]] = []
    try:
        async with await api.connect(home) as node:
            for _ in range(100_000):  # bounded; the kill ends it long before
                items = [f"{tag}-{len(acked)}-{n}" for n in range(rng.randint(1, 4))]
                done = await asyncio.wait_for(node.append(tag, *items), TIMEOUT_S)
                acked.append((done.first_idx, done.count))
    except PeerError:
        pass  # the daemon was killed: this append was never acknowledged
    return acked


async def test_a3_kill9_local_append_acked(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    cycles = tier.pick(8, 100)
    home = tmp_path / "w"
    await make_home(home, "w", SyncKey.generate(), {}, PER)
    acked: list[tuple[str, int, int]] = []
    lost, bad, problems = 0, 0, list[str]()
    for _ in range(cycles):
        daemon = Daemon(home)
        try:
            writers = [_append_until_cut(home, f"acked{n}", rng) for n in range(WRITERS)]
            appending = asyncio.gather(*writers)
            await asyncio.sleep(rng.uniform(0.05, 0.4))  # the fault's random moment
            daemon.kill()
            for n, done in enumerate(await asyncio.wait_for(appending, TIMEOUT_S)):
                acked += [(f"acked{n}", first, count) for first, count in done]
        finally:
            daemon.stop()
        after = audit(home / "peer.db")
        idxs = {(log[1], row[0]) for log, rows in after.logs.items() for row in rows}
        wanted = {(tag, first + n) for tag, first, count in acked for n in range(count)}
        lost += len(wanted - idxs)
        if not after.ok:
            bad += 1
            problems += after.problems
    count = sum(n for _, _, n in acked)
    figure = (
        f"{cycles} kill -9 of the daemon during appends through the API by {WRITERS} "
        f"concurrent writers: {len(acked)} "
        f"acknowledged appends ({count} records), {lost} lost acknowledged writes, "
        f"{bad} stores with integrity failures or gaps"
    )
    passed = lost == 0 and bad == 0 and len(acked) > cycles
    report(
        "every acknowledged idx present after restart; frontier at or past the last ack",
        figure,
        passed,
        cycles=cycles,
        acked=len(acked),
        lost=lost,
        bad=bad,
    )
    assert passed, problems[:5]
