"""The mesh at scale (issue 14): copies per record per node, echoes, hops, time to all.

Copies of each record received per node, echoes to the author, hops and the time until
every node holds a write, in simulation and with real daemons.

Run with `make bench` (last), or `.venv/bin/python bench/bench_mesh.py [--quick]
[--sim random:64,random:128,...] [--daemons full:3,...] [--sim-bulk N] [--sim-singles N]
[--daemon-bulk N] [--daemon-singles N] [--seed S] [--baseline OLD.json] [--json]`.

1. Simulation (tests/sim.py): N nodes of the real store, servicer, feed and mesh in one
   process over the in-memory Remote, as TOPOLOGY:N (random: degrees 4-8, seeded; full;
   ring; line). Each run is a child process of its own, so that its peak RSS, threads
   and open files are its own. Links run the daemon's interval (60 s) with a fast
   backoff. Workload: a bulk of `--sim-bulk` records of 256 B appended on node 0 in one
   transaction (as `peer append` reading stdin), until every store holds it and no copy
   is still crossing a link; then `--sim-singles` single appends on random nodes, one
   at a time on a quiet mesh, each until every node got it. Time to all: from a
   record's append until the last node got its first copy (counted where it crossed the
   Remote boundary; every store is checked after). Hops: the links the first copy to
   reach each node crossed (max over records).
2. Daemons (bench/mesh_daemons.py): `peer serve` processes on loopback, mutual TLS,
   pinned as TOPOLOGY:N (full meshes of 3, 5, 8, 12 and a ring of 8 by default), counting
   at the Remote boundary (bench/counted_daemon.py). Bulk: `peer append --tag bulk` of
   `--daemon-bulk` lines on node 0, timed from its first commit (the first record's
   timestamp) until a subscriber on every other daemon got its last record; singles:
   `peer append --tag single TEXT` on random nodes one after the other, each timed from
   the record's timestamp (taken in the append's transaction) until a subscriber on
   every daemon got it; the first hop until the first neighbour's subscriber got it,
   from that timestamp and (issue 14's measure) from `peer append` returning. CPU: all
   daemons' user+system time during the bulk.
3. The table on stdout, build/bench_mesh.json, and build/bench_mesh.png (copies per
   record and time to all against N; `--baseline` adds an earlier run's JSON, dashed:
   today's fan-out against the tree, say).

Then each target of issue 14 this run measured, and whether it held ("ok" or "MISS"):
copies <= 1.1 and no echoes in every row, the first hop < 10 ms, the largest full mesh
of daemons within 1.5x the 3-node bulk time, and CPU per record per daemon flat in N.
Default sizes take about 5 minutes on 2 cores; `--quick` about 30 s.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.sim
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_store (run as a module)
from bench_store import log, positive

from peer.settings import Schedule
from tests.sim import Sim, Topology, full_mesh, line, payloads, random_graph, ring, until

RECORD_BYTES = 256
QUIET_S = 0.5  # no copy crossed any link this long: the phase is over
SINGLE_QUIET_S = 0.1  # before each single append
SETTLE_S = 300.0
CONVERGE_S = 1800.0
RUN_TIMEOUT_S = 3 * 3600.0
BUILD = Path(__file__).resolve().parents[1] / "build"
# The daemon's interval (rounds are the safety net under the live streams) and a fast
# backoff, so that a stream cut off as too slow is back within a second.
SCHEDULE = Schedule(interval=60.0, backoff_initial=0.05, backoff_max=1.0)
DEFAULTS = {
    "sim": "random:64,random:128,random:256,full:32,ring:64,line:64",
    "daemons": "full:3,full:5,full:8,full:12,ring:8",
    "sim_bulk": 1000,
    "sim_singles": 20,
    "daemon_bulk": 5000,
    "daemon_singles": 50,
}
QUICK = {
    "sim": "random:16,random:32,full:16,ring:16,line:16",
    "daemons": "full:3,ring:4",
    "sim_bulk": 100,
    "sim_singles": 5,
    "daemon_bulk": 1000,
    "daemon_singles": 5,
}


@dataclass
class Row:
    """One run's figures (sim or daemons): one line of the table."""

    where: str  # "sim" or "daemons"
    topology: str  # "random", "full", "ring", "line"
    nodes: int
    links: int  # directed
    bulk: int
    singles: int
    copies_bulk: float  # copies received per record per node (mean over nodes)
    copies_single: float
    copies_max: float  # at the node that got the most (bulk and singles)
    echoes: float  # copies of its own records a node got back, per record written
    bulk_to_all_s: float
    single_p50_ms: float
    single_max_ms: float
    cpu_per_1000: float  # CPU seconds per 1,000 bulk records (the process / all daemons)
    wall_s: float  # the whole run, start to stop
    hops_max: int | None = None  # sim only
    bulk_quiet_s: float | None = None  # sim: until the last copy of the bulk crossed
    peak_rss_mb: float | None = None  # sim: the process
    threads: int | None = None
    fds: int | None = None
    seed: int | None = None
    uncounted: list[str] = field(default_factory=list)
    first_hop_p50_ms: float | None = None  # daemons: until a neighbour's subscriber got it
    returned_hop_p50_ms: float | None = None  # the same from `peer append` returning


# -- topologies -----------------------------------------------------------------------


def parse_runs(text: str) -> list[tuple[str, int]]:
    """ "random:64,ring:8" -> [("random", 64), ("ring", 8)]."""
    runs = []
    for item in filter(None, text.split(",")):
        kind, _, size = item.partition(":")
        if kind not in ("random", "full", "ring", "line") or not size.isdigit():
            raise argparse.ArgumentTypeError(f"not TOPOLOGY:N: {item!r}")
        runs.append((kind, int(size)))
    return runs


def topology(kind: str, n: int, seed: int) -> Topology:
    if kind == "random":
        return random_graph(n, seed, low=4, high=min(8, n - 1))
    return {"full": full_mesh, "ring": ring, "line": line}[kind](n)


# -- 1. the simulation ----------------------------------------------------------------


def proc_status(field_name: str) -> int:
    """A number from /proc/self/status (kB for memory)."""
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith(field_name + ":"):
            return int(text.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status (not Linux?)")


async def phase(sim: Sim, started: float) -> float:
    """Until every store holds what was written and no copy is crossing any link;
    seconds from `started` to the last copy."""
    await sim.until_converged(CONVERGE_S)
    await until(lambda: sim.traffic.quiet(QUIET_S), "the last copies", CONVERGE_S)
    return sim.traffic.last_moved - started


async def single(sim: Sim, node: int, label: str) -> None:
    """One record appended on `node`, once the mesh is quiet; until all nodes hold it
    (so that each single's time to all is its own, not a queue's)."""
    await until(lambda: sim.traffic.quiet(SINGLE_QUIET_S), "a quiet mesh", CONVERGE_S)
    (record,) = await sim.append(node, "single", payloads(1, RECORD_BYTES, label))
    key = ((record.host, record.tag), record.idx)
    await until(lambda: key in sim.traffic.reached_all, f"single {label} to all", CONVERGE_S)


async def simulate(kind: str, n: int, bulk: int, singles: int, seed: int) -> Row:
    """One simulated run, in this process."""
    shape = topology(kind, n, seed)
    began = time.monotonic()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="peer-sim-") as tmp:
        async with Sim(Path(tmp), shape, schedule=SCHEDULE) as sim:
            await until(sim.settled, "every link to go live", SETTLE_S)
            log(f"  {n} nodes started and linked in {time.monotonic() - began:.1f} s")
            cpu, wrote = time.process_time(), time.monotonic()
            await sim.append(0, "bulk", payloads(bulk, RECORD_BYTES, "bulk"))
            quiet = await phase(sim, wrote)
            bulk_cpu = time.process_time() - cpu
            log(f"  bulk: held everywhere, last copy after {quiet:.1f} s")
            for number in range(singles):
                await single(sim, rng.randrange(n), f"{number}")
            await phase(sim, time.monotonic())
            await sim.spot_check(rng)
            report = await sim.report()
            threads, fds = proc_status("Threads"), len(os.listdir("/proc/self/fd"))
    to_all = report.to_all_s
    single_ms = sorted(s * 1000 for s in to_all.get("single", [0.0]))
    return Row(
        where="sim",
        topology=kind,
        nodes=n,
        links=report.links,
        bulk=bulk,
        singles=singles,
        copies_bulk=report.copies_by_tag.get("bulk", 0.0),
        copies_single=report.copies_by_tag.get("single", 0.0),
        copies_max=report.copies_max,
        echoes=report.echoes_per_record,
        bulk_to_all_s=max(to_all.get("bulk", [0.0])),
        single_p50_ms=statistics.median(single_ms),
        single_max_ms=single_ms[-1],
        cpu_per_1000=bulk_cpu / (bulk / 1000),
        wall_s=time.monotonic() - began,
        hops_max=report.hops_max,
        bulk_quiet_s=quiet,
        peak_rss_mb=proc_status("VmHWM") / 1024,
        threads=threads,
        fds=fds,
        seed=seed if kind == "random" else None,
        uncounted=sorted(report.uncounted),
    )


def run_sim(kind: str, n: int, bulk: int, singles: int, seed: int) -> Row:
    """One simulated run in a child process (its resources its own)."""
    command = [sys.executable, __file__, "--run-sim", f"{kind}:{n}", "--seed", str(seed)]
    command += ["--sim-bulk", str(bulk), "--sim-singles", str(singles)]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the simulation of {kind}:{n} failed (exit {done.returncode})")
    return Row(**json.loads(done.stdout))


# -- 3. the table and the plot --------------------------------------------------------

COLUMNS = (
    ("where", "{}"),
    ("nodes", "{}"),
    ("topology", "{}"),
    ("links", "{}"),
    ("copies_bulk", "{:.2f}"),
    ("copies_single", "{:.2f}"),
    ("copies_max", "{:.2f}"),
    ("echoes", "{:.2f}"),
    ("hops_max", "{}"),
    ("bulk_to_all_s", "{:.2f}"),
    ("single_p50_ms", "{:.0f}"),
    ("single_max_ms", "{:.0f}"),
    ("first_hop_p50_ms", "{:.1f}"),
    ("returned_hop_p50_ms", "{:.1f}"),
    ("cpu_per_1000", "{:.2f}"),
    ("peak_rss_mb", "{:.0f}"),
    ("wall_s", "{:.0f}"),
)
HEADINGS = {
    "copies_bulk": "copies/rec bulk",
    "copies_single": "copies/rec single",
    "copies_max": "max/node",
    "echoes": "echoes/rec",
    "bulk_to_all_s": "bulk to all s",
    "single_p50_ms": "single to all p50 ms",
    "single_max_ms": "single to all max ms",
    "first_hop_p50_ms": "1st hop p50 ms",
    "returned_hop_p50_ms": "1st hop after return p50 ms",
    "cpu_per_1000": "CPU s/1k rec",
    "peak_rss_mb": "RSS MB",
}


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    names = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(HEADINGS.get(n, n) for n in names) + " |"]
    lines.append("|" + "---|" * len(names))
    for row in rows:
        values = asdict(row)
        cells = ["-" if values[n] is None else form.format(values[n]) for n, form in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], baseline: Sequence[Row], path: Path) -> None:
    """Copies per record per node, and time until all hold the bulk, against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, (copies, times) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, series, style in (("", rows, "-o"), ("baseline ", baseline, "--x")):
        for key in sorted({(r.where, r.topology) for r in series}):
            chosen = (r for r in series if (r.where, r.topology) == key)
            points = sorted(((r.nodes, r) for r in chosen), key=lambda point: point[0])
            xs = [n for n, _ in points]
            name = f"{label}{key[0]} {key[1]}"
            copies.plot(xs, [r.copies_bulk for _, r in points], style, label=name)
            times.plot(xs, [r.bulk_to_all_s for _, r in points], style, label=name)
    copies.set(xlabel="nodes", ylabel="copies of each record per node (bulk)", yscale="log")
    times.set(xlabel="nodes", ylabel="seconds until every node holds the bulk", yscale="log")
    sizes = sorted({r.nodes for r in (*rows, *baseline)})
    for axes in (copies, times):
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes, [str(n) for n in sizes])
        axes.grid(True, which="both", alpha=0.3)
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axes.yaxis.set_major_formatter(plain)
        axes.yaxis.set_minor_formatter(plain)
        axes.tick_params(axis="y", which="minor", labelsize=7)
    copies.axhline(1.1, color="grey", linestyle=":", label="issue 14 target (1.1)")
    copies.legend(fontsize=7)
    bulks = ", ".join(f"{w} {b:,}" for w, b in sorted({(r.where, r.bulk) for r in rows}))
    figure.suptitle(f"peer mesh: a bulk of records of {RECORD_BYTES} B on one node ({bulks})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- the targets of issue 14 ---------------------------------------------------------

COPIES_TARGET = 1.1  # copies of each record received per node
SCALE_TARGET = 1.5  # 12 daemons' bulk time / 3 daemons'
CPU_GROWTH_TARGET = 1.25  # CPU per record per daemon, largest full mesh / 3 (noise allowed)
FIRST_HOP_TARGET_MS = 10.0


def verdicts(rows: Sequence[Row]) -> list[str]:
    """Each target of issue 14 this run measured, and whether it held."""

    def said(ok: bool, text: str) -> str:
        return f"{'ok  ' if ok else 'MISS'} {text}"

    lines = []
    for row in rows:
        worst = max(row.copies_bulk, row.copies_single)
        name = f"{row.where} {row.topology} {row.nodes}"
        lines.append(
            said(
                worst <= COPIES_TARGET and row.echoes == 0,
                f"{name}: {worst:.2f} copies per record per node (target <= {COPIES_TARGET}), "
                f"{row.echoes:.2f} echoes per record (target 0)",
            )
        )
        if row.first_hop_p50_ms is not None and row.returned_hop_p50_ms is not None:
            lines.append(
                said(
                    row.returned_hop_p50_ms < FIRST_HOP_TARGET_MS,
                    f"{name}: single append to a neighbour's subscriber p50 "
                    f"{row.returned_hop_p50_ms:.1f} ms from `peer append` returning (target "
                    f"< {FIRST_HOP_TARGET_MS:.0f}); {row.first_hop_p50_ms:.1f} ms from the "
                    "record's timestamp, before the command's commit",
                )
            )
    full = {r.nodes: r for r in rows if r.where == "daemons" and r.topology == "full"}
    if 3 in full and len(full) > 1:
        largest = full[max(full)]
        scale = largest.bulk_to_all_s / full[3].bulk_to_all_s
        lines.append(
            said(
                scale <= SCALE_TARGET,
                f"daemons full {largest.nodes} / full 3, bulk to all: {scale:.2f}x "
                f"(target <= {SCALE_TARGET}); {cpu_floor(full[3])} and {cpu_floor(largest)}",
            )
        )
        per_node = {n: r.cpu_per_1000 / n for n, r in sorted(full.items())}
        growth = per_node[largest.nodes] / per_node[3]
        lines.append(
            said(
                growth <= CPU_GROWTH_TARGET,
                "daemons full: CPU s per 1,000 records per daemon "
                + ", ".join(f"{n}: {c:.3f}" for n, c in per_node.items())
                + f" ({growth:.2f}x from 3 to {largest.nodes}; linear in N: about 1x, "
                f"target <= {CPU_GROWTH_TARGET})",
            )
        )
    return lines


def cpu_floor(row: Row) -> str:
    """The least time the bulk could take: every daemon's CPU for it, on every core of
    this machine at once. A run that takes about this long is bound by CPU, not hops."""
    cores = os.cpu_count() or 1
    floor = row.cpu_per_1000 * row.bulk / 1000 / cores
    return f"{row.nodes} daemons took {row.bulk_to_all_s:.2f} s, CPU floor {floor:.2f} s"


# -- main -----------------------------------------------------------------------------


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--sim", type=parse_runs, help=f"default {DEFAULTS['sim']}")
    parser.add_argument("--daemons", type=parse_runs, help=f"default {DEFAULTS['daemons']}")
    for name in ("sim_bulk", "sim_singles", "daemon_bulk", "daemon_singles"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=positive, help=f"default {DEFAULTS[name]}")
    parser.add_argument("--seed", type=int, help="of the random graphs (printed)")
    parser.add_argument("--baseline", type=Path, help="an earlier build/bench_mesh.json")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--run-sim", type=parse_runs, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, parse_runs(value) if isinstance(value, str) else value)
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    return args


def run_all(args: argparse.Namespace) -> list[Row]:
    from mesh_daemons import run_daemons

    rows: list[Row] = []
    for number, (kind, n) in enumerate(args.sim):
        log(f"simulation: {kind} {n} ({args.sim_bulk} bulk, {args.sim_singles} singles)")
        rows.append(run_sim(kind, n, args.sim_bulk, args.sim_singles, args.seed + number))
        log(f"  done in {rows[-1].wall_s:.0f} s")
    for kind, n in args.daemons:
        log(f"daemons: {kind} {n} ({args.daemon_bulk} bulk, {args.daemon_singles} singles)")
        edges = sorted(topology(kind, n, args.seed).edges)
        figures = run_daemons(n, edges, args.daemon_bulk, args.daemon_singles, args.seed)
        rows.append(
            Row("daemons", kind, n, bulk=args.daemon_bulk, singles=args.daemon_singles, **figures)
        )
        log(f"  done in {rows[-1].wall_s:.0f} s")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = options(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if args.run_sim:  # a child: one simulation, its row as JSON
        ((kind, n),) = args.run_sim
        row = asyncio.run(simulate(kind, n, args.sim_bulk, args.sim_singles, args.seed))
        print(json.dumps(asdict(row)))
        return
    log(f"seed {args.seed} (rerun with --seed {args.seed})")
    began = time.monotonic()
    rows = run_all(args)
    baseline = []
    if args.baseline:
        baseline = [Row(**r) for r in json.loads(args.baseline.read_text())["rows"]]
    BUILD.mkdir(exist_ok=True)
    result: dict[str, Any] = {"seed": args.seed, "rows": [asdict(r) for r in rows]}
    (BUILD / "bench_mesh.json").write_text(json.dumps(result, indent=1))
    if rows:
        plot(rows, baseline, BUILD / "bench_mesh.png")
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(table(rows))
    for row in rows:
        if row.where == "sim":
            print(
                f"sim {row.topology} {row.nodes}: peak RSS {row.peak_rss_mb:.0f} MB, "
                f"{row.threads} threads, {row.fds} open files, {row.wall_s:.0f} s in all"
            )
    for verdict in verdicts(rows):
        print(verdict)
    uncounted = sorted({m for r in rows for m in r.uncounted})
    if uncounted:
        print(f"WARNING: Remote methods not counted: {uncounted} (add them to FLOWS)")
    print(f"seed {args.seed}; {time.monotonic() - began:.0f} s in all; plot: build/bench_mesh.png")


if __name__ == "__main__":
    main()
