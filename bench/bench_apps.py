"""The apps as a person meets them: whole `peer` processes, and a big history import.

Run with `make bench`, or `.venv/bin/python bench/bench_apps.py [--n N] [--runs R] [--json]`.

In a fresh home in a temporary directory, it times:

1. `peer history import` of an N-entry zsh extended history (some commands multi-line),
   as one process: entries/s, start-up and view update included; then the same import
   again (which must add nothing);
2. `peer history add -- ...` and `peer kv set K V` as whole processes (what a shell
   hook pays per command): the median of R runs, target under 300 ms;
3. `peer kv get` as a whole process on a store holding N kv records (written in bulk
   through the Python API): median of R runs, target under 300 ms (the view is read,
   the log is not replayed); and `peer store rebuild` of those views (records/s).

Progress goes to stderr, the table (or `--json`) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peer.home import Home
from peer.node import Node

PROCESS_TARGET_MS = 300


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peer_command() -> list[str]:
    """The installed `peer` script beside this Python (what a user runs), else -m."""
    script = Path(sys.executable).with_name("peer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "peer.cli"]


def run_peer(home: Path, *args: str) -> float:
    """Run one `peer` process; its wall time in seconds (fails loudly if it fails)."""
    env = {k: v for k, v in os.environ.items() if k != "PEER_HOME"}
    started = time.perf_counter()
    done = subprocess.run(
        [*peer_command(), "--home", str(home), *args],
        capture_output=True,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"peer {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return elapsed


def median_ms(home: Path, runs: int, *args: str) -> float:
    return statistics.median(run_peer(home, *args) for _ in range(runs)) * 1000


def write_zsh_history(path: Path, n: int) -> None:
    """N entries of zsh extended history, one in 50 spanning three lines."""
    start = 1_700_000_000
    with path.open("w") as handle:
        for i in range(n):
            command = (
                f"git commit -m 'change {i}'"
                if i % 50
                else f"for x in a b; do\\\n  echo {i} $x\\\ndone"
            )
            handle.write(f": {start + i}:{i % 7};{command}\n")


def bench_import(home: Path, workdir: Path, n: int) -> dict[str, float]:
    path = workdir / ".zsh_history"
    write_zsh_history(path, n)
    log(f"importing a {n:,}-entry zsh history")
    first = run_peer(home, "history", "import", str(path), "--format", "zsh")
    log(f"  {n / first:,.0f} entries/s ({first:.2f} s); importing it again")
    again = run_peer(home, "history", "import", str(path), "--format", "zsh")
    return {"import_s": first, "import_rate": n / first, "reimport_s": again}


async def fill_kv(home: Path, n: int) -> tuple[float, float]:
    """N kv sets through the Python API (bulk); then a full rebuild. Both in seconds."""
    node = await Node.open(Home(home))
    try:
        started = time.perf_counter()
        async for _ in node.kv.set_many((f"key{i}", b"value %d" % i) for i in range(n)):
            pass
        filled = time.perf_counter() - started
        started = time.perf_counter()
        await node.views.rebuild()
        rebuilt = time.perf_counter() - started
    finally:
        await node.close()
    return filled, rebuilt


def bench(n: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="peer-bench-apps-") as tmp:
        workdir = Path(tmp)
        home = workdir / "home"
        run_peer(home, "init", "--name", "bench")
        results: dict[str, Any] = {"entries": n, "runs": runs}
        results.update(bench_import(home, workdir, n))
        log(f"timing `peer history add` and `peer kv set`, {runs} runs each")
        results["history_add_ms"] = median_ms(home, runs, "history", "add", "--", "make", "test")
        results["kv_set_ms"] = median_ms(home, runs, "kv", "set", "greeting", "hello")
        kv_home = workdir / "kv-home"
        run_peer(kv_home, "init", "--name", "kv")
        log(f"writing {n:,} kv records")
        filled, rebuilt = asyncio.run(fill_kv(kv_home, n))
        results["kv_fill_rate"] = n / filled
        results["rebuild_rate"] = n / rebuilt
        log(f"timing `peer kv get` on {n:,} kv records, {runs} runs")
        results["kv_get_ms"] = median_ms(kv_home, runs, "kv", "get", f"key{n // 2}")
        shutil.rmtree(workdir / "home", ignore_errors=True)
    return results


def table(r: dict[str, Any]) -> str:
    def verdict(ms: float) -> str:
        return "ok" if ms < PROCESS_TARGET_MS else "OVER"

    rows = [
        (
            f"history import, {r['entries']:,} zsh entries",
            f"{r['import_rate']:,.0f} entries/s",
            f"{r['import_s']:.2f} s",
        ),
        ("  the same file again (adds nothing)", f"{r['reimport_s']:.2f} s", ""),
        (
            "peer history add (process, median)",
            f"{r['history_add_ms']:.0f} ms",
            verdict(r["history_add_ms"]),
        ),
        ("peer kv set (process, median)", f"{r['kv_set_ms']:.0f} ms", verdict(r["kv_set_ms"])),
        (
            f"peer kv get, {r['entries']:,} kv records",
            f"{r['kv_get_ms']:.0f} ms",
            verdict(r["kv_get_ms"]),
        ),
        ("kv set_many + view (API)", f"{r['kv_fill_rate']:,.0f} records/s", ""),
        ("store rebuild of the kv view", f"{r['rebuild_rate']:,.0f} records/s", ""),
    ]
    width = max(len(row[0]) for row in rows)
    lines = [f"{'apps (target < 300 ms per process)':<{width}}  {'result':>18}  note"]
    lines += [f"{name:<{width}}  {value:>18}  {note}" for name, value, note in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="history entries and kv records")
    parser.add_argument("--runs", type=int, default=7, help="process runs per median")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = bench(args.n, args.runs)
    print(json.dumps(results, sort_keys=True) if args.json else table(results))


if __name__ == "__main__":
    main()
