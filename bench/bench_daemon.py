"""The daemon: live propagation latency (from a program, and from the CLI), and peak
memory during a large initial sync.

Run with `make bench` (after the store and sync benchmarks), or
`.venv/bin/python bench/bench_daemon.py [--appends N] [--hops N] [--records N] [--only
PART] [--json]`.

1. Live latency. Two `peer serve` daemons, A and B, as separate processes on loopback,
   pinning each other (mutual TLS). This process holds a `peer.api` subscription on B
   and appends on A through A's local API, one record at a time; each latency is from
   the append call to the record arriving at the subscriber on B (A's commit, A's live
   feed, A -> B Subscribe stream, B's verification and commit, B's feed, B's local
   socket). The next append waits for the delivery. Target (SPEC §9): p50 < 10 ms,
   p99 < 50 ms.
2. First hop. The same pair, with a subscriber on B; `peer append` (the CLI, a process
   of its own writing A's store directly) appends one record at a time. Each latency
   is from the `peer append` process returning to the subscriber on B holding the
   record (negative: B held it before the CLI process had even exited, since the CLI
   rings A's doorbell right after its commit), and from the record's timestamp (taken
   in the CLI's append transaction: the write itself, without the CLI's start and
   exit) to the same delivery. Measured with the doorbell, then without
   it (its socket removed: A's daemon sees the commit only at its next `data_version`
   poll, every 50 ms). Target: p50 < 10 ms with the doorbell.
3. Peak RSS. A holds N records (1M by default: 256-byte payloads, 100 logs); B starts
   empty and syncs them all by itself. B's peak resident memory (VmHWM, read from
   /proc after the sync completed) is the figure; target < 250 MB. The sync's duration
   and rate are printed beside it.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import log, positive

from peer import api
from peer.home import Home
from peer.node import Node
from peer.watch import doorbell_path

LATENCY_P50_MS, LATENCY_P99_MS = 10.0, 50.0
FIRST_HOP_P50_MS = 10.0
Arrivals = asyncio.Queue[tuple[float, int, api.Message]]
RSS_TARGET_MB = 250.0
PAYLOAD = b"x" * 256
HOSTS_TAGS = 100  # logs of the RSS run (all written by A's host: 100 tags)
READY_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 1800.0


def peer_cli(home: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "peer.cli", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"peer {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Daemon:
    """`peer serve` of a home as a child process, stopped with SIGTERM."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        command = [sys.executable, "-m", "peer.cli", "--home", str(home), "serve"]
        command += ["--listen", f"127.0.0.1:{port}", "--json"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if not self.process.stdout.readline():
            raise RuntimeError(f"the daemon of {home} did not start")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc (not Linux?)")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def make_pair(root: Path) -> tuple[Path, Path, list[int]]:
    """Two homes with one sync key that pin each other at fixed loopback ports."""
    a, b = root / "a", root / "b"
    peer_cli(a, "init", "--name", "a")
    peer_cli(b, "init", "--name", "b", "--key", peer_cli(a, "key", "export").strip())
    ports = free_ports(2)
    peer_cli(a, "peers", "add", peer_cli(b, "id").strip(), f"127.0.0.1:{ports[1]}")
    peer_cli(b, "peers", "add", peer_cli(a, "id").strip(), f"127.0.0.1:{ports[0]}")
    return a, b, ports


async def held(home: Path) -> int:
    async with await api.connect(home) as node:
        return sum((await node.get_index()).values())


# -- 1. live latency ----------------------------------------------------------------------


async def measure_latency(a: Path, b: Path, appends: int) -> list[float]:
    """Milliseconds from append on A to delivery on B, one record at a time."""
    latencies: list[float] = []
    async with await api.connect(a) as on_a, await api.connect(b) as on_b:
        await wait_linked(on_b)
        follow = on_b.subscribe(tags=["live"], since=await on_b.get_index())
        try:
            for n in range(appends):
                sent = time.perf_counter()
                await on_a.append("live", PAYLOAD)
                message = await asyncio.wait_for(anext(follow), 10)
                latencies.append((time.perf_counter() - sent) * 1000)
                if message.idx != n:
                    raise RuntimeError(f"expected idx {n}, got {message.idx}")
                if (n + 1) % 200 == 0:
                    log(f"  {n + 1}/{appends} appends")
        finally:
            await follow.aclose()
    return latencies


async def wait_linked(node: api.Connection) -> None:
    """Until the daemon's link to its one peer is live (the streams are open)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        peers = (await node.status())["peers"]
        if peers and peers[0]["link"] and peers[0]["link"]["live"]:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the daemons did not connect")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


T = TypeVar("T")


def on_a_pair(root: Path, measure: Callable[[Path, Path], Awaitable[T]]) -> T:
    """Run `measure(a, b)` against two daemons started for it, stopped afterwards."""
    a, b, ports = make_pair(root)
    daemons = [Daemon(a, ports[0]), Daemon(b, ports[1])]
    try:
        return asyncio.run(measure(a, b))
    finally:
        for daemon in daemons:
            daemon.stop()


def run_latency(root: Path, appends: int) -> dict[str, Any]:
    latencies = on_a_pair(root, lambda a, b: measure_latency(a, b, appends))
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    return {
        "appends": appends,
        "p50_ms": round(p50, 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "pass": p50 < LATENCY_P50_MS and p99 < LATENCY_P99_MS,
    }


# -- 2. first hop: `peer append` -> a live neighbour ---------------------------------------


async def measure_first_hops(a: Path, b: Path, hops: int) -> dict[str, Any]:
    """`hops` CLI appends on A with A's doorbell, then `hops` without it."""
    async with await api.connect(b) as on_b:
        await wait_linked(on_b)
        arrivals: Arrivals = asyncio.Queue()
        reader = asyncio.create_task(_stamp(on_b, arrivals))
        try:
            rung = await first_hops(a, hops, arrivals, 0)
            serving = Home(a).serving()
            assert serving is not None
            doorbell_path(serving.socket).unlink()  # the CLI's ring now finds nobody
            polled = await first_hops(a, hops, arrivals, hops)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return {"doorbell": rung, "poll": polled}


async def _stamp(node: api.Connection, arrivals: Arrivals) -> None:
    """Every record of tag "hop" B stores, with the moment the subscriber got it (by
    the monotonic clock, and by the wall clock that record timestamps follow)."""
    async for message in node.subscribe(tags=["hop"], since=await node.get_index()):
        arrivals.put_nowait((time.perf_counter(), time.time_ns(), message))


async def first_hops(a: Path, hops: int, arrivals: Arrivals, first_idx: int) -> dict[str, Any]:
    latencies: list[float] = []
    from_write: list[float] = []
    walls: list[float] = []
    for n in range(hops):
        started, returned = await asyncio.to_thread(_timed_append, a)
        arrived, arrived_ns, message = await asyncio.wait_for(arrivals.get(), 10)
        if message.idx != first_idx + n:
            raise RuntimeError(f"expected idx {first_idx + n}, got {message.idx}")
        latencies.append((arrived - returned) * 1000)
        from_write.append((arrived_ns - message.timestamp) / 1e6)
        walls.append((returned - started) * 1000)
        await asyncio.sleep(0.01)  # each append at another point of the poll's period
    return {
        "appends": hops,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "before_return": sum(1 for latency in latencies if latency < 0),
        "from_write_p50_ms": round(statistics.median(from_write), 2),
        "from_write_p99_ms": round(percentile(from_write, 0.99), 2),
        "cli_p50_ms": round(statistics.median(walls), 1),
    }


def _timed_append(home: Path) -> tuple[float, float]:
    """When `peer append` started, and when its process had exited."""
    started = time.perf_counter()
    peer_cli(home, "append", "--tag", "hop", PAYLOAD.decode())
    return started, time.perf_counter()


def run_first_hops(root: Path, hops: int) -> dict[str, Any]:
    hop = on_a_pair(root, lambda a, b: measure_first_hops(a, b, hops))
    hop["pass"] = hop["doorbell"]["p50_ms"] < FIRST_HOP_P50_MS
    return hop


# -- 3. peak RSS during a large initial sync ------------------------------------------------


async def fill(home: Path, records: int) -> None:
    """`records` records in HOSTS_TAGS logs of the home's host, written in bulk."""
    node = await Node.open(Home(home))
    try:
        per_log = records // HOSTS_TAGS
        for n in range(HOSTS_TAGS):
            async for _ in node.append_many(f"t{n:03}", (PAYLOAD for _ in range(per_log))):
                pass
            if (n + 1) % 10 == 0:
                log(f"  A holds {(n + 1) * per_log:,} records")
    finally:
        await node.close()


def run_rss(root: Path, records: int) -> dict[str, Any]:
    a, b, ports = make_pair(root)
    log(f"writing {records:,} records on A (not timed)")
    asyncio.run(fill(a, records))
    total = records // HOSTS_TAGS * HOSTS_TAGS
    daemon_a = Daemon(a, ports[0])
    started = time.perf_counter()
    daemon_b = Daemon(b, ports[1])
    try:
        count = asyncio.run(wait_for_records(b, total))
        seconds = time.perf_counter() - started
        peak = daemon_b.peak_rss_mb()
    finally:
        daemon_b.stop()
        daemon_a.stop()
    return {
        "records": count,
        "sync_s": round(seconds, 1),
        "rate_per_s": round(count / seconds),
        "peak_rss_mb": round(peak, 1),
        "pass": peak < RSS_TARGET_MB,
    }


async def wait_for_records(home: Path, total: int) -> int:
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    count = 0
    last_report = 0
    while time.monotonic() < deadline:
        count = await held(home)
        if count >= total:
            return count
        if count - last_report >= 100_000:
            last_report = count
            log(f"  B holds {count:,} records")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"B holds {count} of {total} records after {SYNC_TIMEOUT_S} s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appends", type=positive, default=1000)
    parser.add_argument("--hops", type=positive, default=100, help="CLI appends, each way")
    parser.add_argument("--records", type=positive, default=1_000_000)
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parts = args.only or list(PARTS)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        if "latency" in parts:
            log(f"live latency: {args.appends} appends on A, delivered to a subscriber on B")
            results["latency"] = run_latency(Path(tmp) / "live", args.appends)
        if "first_hop" in parts:
            log(f"first hop: {args.hops} `peer append` on A, each way, to a subscriber on B")
            results["first_hop"] = run_first_hops(Path(tmp) / "hop", args.hops)
        if "rss" in parts:
            log(f"peak RSS: B syncs {args.records:,} records from A")
            results["rss"] = run_rss(Path(tmp) / "rss", args.records)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    for part, result in results.items():
        print(SUMMARIES[part](result))


PARTS = ("latency", "first_hop", "rss")
VERDICT = {True: "pass", False: "FAIL"}


def _latency_line(latency: dict[str, Any]) -> str:
    return (
        f"live latency A -> B ({latency['appends']} appends): p50 {latency['p50_ms']} ms "
        f"(target < {LATENCY_P50_MS:g}), p99 {latency['p99_ms']} ms "
        f"(target < {LATENCY_P99_MS:g}), max {latency['max_ms']} ms  "
        f"[{VERDICT[latency['pass']]}]"
    )


def _first_hop_line(hop: dict[str, Any]) -> str:
    def way(figures: dict[str, Any]) -> str:
        return (
            f"from the CLI returning p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms "
            f"({figures['before_return']} of {figures['appends']} held before it returned); "
            f"from the write p50 {figures['from_write_p50_ms']} ms, "
            f"p99 {figures['from_write_p99_ms']} ms; `peer append` p50 {figures['cli_p50_ms']} ms"
        )

    return (
        f"first hop, `peer append` on A -> live subscriber on B "
        f"({hop['doorbell']['appends']} appends each way):\n"
        f"  doorbell:  {way(hop['doorbell'])}  (target p50 < {FIRST_HOP_P50_MS:g} ms) "
        f"[{VERDICT[hop['pass']]}]\n"
        f"  poll only: {way(hop['poll'])}"
    )


def _rss_line(rss: dict[str, Any]) -> str:
    return (
        f"initial sync of {rss['records']:,} records by the daemon: {rss['sync_s']} s "
        f"({rss['rate_per_s']:,}/s), peak RSS of the receiving daemon "
        f"{rss['peak_rss_mb']} MB (target < {RSS_TARGET_MB:g})  [{VERDICT[rss['pass']]}]"
    )


SUMMARIES = {"latency": _latency_line, "first_hop": _first_hop_line, "rss": _rss_line}


if __name__ == "__main__":
    main()
