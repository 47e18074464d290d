"""B8: the kv and history views converge under clock skew of hours, days and years.

Three hosts write random kv sets and deletes and history creates and deletes, each
with its clock offset by a skew profile; their logs reach three replicas in different
random interleavings (with resends). Every replica must hold the same kv map and history
list, equal to the rules computed from all records at once (greatest (timestamp, host,
idx) wins; a tombstone beats older writes and loses to newer ones; a deleted entry stays
deleted) and to a full rebuild (checked inside `interleaved`).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from peer.crypto import SyncKey
from tests.apps import Host
from tests.reliability.conftest import Report, Tier
from tests.test_views import interleaved, model

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
YEAR_NS = 365 * DAY_NS
PROFILES = {  # clock offset of each of the three hosts
    "+-1 h": (0, HOUR_NS, -HOUR_NS),
    "+-3 d": (0, 3 * DAY_NS, -3 * DAY_NS),
    "+-10 y": (0, 10 * YEAR_NS, -10 * YEAR_NS),
    "mixed": (-3 * DAY_NS, HOUR_NS, 10 * YEAR_NS),
}
KEYS = [f"k{n}" for n in range(20)]
IDS = [f"e{n}" for n in range(40)]


def write(sync: SyncKey, offsets: tuple[int, ...], ops: int, rng: random.Random) -> list[Host]:
    """`ops` random operations; each host's timestamps are its skewed clock, ticking."""
    hosts = [Host.new(sync) for _ in offsets]
    now = time.time_ns()
    for n in range(ops):
        who = rng.randrange(len(hosts))
        host, stamp = hosts[who], now + offsets[who] + n * 1000 + rng.randrange(3) * 1000
        kind = rng.random()
        if kind < 0.45:
            host.kv_set(rng.choice(KEYS), rng.randbytes(4), stamp, rng.choice(["a", "b"]))
        elif kind < 0.6:
            host.kv_delete(rng.choice(KEYS), stamp, rng.choice(["a", "b"]))
        elif kind < 0.9:
            host.history_create(rng.choice(IDS), f"cmd {n}", stamp)
        else:
            host.history_delete(rng.choice(IDS), stamp)
    return hosts


def test_b8_views_converge_under_clock_skew(
    tmp_path: Path, rng: random.Random, tier: Tier, report: Report
) -> None:
    ops = tier.pick(1_000, 10_000)
    sync = SyncKey.generate()
    divergent = 0
    keys = 0
    for number, (name, offsets) in enumerate(PROFILES.items()):
        hosts = write(sync, offsets, ops, rng)
        expected = model(hosts, sync)
        keys += len(expected.kv)
        for replica in range(3):
            path = tmp_path / f"p{number}-r{replica}.db"
            seed = rng.randrange(2**32)
            got = asyncio.run(interleaved(path, sync, hosts, random.Random(seed)))
            if got != expected:
                divergent += 1
                print(f"profile {name}, replica {replica} (seed {seed}) differs from the rules")
    report(
        "3 hosts, random kv sets/deletes and history creates/deletes with skewed clocks, "
        "delivered to 3 replicas in random interleavings: every replica's kv map and "
        "history list equal the rules (greatest (timestamp, host, idx); tombstones) and a "
        "full rebuild",
        f"{ops:,} ops x {len(PROFILES)} skew profiles (+-1 h, +-3 d, +-10 y, mixed) x 3 "
        f"replicas: {divergent} divergent replicas ({keys} winning keys checked)",
        divergent == 0,
        ops=ops,
        divergent=divergent,
    )
    assert divergent == 0
