"""Sync throughput between two processes next to the raw SQLite ceiling; no-op sync latency.

Run with `make bench` (after bench_store.py), or
`.venv/bin/python bench/bench_sync.py [--n N] [--runs R] [--json] [--skip-noop] [--profile]`.

1. Initial sync. Node A is a separate process (bench/sync_node.py) serving a store of N records
   with 256-byte payloads in 20 logs (4 hosts x 5 tags, as in research/limits.md) over plaintext
   gRPC on 127.0.0.1. This process times `sync_with(B, PeerClient(A), batch=1000)` into an empty
   store B, from the call to its return (connection, index, pull, every commit).
2. The ceiling: stdlib `sqlite3.executemany` of the same rows into the same schema, WAL +
   synchronous=NORMAL, a commit per 1000 rows (`bench_store.bench_ceiling`, the same code).
   1 and 2 alternate within every run (their order flips from run to run), because the machine
   is shared and noisy; medians over the runs are reported, and the ratio of the medians.
3. No-op sync: A holds 1M records in 100 logs (10 hosts x 10 tags), B a file copy of A, so
   there is nothing to transfer; `sync_with(B, A)` is timed repeatedly on one open channel
   (median and p95), after one untimed sync that opens the connection (shown as "first").

With two or more CPUs, node A is pinned to the first and this process (node B) to the second
(`os.sched_setaffinity`; research/limits.md measured +8-16 % end to end from it); `--no-pin`
turns that off. A is built before anything is timed; nothing is cached across invocations.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_store import (
    COMMIT_EVERY,
    PAYLOAD_BYTES,
    Clock,
    Timing,
    as_row,
    bench_blobs,
    bench_ceiling,
    bench_sha256,
    log,
    positive,
)

from peer.client import ClientTls, PeerClient
from peer.crypto import Author, SigningKey, SyncKey, generate_tls_identity
from peer.records import Head, LogKey
from peer.store import Store
from peer.store.rows import from_row
from peer.sync import SyncSummary, sync_with
from peer.trust import Credentials

SYNC_BATCH = 1000  # max_batch asked of A: records per message (cut to end on a signed record)
HOSTS, TAGS = 4, 5  # initial sync: 20 logs
NOOP_HOSTS, NOOP_TAGS = 10, 10  # no-op sync: 100 logs
SYNC_TARGET = 0.7  # initial sync rate / ceiling rate (SPEC §9)
NOOP_TARGET_MS = 20.0  # no-op sync (SPEC §9)
READ_CHUNK = 10_000
NODE_SCRIPT = Path(__file__).resolve().with_name("sync_node.py")
READY_TIMEOUT_S = 120.0
_NAMES = {
    "sync": "initial sync",
    "ceiling": "sqlite3 ceiling",
    "sha256": "sha256 reference",
    "blobs": "sqlite3 blobs",
}


# -- placement -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPU each node runs on (None: not pinned, and why)."""

    node_a: int | None
    node_b: int | None
    why_not: str = ""

    def describe(self) -> str:
        if self.node_a is None:
            return f"not pinned ({self.why_not})"
        return (
            f"node A (child) pinned to CPU {self.node_a}, "
            f"node B (this process) to CPU {self.node_b}"
        )


def place(pin: bool) -> Placement:
    """Pin this process (node B) to the second usable CPU; A gets the first."""
    if not pin:
        return Placement(None, None, "--no-pin")
    if not hasattr(os, "sched_setaffinity"):
        return Placement(None, None, "no sched_setaffinity on this platform")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Placement(None, None, f"only {len(cpus)} CPU available")
    os.sched_setaffinity(0, {cpus[1]})
    return Placement(cpus[0], cpus[1])


# -- node A, the child process ---------------------------------------------------------------


class NodeA:
    """bench/sync_node.py serving one store; stopped by closing its stdin."""

    def __init__(self, process: subprocess.Popen[str], port: int, tls: ClientTls | None) -> None:
        self.process = process
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.tls = tls
        self._ticks = os.sysconf("SC_CLK_TCK")

    def client(self) -> PeerClient:
        return PeerClient(self.target, tls=self.tls)

    def cpu_seconds(self) -> float:
        """The child's CPU time so far (user + system, all threads), from /proc."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime


def make_tls(workdir: Path) -> ClientTls:
    """Identities for A (served) and B (this process), as files for the child."""
    a_key, a_cert = generate_tls_identity()
    b_key, b_cert = generate_tls_identity()
    for name, data in (("a.key", a_key), ("a.crt", a_cert), ("b.crt", b_cert)):
        (workdir / name).write_bytes(data)
    return ClientTls(Credentials(b_key, b_cert), a_cert)


@contextlib.asynccontextmanager
async def node_a(db: Path, cpu: int | None, tls: bool) -> AsyncIterator[NodeA]:
    command = [sys.executable, str(NODE_SCRIPT), str(db)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    client_tls = make_tls(db.parent) if tls else None
    if tls:
        command += ["--tls", str(db.parent)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, process.stdout.readline),
            READY_TIMEOUT_S,
        )
        if not line.startswith("ready "):
            raise RuntimeError(f"node A did not start (said {line.strip()!r})")
        yield NodeA(process, int(line.split()[1]), client_tls)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- building stores -------------------------------------------------------------------------


def split(n: int, parts: int) -> list[int]:
    """`n` as `parts` near-equal counts."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def payloads(count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield os.urandom(PAYLOAD_BYTES)


async def build_store(path: Path, n: int, hosts: int, tags: int) -> dict[LogKey, Head]:
    """A store of `n` records in hosts x tags logs, each log written by `append_many`."""
    sync_key = SyncKey.generate()
    authors = [Author(SigningKey.generate(), sync_key) for _ in range(hosts)]
    counts = iter(split(n, hosts * tags))
    store = await Store.open(path)
    try:
        for author in authors:
            await store.add_host(author.signing.public_key)
            for t in range(tags):
                async for _ in store.append_many(author, f"tag{t}", payloads(next(counts))):
                    pass
        index = await store.index()
    finally:
        await store.close()  # the last connection closing checkpoints the WAL into the file
    if sum(head.next_idx for head in index.values()) != n:
        raise RuntimeError("the built store does not hold the records written")
    return index


async def read_rows(path: Path, index: Mapping[LogKey, Head]) -> list[tuple[object, ...]]:
    """Every record as a `records` row, log by log in index order (B's arrival order)."""
    rows: list[tuple[object, ...]] = []
    store = await Store.open(path)
    try:
        for log_key, head in sorted(index.items()):
            start = 0
            while start < head.next_idx:
                chunk = await store.read_range(log_key.host, log_key.tag, start, READ_CHUNK)
                rows += (as_row(record) for record in chunk)
                start += len(chunk)
    finally:
        await store.close()
    return rows


# -- measurements ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncTiming:
    timing: Timing
    a_cpu: float  # node A's CPU seconds during the sync
    b_threads: dict[str, float]  # node B's CPU seconds during the sync, per kind of thread


async def timed_sync(node: NodeA, path: Path, expected: Mapping[LogKey, Head]) -> SyncTiming:
    """Sync an empty store at `path` from node A; check it then equals A."""
    n = sum(head.next_idx for head in expected.values())
    store = await Store.open(path)
    try:
        a_cpu = node.cpu_seconds()
        threads = thread_cpu()
        clock = Clock()
        async with node.client() as client:
            summary = await sync_with(store, client, batch=SYNC_BATCH)
        timing = clock.stop(summary.pulled)
        a_cpu = node.cpu_seconds() - a_cpu
        threads = {kind: cpu - threads.get(kind, 0.0) for kind, cpu in thread_cpu().items()}
        index = await store.index()
    finally:
        await store.close()
    if summary.pulled != n or summary.pushed or index != dict(expected):
        raise RuntimeError(f"sync pulled {summary.pulled} of {n} records, or B differs from A")
    return SyncTiming(timing, a_cpu, threads)


def thread_cpu() -> dict[str, float]:
    """This process's CPU seconds so far per kind of thread, from /proc: the event loop
    (main thread), and the others by name (aiosqlite's writer shows as "python", grpc's
    as "event_engine" or similar). Shows where node B spends a record's time."""
    kinds: dict[str, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        if task.name == str(os.getpid()):
            kind = "event loop"
        else:
            kind = "sqlite writer (aiosqlite)" if name == "python" else f"{name} threads"
        kinds[kind] = kinds.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return kinds


async def profile_sync(node: NodeA, path: Path, expected: Mapping[LogKey, Head]) -> str:
    """One extra initial sync under cProfile (this process: node B's event loop thread)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await timed_sync(node, path, expected)
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


async def initial_sync(
    workdir: Path, n: int, runs: int, placement: Placement, profile: bool, tls: bool
) -> dict[str, Any]:
    log(f"building node A: {n:,} records x {PAYLOAD_BYTES} B in {HOSTS * TAGS} logs")
    started = time.perf_counter()
    a_path = workdir / "a.db"
    index = await build_store(a_path, n, HOSTS, TAGS)
    rows = await read_rows(a_path, index)
    records = [from_row(row) for row in rows]
    log(f"  built in {time.perf_counter() - started:.1f} s")
    gc.collect()
    gc.freeze()  # the fixture rows are not the sync's garbage to scan
    results: list[dict[str, Timing]] = []
    a_cpu: list[float] = []
    b_threads: list[dict[str, float]] = []
    profile_text = ""
    async with node_a(a_path, placement.node_a, tls) as node:
        for run in range(1, runs + 1):
            log(f"run {run}/{runs}")
            timings: dict[str, Timing] = {}
            for key in ("sync", "ceiling") if run % 2 else ("ceiling", "sync"):
                path = workdir / f"{key}-{run}.db"
                if key == "sync":
                    measured = await timed_sync(node, path, index)
                    timings[key] = measured.timing
                    a_cpu.append(measured.a_cpu)
                    b_threads.append(measured.b_threads)
                else:
                    timings[key] = bench_ceiling(path, rows)
                done = timings[key]
                log(f"  {_NAMES[key]:<16} {done.rate:>10,.0f} rec/s  ({done.wall:.2f} s)")
                for leftover in workdir.glob(f"{key}-{run}.db*"):
                    leftover.unlink()
            timings["sha256"] = bench_sha256(records)
            timings["blobs"] = bench_blobs(workdir / f"blobs-{run}.db", records)
            for key in ("sha256", "blobs"):
                done = timings[key]
                log(f"  {_NAMES[key]:<16} {done.rate:>10,.0f} rec/s  ({done.wall:.2f} s)")
            for leftover in workdir.glob(f"blobs-{run}.db*"):
                leftover.unlink()
            results.append(timings)
        if profile:
            log("profiling one more initial sync (node B, this process)")
            profile_text = await profile_sync(node, workdir / "profile.db", index)
    gc.unfreeze()
    rate = {key: statistics.median(r[key].rate for r in results) for key in _NAMES}
    return {
        "n": n,
        "logs": f"{HOSTS} hosts x {TAGS} tags",
        "batch": SYNC_BATCH,
        "ceiling_commit_every": COMMIT_EVERY,
        "measurements": {
            key: {
                "median_rate": rate[key],
                "median_wall_s": statistics.median(r[key].wall for r in results),
                "median_cpu_s": statistics.median(r[key].cpu for r in results),
                "rates": [r[key].rate for r in results],
                "wall_s": [r[key].wall for r in results],
            }
            for key in _NAMES
        },
        "node_a_median_cpu_s": statistics.median(a_cpu),
        "node_b_thread_cpu_us_per_record": {
            kind: statistics.median(t.get(kind, 0.0) for t in b_threads) / n * 1e6
            for kind in sorted({kind for t in b_threads for kind in t})
        },
        "ratio": rate["sync"] / rate["ceiling"],
        "ratio_over_blobs": rate["sync"] / rate["blobs"],
        "target_ratio": SYNC_TARGET,
        "target_met": rate["sync"] / rate["ceiling"] >= SYNC_TARGET,
        "profile": profile_text,
    }


async def noop_sync(
    workdir: Path, n: int, syncs: int, placement: Placement, tls: bool
) -> dict[str, Any]:
    logs = NOOP_HOSTS * NOOP_TAGS
    log(f"no-op sync: building node A with {n:,} records in {logs} logs")
    started = time.perf_counter()
    a_path, b_path = workdir / "noop-a.db", workdir / "noop-b.db"
    index = await build_store(a_path, n, NOOP_HOSTS, NOOP_TAGS)
    build_s = time.perf_counter() - started
    for suffix in ("", "-wal"):  # the store is closed, so there is no -wal; copy one if there is
        source = Path(f"{a_path}{suffix}")
        if source.exists():
            shutil.copy(source, f"{b_path}{suffix}")
    log(f"  built and copied in {time.perf_counter() - started:.1f} s")
    times: list[float] = []
    async with node_a(a_path, placement.node_a, tls) as node:
        store = await Store.open(b_path)
        try:
            if await store.index() != index:
                raise RuntimeError("the copy of A does not hold A's index")
            async with node.client() as client:
                clock = Clock()
                check(await sync_with(store, client, batch=SYNC_BATCH))
                first = clock.stop(0).wall
                for _ in range(syncs):
                    clock = Clock()
                    summary = await sync_with(store, client, batch=SYNC_BATCH)
                    times.append(clock.stop(0).wall)
                    check(summary)
        finally:
            await store.close()
    ordered = sorted(times)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
    median = statistics.median(times)
    log(f"  median {median * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms over {syncs} syncs")
    return {
        "n": n,
        "logs": logs,
        "build_s": build_s,
        "syncs": syncs,
        "first_ms": first * 1e3,
        "median_ms": median * 1e3,
        "p95_ms": p95 * 1e3,
        "times_ms": [t * 1e3 for t in times],
        "target_ms": NOOP_TARGET_MS,
        "target_met": median * 1e3 < NOOP_TARGET_MS,
    }


def check(summary: SyncSummary) -> None:
    if summary.pulled or summary.pushed or summary.diverged:
        raise RuntimeError(f"a no-op sync moved records: {summary}")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, summarised as plain data (what `--json` prints)."""
    started = time.perf_counter()
    placement = place(not args.no_pin)
    log(f"placement: {placement.describe()}")
    log(f"transport: {'plaintext' if args.insecure else 'mutual TLS'} over loopback")
    summary: dict[str, Any] = {
        "runs": args.runs,
        "payload_bytes": PAYLOAD_BYTES,
        "placement": placement.describe(),
        "transport": "plaintext" if args.insecure else "mutual TLS",
        "tmpdir": tempfile.gettempdir(),
    }
    with tempfile.TemporaryDirectory(prefix="peer-bench-sync-") as tmp:
        summary["initial"] = await initial_sync(
            Path(tmp), args.n, args.runs, placement, args.profile, not args.insecure
        )
    if not args.skip_noop:
        with tempfile.TemporaryDirectory(prefix="peer-bench-noop-") as tmp:
            summary["noop"] = await noop_sync(
                Path(tmp), args.noop_n, args.noop_syncs, placement, not args.insecure
            )
    summary["wall_s"] = time.perf_counter() - started
    return summary


def table(summary: Mapping[str, Any]) -> str:
    """The summary as a table a person reads."""
    initial = summary["initial"]
    m = initial["measurements"]
    lines = [
        f"peer sync bench: N={initial['n']:,} records x {summary['payload_bytes']} B payload "
        f"in {initial['logs']}, median of {summary['runs']} runs (tmp: {summary['tmpdir']})",
        f"placement: {summary['placement']}; transport: {summary['transport']}",
        "",
        f"{'measurement':<18}{'rate rec/s':>12}{'wall s':>9}{'cpu s':>8}  per run rec/s",
    ]
    for key, name in _NAMES.items():
        row = m[key]
        per_run = " ".join(f"{rate:,.0f}" for rate in row["rates"])
        lines.append(
            f"{name:<18}{row['median_rate']:>12,.0f}{row['median_wall_s']:>9.2f}"
            f"{row['median_cpu_s']:>8.2f}  {per_run}"
        )
    met = "met" if initial["target_met"] else "MISSED"
    lines += [
        "",
        f"initial sync: node A in a child process, B here, sync_with(batch={initial['batch']}) "
        "over loopback gRPC;",
        f"  cpu s is node B's; node A used {initial['node_a_median_cpu_s']:.2f} s (median)",
        "  node B's CPU per record, by thread: "
        + ", ".join(
            f"{kind} {us:.1f} us"
            for kind, us in initial["node_b_thread_cpu_us_per_record"].items()
            if us >= 0.05
        ),
        f"  the ceiling's CPU per record: {m['ceiling']['median_cpu_s'] / initial['n'] * 1e6:.1f}"
        " us",
        f"ceiling: stdlib sqlite3 executemany, one commit per {initial['ceiling_commit_every']} "
        "rows, WAL/NORMAL",
        f"sync / ceiling: {initial['ratio']:.3f} (target >= {initial['target_ratio']}: {met})",
        f"sync / sqlite3 blobs (the same bytes, a blob per {initial['ceiling_commit_every']} "
        f"records): {initial['ratio_over_blobs']:.3f}",
    ]
    noop = summary.get("noop")
    if noop is not None:
        met = "met" if noop["target_met"] else "MISSED"
        lines += [
            "",
            f"no-op sync: {noop['n']:,} records in {noop['logs']} logs on both sides "
            f"(built in {noop['build_s']:.1f} s), {noop['syncs']} syncs on one channel",
            f"  median {noop['median_ms']:.1f} ms   p95 {noop['p95_ms']:.1f} ms   "
            f"first (opens the connection) {noop['first_ms']:.1f} ms",
            f"  target median < {noop['target_ms']:.0f} ms: {met}",
        ]
    lines.append(f"total wall time: {summary['wall_s']:.1f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=positive, default=100_000, help="records to sync per run")
    parser.add_argument("--runs", type=positive, default=3, help="runs (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--skip-noop", action="store_true", help="skip the 1M-record no-op sync")
    parser.add_argument("--noop-n", type=positive, default=1_000_000, help="no-op store size")
    parser.add_argument("--noop-syncs", type=positive, default=20, help="timed no-op syncs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    parser.add_argument("--insecure", action="store_true", help="plaintext instead of mTLS")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one more sync (node B) to stderr"
    )
    args = parser.parse_args(argv)
    summary = asyncio.run(bench(args))
    profile = summary["initial"].pop("profile")
    if profile:
        log(profile)
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(summary))


if __name__ == "__main__":
    main()
