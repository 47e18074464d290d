"""D3: a 1 Mbit/s link (`tc ... tbf rate 1mbit`; netem is not available here, M15)
between two `peer serve` daemons in network namespaces. The sender holds N records of
~300 B before the daemons start; the receiver must get all of them with no storm of
deadline-exceeded retries (at most one retry per batch), its count never going back.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import Report, Tier
from tests.reliability.netfaults import (
    Daemon,
    NetnsNetwork,
    cli,
    init_homes,
    netns_unavailable,
    write_config,
)

RATE = "1mbit"
RECORD_BYTES = 300
BATCH = 1000
SETTINGS = {"interval": 600.0, "backoff_initial": 0.5, "backoff_max": 5.0, "batch": BATCH}
SAMPLE_S = 0.5


def _shape(namespace: str) -> None:
    command = ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0", "root"]
    command += ["tbf", "rate", RATE, "burst", "32kbit", "latency", "400ms"]
    done = subprocess.run(command, capture_output=True, timeout=10, check=False)
    if done.returncode != 0:
        pytest.skip(f"tc tbf unavailable: {done.stderr.decode().strip()}")


class Watch:
    """Samples the receiver's count and both links' failures. A retry is a failure
    after the link first got through (before that the other daemon is still starting)."""

    def __init__(self, daemons: list[Daemon]) -> None:
        self.daemons = daemons
        self.samples: list[int] = []
        self.retries = 0
        self.errors: list[str] = []
        self._failures = [0 for _ in daemons]
        self._through = [False for _ in daemons]

    async def until_held(self, count: int, started: float, limit_s: float) -> float | None:
        receiver = self.daemons[-1]
        for _ in range(int(limit_s / SAMPLE_S) + 1):
            status = await receiver.status()
            if status is not None:
                self.samples.append(
                    sum(log["next_idx"] for log in status["logs"] if log["tag"] == "t")
                )
            for i, daemon in enumerate(self.daemons):
                await self._note(i, daemon)
            if self.samples and self.samples[-1] >= count:
                return time.monotonic() - started
            if time.monotonic() - started > limit_s:
                break
            await asyncio.sleep(SAMPLE_S)  # the sampling period, not a synchronisation
        return None

    async def _note(self, i: int, daemon: Daemon) -> None:
        status = await daemon.status()
        link = (status or {}).get("peers", [{}])[0].get("link") or {}
        failures = int(link.get("failures") or 0)
        if self._through[i] and failures > self._failures[i]:
            self.retries += failures - self._failures[i]
            self.errors.append(f"{daemon.name}: {link.get('last_error')}")
        self._failures[i] = failures
        self._through[i] = self._through[i] or bool(link.get("connected") or link.get("live"))


async def test_d3_low_bandwidth_link(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    reason = netns_unavailable() or (None if shutil.which("tc") else "no `tc` command")
    if reason:
        pytest.skip(reason)
    count = tier.pick(1_500, 10_000)
    limit_s = tier.pick(60.0, 240.0)
    network = NetnsNetwork(2)
    daemons: list[Daemon] = []
    samples: list[int] = []
    failures_seen = 0
    errors: list[str] = []
    took: float | None = None
    try:
        await network.start()
        for namespace in network.names:  # each node's egress: both directions at 1 Mbit/s
            _shape(namespace)
        (home_a, id_a), (home_b, id_b) = await init_homes(tmp_path, ["a", "b"])
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        lines = ["".join(rng.choices(alphabet, k=RECORD_BYTES)) for _ in range(count)]
        await cli(home_a, "append", "--tag", "t", stdin="\n".join(lines) + "\n")
        write_config(home_a, SETTINGS, [(id_b, network.address(0, 1))])
        write_config(home_b, SETTINGS, [(id_a, network.address(1, 0))])
        a = Daemon("a", home_a, network.listen(0), network.prefix(0))
        b = Daemon("b", home_b, network.listen(1), network.prefix(1))
        daemons = [a, b]
        started = time.monotonic()
        for daemon in daemons:
            await daemon.start()
        watch = Watch(daemons)
        took = await watch.until_held(count, started, limit_s)
        samples, failures_seen, errors = watch.samples, watch.retries, watch.errors
        logs = "".join(d.stderr_text() for d in daemons)
    finally:
        for daemon in daemons:
            await daemon.kill()
        await network.close()
    deadline_errors = logs.lower().count("deadline") + sum("deadline" in e.lower() for e in errors)
    batches = -(-count // BATCH)
    monotonic = all(later >= earlier for earlier, later in itertools.pairwise(samples))
    completed = took is not None
    passed = completed and monotonic and failures_seen <= batches and deadline_errors <= batches
    megabytes = count * RECORD_BYTES / 1e6
    report(
        "sync over a 1 Mbit/s link (tbf) completes; no deadline-exceeded storm (<= 1 retry "
        "per batch); the receiver's progress is monotonic",
        f"{count:,} records x {RECORD_BYTES} B ({megabytes:.1f} MB) over {RATE}/s in "
        + (f"{took:.1f} s" if took is not None else f"NOT within {limit_s:.0f} s")
        + f"; {failures_seen} retries, {deadline_errors} deadline errors for {batches} batches; "
        f"progress monotonic over {len(samples)} samples: {monotonic}",
        passed,
        records=count,
        seconds=round(took, 1) if took is not None else None,
        retries=failures_seen,
        deadline_errors=deadline_errors,
        samples=len(samples),
    )
    assert completed, (samples[-5:], errors)
    assert monotonic, samples
    assert failures_seen <= batches and deadline_errors <= batches, errors
