"""D1: a Jepsen-style set test of real `peer serve` daemons under partitions, kill -9
and SIGSTOP pauses (research/reliability.md §3 D1, Jepsen's `set-full` checker).

Every node appends distinct, ordered elements ("n<node>-<seq>") through its own daemon's
local API and logs each acknowledged one; a nemesis, drawn from the printed seed,
partitions random halves, kills -9 and restarts a node on the same port, or pauses one.
Then everything heals, the writers stop, and the final read on every node must hold
every acknowledged element exactly once, in each writer's order, and the same stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.client import LocalClient
from peer.errors import PeerError
from tests.reliability.conftest import Report, Tier
from tests.reliability.netfaults import (
    Daemon,
    Network,
    all_heads_equal,
    cli,
    eventually,
    heads,
    leftovers,
    make_network,
    start_mesh,
    stop_all,
    tail_data,
)

TAG = "set"
SETTINGS = {  # fast healing in tests; the backoff cap is what bounds convergence
    "interval": 1.0,
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "keepalive": 2.0,
    "keepalive_timeout": 2.0,
}
APPEND_TIMEOUT_S = 1.0
CONVERGE_TIMEOUT_S = 90.0
KINDS = ["partition", "kill", "pause"]


@dataclass
class History:
    """What each writer did: acknowledged, failed for sure, or indeterminate."""

    acked: set[str] = field(default_factory=set)
    indeterminate: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)


async def writer(daemon: Daemon, node: int, rate: float, stop: asyncio.Event, log: History) -> None:
    """Append one element every 1/rate s to the node's own daemon until `stop`."""
    client = LocalClient(daemon.socket, timeout=APPEND_TIMEOUT_S)
    seq = 0
    try:
        while not stop.is_set():
            element = f"n{node}-{seq:06d}"
            seq += 1
            log.attempted.add(element)
            try:
                await client.append(TAG, [element.encode()])
                log.acked.add(element)
            except PeerError:
                log.indeterminate.add(element)  # it may have committed before the error
                await client.close()  # a fresh channel: no reconnect backoff after restarts
                client = LocalClient(daemon.socket, timeout=APPEND_TIMEOUT_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0 / rate)
    finally:
        await client.close()


@dataclass
class Nemesis:
    rng: random.Random
    network: Network
    daemons: list[Daemon]
    ops: Counter[str] = field(default_factory=Counter)
    _deck: list[str] = field(default_factory=list)

    async def run(self, duration: float, every: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() + every < end:
            await asyncio.sleep(every * self.rng.uniform(0.3, 0.7))
            if not self._deck:  # every kind of fault in each round of three
                self._deck = self.rng.sample(KINDS, len(KINDS))
            op = self._deck.pop()
            hold = every * self.rng.uniform(0.3, 0.6)
            print(f"nemesis: {op} for {hold:.1f} s")
            await getattr(self, op)(hold)
            self.ops[op] += 1

    async def final_partition(self) -> None:
        """Random halves, left in place: the test heals them after the writers stop."""
        await self.network.partition(self._halves())
        self.ops["partition"] += 1
        await asyncio.sleep(1.0)

    def _halves(self) -> list[list[int]]:
        nodes = list(range(len(self.daemons)))
        self.rng.shuffle(nodes)
        cut = self.rng.randint(1, len(nodes) - 1)
        print(f"  halves {[nodes[:cut], nodes[cut:]]}")
        return [nodes[:cut], nodes[cut:]]

    async def partition(self, hold: float) -> None:
        await self.network.partition(self._halves())
        try:
            await asyncio.sleep(hold)
        finally:
            await self.network.heal()

    async def kill(self, hold: float) -> None:
        daemon = self.rng.choice(self.daemons)
        print(f"  kill -9 {daemon.name}")
        await daemon.kill()
        await asyncio.sleep(hold)
        await daemon.start()

    async def pause(self, hold: float) -> None:
        daemon = self.rng.choice(self.daemons)
        print(f"  SIGSTOP {daemon.name}")
        daemon.pause()
        try:
            await asyncio.sleep(hold)
        finally:
            daemon.resume()


@dataclass
class Checked:
    """Jepsen's set-full verdict over the final reads of every node."""

    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    misordered: int = 0
    identical: int = 0
    recovered: int = 0


def check_set(
    reads: list[list[dict[str, Any]]], statuses: list[Any], logs: list[History]
) -> Checked:
    acked = set().union(*(h.acked for h in logs))
    attempted = set().union(*(h.attempted for h in logs))
    maybe = set().union(*(h.indeterminate for h in logs))
    verdict = Checked()
    contents = []
    for read in reads:
        elements = [r["data"] for r in read]
        counts = Counter(elements)
        verdict.lost += len(acked - set(elements))
        verdict.duplicated += sum(n - 1 for n in counts.values() if n > 1)
        verdict.unexpected += len(set(elements) - attempted)
        for node in range(len(logs)):  # each writer's elements in idx order: ascending
            mine = sorted((r["idx"], r["data"]) for r in read if r["data"].startswith(f"n{node}-"))
            verdict.misordered += sum(1 for a, b in itertools.pairwise(mine) if a[1] >= b[1])
        contents.append(sorted((r["host"], r["idx"], r["id"], r["data"]) for r in read))
    verdict.identical = sum(
        1 for c, s in zip(contents, statuses, strict=True) if (c, s) == (contents[0], statuses[0])
    )
    verdict.recovered = len(maybe & {r["data"] for r in reads[0]})
    return verdict


async def run_workload(
    daemons: list[Daemon],
    network: Network,
    nemesis: Nemesis,
    logs: list[History],
    rate: float,
    duration: float,
    every: float,
) -> float:
    """Writers and nemesis, then a final partition; writers stop, the network heals.
    Returns the seconds from the heal to identical stores on every node."""
    stop = asyncio.Event()
    writers = [
        asyncio.create_task(writer(d, i, rate, stop, logs[i])) for i, d in enumerate(daemons)
    ]
    try:
        await asyncio.wait_for(nemesis.run(duration, every), duration + 60)
        await nemesis.final_partition()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 30)
    await network.heal()
    for daemon in daemons:
        daemon.resume()
    return await eventually(
        lambda: all_heads_equal(daemons, len(daemons)), "identical stores", CONVERGE_TIMEOUT_S
    )


async def test_d1_jepsen_set_partitions_kills_pauses(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    count, duration, every, rate = tier.pick((3, 30.0, 5.0, 5.0), (5, 150.0, 10.0, 10.0))
    network = await make_network(count)
    daemons: list[Daemon] = []
    logs = [History() for _ in range(count)]
    try:
        daemons = await start_mesh(tmp_path, network, count, SETTINGS)
        nemesis = Nemesis(rng, network, daemons)
        converge_s = await run_workload(daemons, network, nemesis, logs, rate, duration, every)
        statuses = [heads(await d.status()) for d in daemons]
        reads = [await tail_data(d, TAG) for d in daemons]
        verified = [await cli(d.home, "verify", "--json", check=False) for d in daemons]
    finally:
        await stop_all(daemons)
        await network.close()
    assert not leftovers(tmp_path), "daemons left running"
    acked = len(set().union(*(h.acked for h in logs)))
    indeterminate = sum(len(h.indeterminate) for h in logs)
    v = check_set(reads, statuses, logs)
    verify_ok = sum(1 for out in verified if '"ok": true' in out)
    ops = dict(nemesis.ops)
    passed = (v.lost, v.duplicated, v.unexpected, v.misordered) == (0, 0, 0, 0)
    passed = passed and v.identical == count and verify_ok == count
    report(
        "set-full after partitions, kill -9 and pauses: lost = 0 (every acknowledged append "
        "on every node), duplicated = 0, all stores identical after heal",
        f"{count} nodes ({network.kind}), {duration:.0f} s, {ops.get('partition', 0)} "
        f"partitions, {ops.get('kill', 0)} kills, {ops.get('pause', 0)} pauses, "
        f"{acked} acknowledged appends ({indeterminate} indeterminate, {v.recovered} of "
        f"them present): {v.lost} lost, {v.duplicated} duplicated, {v.identical}/{count} "
        f"identical, converged {converge_s:.1f} s after heal (backoff_max "
        f"{SETTINGS['backoff_max']} s, interval {SETTINGS['interval']} s)",
        passed,
        nodes=count,
        acknowledged=acked,
        lost=v.lost,
        duplicated=v.duplicated,
        unexpected=v.unexpected,
        misordered=v.misordered,
        identical=v.identical,
        converge_s=round(converge_s, 2),
        **{f"nemesis_{k}": n for k, n in ops.items()},
    )
    assert v.lost == 0
    assert v.duplicated == 0
    assert v.unexpected == 0
    assert v.misordered == 0
    assert v.identical == count
    assert verify_ok == count, verified
    assert acked > count * duration * rate * 0.3  # the workload really ran
