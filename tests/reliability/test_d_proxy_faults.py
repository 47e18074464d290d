"""D4: two `peer serve` daemons on loopback, each reaching the other through a
user-space TCP proxy that injects one fault at a time: 200 ms latency, a reset (RST)
every N KB, a stall, a bit flipped inside a TLS record. After each, the sync must
complete by itself, and no record may be stored corrupt (`peer verify`, and every
appended payload read back exactly once, byte for byte).

A batch always ends on a signed record (one every 256 idx, and the last of each append),
so the least a connection must carry to make progress is one signed run: up to 256
records (~115 KB of these 300-byte records). A link that resets more often than that
can never progress; the reset fault here is every 256 KB. Below that (every 32 KB), the
links must back off instead of spinning: once, a call from the peer woke a failing
link at once, both peers woke each other, and ~30 handshakes/s ran with no backoff.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Any

from tests.reliability.conftest import Report, Tier
from tests.reliability.netfaults import (
    Daemon,
    FaultProxy,
    ProxyNetwork,
    all_heads_equal,
    cli,
    eventually,
    start_mesh,
    stop_all,
    tail_data,
)

TAG = "d4"
SETTINGS = {
    "interval": 1.0,
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "keepalive": 2.0,
    "keepalive_timeout": 2.0,
    "batch": 100,
}
RESET_EVERY = 256 * 1024  # above one signed run (<= 256 records, ~115 KB here): see below
STORM_RESET = 32 * 1024  # below one signed run: no connection can make progress
STORM_WINDOW_S = 5.0
STORM_LIMIT = 4.0  # connections/s over both links (backoff 0.2 s doubling to 1 s: ~2.5)
FLIP_AT = 20_000  # bytes into a stream: past the TLS handshake, inside a record
CONVERGE_TIMEOUT_S = 90.0


def payloads(kind: str, count: int) -> list[str]:
    return [f"{kind}-{n:05d}-" + "x" * 300 for n in range(count)]


async def converged(daemons: list[Daemon], total: int) -> bool:
    if not await all_heads_equal(daemons, 1):
        return False
    status = await daemons[0].status()
    return status is not None and sum(log["next_idx"] for log in status["logs"]) >= total


async def retry_rate(daemons: list[Daemon], proxies: list[FaultProxy], count: int) -> float:
    """Connections per second while every connection is reset before one signed run
    gets through (no progress is possible): the links must back off, not spin."""
    for proxy in proxies:
        proxy.set(reset_every=STORM_RESET)
        proxy.reset_all()
    lines = "\n".join(payloads("storm", count)) + "\n"
    await cli(daemons[1].home, "append", "--tag", TAG, stdin=lines)
    before = sum(p.connections for p in proxies)
    started = time.monotonic()
    await asyncio.sleep(STORM_WINDOW_S)  # the observation window
    rate = (sum(p.connections for p in proxies) - before) / (time.monotonic() - started)
    for proxy in proxies:
        proxy.clear(reset_open=True)
    return rate


async def test_d4_proxy_faults(tmp_path: Path, tier: Tier, report: Report) -> None:
    count, stall_s = tier.pick((400, 10.0), (2000, 30.0))
    network = ProxyNetwork(2)
    await network.start()
    proxies = list(network.proxies.values())
    daemons: list[Daemon] = []
    faults: dict[str, dict[str, Any]] = {
        "latency 200 ms": {"latency": 0.2},
        f"reset every {RESET_EVERY // 1024} KB": {"reset_every": RESET_EVERY},
        f"stall {stall_s:.0f} s": {"stall": True},
        "bit flip in a TLS record": {"flip_after": FLIP_AT},
    }
    seconds: dict[str, float] = {}
    written: list[str] = []
    try:
        daemons = await start_mesh(tmp_path, network, 2, SETTINGS)
        a, b = daemons
        for n, (kind, fault) in enumerate(faults.items()):
            for proxy in proxies:
                proxy.set(**fault)
                proxy.reset_all()  # the fault applies from the first byte of a connection
            lines = payloads(f"k{n}", count * (4 if fault.get("reset_every") else 1))
            writer = (a, b)[n % 2]  # both directions: alternate the writer
            started = time.monotonic()
            await cli(writer.home, "append", "--tag", TAG, stdin="\n".join(lines) + "\n")
            written += lines
            if fault.get("stall"):  # the fault lasts stall_s; time counts from its end
                await asyncio.sleep(stall_s)
                for proxy in proxies:
                    proxy.clear()
                started = time.monotonic()
            await eventually(
                functools.partial(converged, daemons, len(written)),
                f"sync after {kind}",
                CONVERGE_TIMEOUT_S,
            )
            seconds[kind] = time.monotonic() - started
            for proxy in proxies:
                proxy.clear()
        storm = await retry_rate(daemons, proxies, count)
        written += payloads("storm", count)
        await eventually(
            functools.partial(converged, daemons, len(written)), "sync after the storm", 60
        )
        reads = [await tail_data(d, TAG) for d in daemons]
        verified = [await cli(d.home, "verify", "--json", check=False) for d in daemons]
    finally:
        await stop_all(daemons)
        await network.close()
    flips = sum(p.flips for p in proxies)
    resets = sum(p.resets for p in proxies)
    expected = sorted(written)
    exact = sum(1 for read in reads if sorted(r.get("data", "") for r in read) == expected)
    corrupt = sum(1 for read in reads for r in read if "error" in r)
    verify_ok = sum(1 for out in verified if '"ok": true' in out)
    passed = len(seconds) == len(faults) and exact == 2 and corrupt == 0 and verify_ok == 2
    passed = passed and flips >= 1 and resets >= 1 and storm <= STORM_LIMIT
    timings = ", ".join(f"{k}: {v:.1f} s" for k, v in seconds.items())
    report(
        "sync completes after each proxy fault; no corrupt record stored",
        f"{len(seconds)}/{len(faults)} fault kinds converge, seconds from the append (from "
        f"the stall's end) ({timings}); {count} records each ({4 * count} under resets); "
        f"{resets} resets, {flips} bit flip(s) injected; {corrupt} corrupt records, "
        f"{2 - exact} stores differing from what was appended, verify ok on {verify_ok}/2; "
        f"resets before any progress: {storm:.1f} connections/s (backoff holds)",
        passed,
        converged=len(seconds),
        corrupt=corrupt,
        resets=resets,
        flips=flips,
        storm_connections_per_s=round(storm, 2),
        **{f"seconds_{n}": round(v, 2) for n, v in enumerate(seconds.values())},
    )
    assert len(seconds) == len(faults)
    assert flips >= 1 and resets >= 1
    assert corrupt == 0
    assert exact == 2
    assert verify_ok == 2, verified
    assert storm <= STORM_LIMIT
