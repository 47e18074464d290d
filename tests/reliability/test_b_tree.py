"""B9: the neighbour that feeds a node a log is killed mid-stream (issue 14).

A diamond of real daemons: `a` writes; `b` and `c` each pin `a` and `d`; `d` pins only
`b` and `c`, so `a`'s log reaches `d` through one of them, its upstream for that log
(`peer.tree`), while the other only notes its heads. During a bulk, once `d` holds part
of it, its feeder is killed with SIGKILL. The other neighbour must take over (the tree
grafts the log from it when the stream to the dead one ends), `d` must hold every record,
and the restarted feeder must converge too. The figure is the take-over time: from the
kill to `d`'s first record of the log from the other neighbour.
"""

from __future__ import annotations

import asyncio
import time

from tests.daemons import Daemons, Home, pin, until
from tests.reliability.conftest import Report, Tier

BATCH = 500  # records per API append on `a`


async def _held(daemons: Daemons, home: Home, log: tuple[str, str]) -> int:
    return (await daemons.logs(home)).get(log, 0)


async def _received(daemons: Daemons, home: Home, other: Home) -> int:
    """Records `home` has stored from `other`'s live stream."""
    link = await daemons.link(home, other)
    return int((link or {}).get("received_live", 0))


async def _feeder(daemons: Daemons, d: Home, b: Home, c: Home) -> tuple[Home, Home]:
    """(the neighbour feeding `d`, the other): the one whose link has brought records."""
    received = {other.name: await _received(daemons, d, other) for other in (b, c)}
    return (b, c) if received["b"] >= received["c"] else (c, b)


async def test_b9_kill9_feeding_neighbour(daemons: Daemons, report: Report, tier: Tier) -> None:
    cycles, per_cycle = tier.pick((2, 20 * BATCH), (10, 60 * BATCH))
    a, b, c, d = daemons.homes("a", "b", "c", "d")
    for one, others in ((a, (b, c)), (b, (a, d)), (c, (a, d)), (d, (b, c))):
        pin(one, *others, certificates=True)
    daemons.start(a, b, c, d)
    log = (a.host, "bulk")
    writer = await daemons.api(a)
    await writer.append("bulk", *[f"warm {n}" for n in range(BATCH)])
    total = BATCH
    await daemons.converged([a, b, c, d], {log: total}, timeout=30)

    takeovers: list[float] = []
    mid_stream = 0
    for cycle in range(cycles):
        feeder, other = await _feeder(daemons, d, b, c)
        start = await _held(daemons, d, log)

        async def bulk(cycle: int = cycle) -> None:
            for n in range(per_cycle // BATCH):
                await writer.append("bulk", *[f"c{cycle} r{n} {i}" for i in range(BATCH)])

        writing = asyncio.create_task(bulk())
        total += per_cycle

        async def partway(start: int = start) -> bool:
            return await _held(daemons, d, log) > start + BATCH

        await until(partway, "d to hold part of the bulk", 30)
        held_at_kill = await _held(daemons, d, log)
        from_other = await _received(daemons, d, other)
        victim = next(x for x in daemons.started if x.home is feeder and x.running())
        victim.kill()
        killed = time.monotonic()
        mid_stream += held_at_kill < total

        async def taken_over(before: int = from_other, other: Home = other) -> bool:
            return await _received(daemons, d, other) > before

        if held_at_kill < total:
            await until(taken_over, "the other neighbour to feed d", 30)
            takeovers.append(time.monotonic() - killed)
        await writing
        await daemons.converged([a, other, d], {log: total}, timeout=60)
        daemons.start(feeder)
        await daemons.converged([a, b, c, d], {log: total}, timeout=60)
        print(f"cycle {cycle}: killed {feeder.name} with d at {held_at_kill}/{total}")

    takeovers.sort()
    median = takeovers[len(takeovers) // 2] if takeovers else float("nan")
    passed = mid_stream == cycles and len(takeovers) == cycles
    report(
        "a log's feeding neighbour killed mid-stream: the other neighbour takes over, "
        "every node converges, 0 lost",
        f"{cycles} kill -9 of the neighbour feeding d (diamond a-b/c-d, {per_cycle:,} "
        f"records a cycle; {mid_stream} mid-stream): {cycles}/{cycles} converge with "
        f"0 lost ({total:,} records); take-over (kill to d's first record from the other) median "
        f"{median:.2f} s, max {max(takeovers, default=float('nan')):.2f} s",
        passed,
        cycles=cycles,
        mid_stream=mid_stream,
        takeover_median_s=round(median, 3),
    )
    assert passed
