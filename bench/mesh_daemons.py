"""Real `peer serve` daemons on loopback for bench_mesh.py: the same workload as the
simulation, and the same counts, taken at each daemon's Remote boundary
(bench/counted_daemon.py).

Homes are made in this process (one sync key, mutual TLS): each pins its neighbours
with their certificates, as `peer peers add` does while they serve. Every wait is
bounded; every daemon is stopped (SIGTERM, then SIGKILL) whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_daemon import free_ports, peer_cli
from bench_store import log

from peer import api
from peer.crypto import SyncKey
from peer.home import Home as HomeFiles
from peer.node import Node
from peer.records import LogKey
from peer.store import TrustedPeer

LAUNCHER = Path(__file__).resolve().with_name("counted_daemon.py")
READY_S = 60.0
LINKED_S = 120.0
CONVERGE_S = 600.0
SINGLE_S = 60.0
STOP_S = 20.0
POLL_S = 0.02
SUBSCRIBED_S = 0.5  # for the bulk's subscribers to be in place
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RECORD_BYTES = 256


@dataclass
class Home:
    """One daemon's home: where it is, who it is, where it serves."""

    root: Path
    node_id: bytes
    host: bytes
    address: str
    counts: Path
    process: subprocess.Popen[str] | None = None

    def cpu_s(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def make_homes(root: Path, n: int, edges: Sequence[tuple[int, int]]) -> list[Home]:
    sync = SyncKey.generate()
    homes = []
    for index, port in enumerate(free_ports(n)):
        node = await Node.init(HomeFiles(root / f"d{index}"), f"d{index}", sync)
        identity = node.identity
        await node.close()
        address = f"127.0.0.1:{port}"
        counts = root / f"d{index}.counts.json"
        homes.append(Home(root / f"d{index}", identity.node_id, identity.host, address, counts))
    for a, b in edges:
        for here, there in ((homes[a], homes[b]), (homes[b], homes[a])):
            node = await Node.open(HomeFiles(here.root))
            try:
                certificate = (there.root / "tls.crt").read_bytes()
                name = there.root.name
                await node.store.peers.add(
                    TrustedPeer(there.node_id, name, there.address, certificate)
                )
            finally:
                await node.close()
    return homes


def start(home: Home) -> None:
    command = [sys.executable, str(LAUNCHER), str(home.counts), "--home", str(home.root)]
    command += ["serve", "--listen", home.address, "--json"]
    home.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert home.process.stdout is not None
    if not home.process.stdout.readline():  # the ready line
        raise RuntimeError(f"the daemon of {home.root} did not start")


def stop(homes: Sequence[Home]) -> list[str]:
    """SIGTERM all, then SIGKILL whoever did not exit in STOP_S; their names."""
    for home in homes:
        if home.process is not None and home.process.poll() is None:
            home.process.send_signal(signal.SIGTERM)
    killed = []
    for home in homes:
        if home.process is None:
            continue
        try:
            home.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            home.process.kill()
            home.process.wait()
            killed.append(home.root.name)
    return killed


@contextlib.contextmanager
def running(homes: Sequence[Home]) -> Iterator[None]:
    try:
        for home in homes:
            start(home)
        yield
    finally:
        killed = stop(homes)
        if killed:
            log(f"  WARNING: {killed} did not stop within {STOP_S:.0f} s of SIGTERM (killed)")


async def until(probe: Any, what: str, timeout: float, every: float = POLL_S) -> float:
    """Seconds until `await probe()` is true; RuntimeError after `timeout`."""
    began = time.monotonic()
    while not await probe():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - began


async def linked(homes: Sequence[Home]) -> bool:
    """Every daemon follows every pinned peer live."""
    for home in homes:
        async with await api.connect(home.root) as node:
            peers = (await node.status())["peers"]
        if not all(p["link"] and p["link"]["live"] for p in peers):
            return False
    return True


async def arrival_of(home: Home, log: LogKey, idx: int) -> int:
    """When (ns) a subscriber on `home`'s daemon gets record `idx` of `log` (at once if
    the daemon holds it already: subscribe before the record is written)."""
    async with await api.connect(home.root) as node:
        async for message in node.subscribe(hosts=[log.host], tags=[log.tag], since={log: idx}):
            if message.idx == idx:
                return time.time_ns()
    raise RuntimeError(f"the daemon of {home.root} ended the subscription")


async def written_at(home: Home, log: LogKey) -> int:
    """The timestamp (ns) of the first record of `log`: taken in its append's commit."""
    async with await api.connect(home.root) as node:
        async for message in node.subscribe(hosts=[log.host], tags=[log.tag]):
            return message.timestamp
    raise RuntimeError(f"the daemon of {home.root} ended the subscription")


# -- the workload ---------------------------------------------------------------------


async def bulk_phase(homes: Sequence[Home], count: int) -> tuple[float, float]:
    """`peer append --tag bulk` of `count` lines on the first daemon's home: seconds
    from the bulk's first commit (its first record's timestamp) until a subscriber on
    every other daemon got its last record, and all daemons' CPU seconds for it (until
    a second after that: copies still crossing links cost CPU too)."""
    lines = "".join(f"{n:05d}".ljust(RECORD_BYTES, ".") + "\n" for n in range(count))
    bulk = LogKey(homes[0].host, "bulk")
    arrivals = [asyncio.create_task(arrival_of(home, bulk, count - 1)) for home in homes[1:]]
    try:
        await asyncio.sleep(SUBSCRIBED_S)  # every subscriber is in place before the write
        cpu = sum(h.cpu_s() for h in homes)
        await asyncio.to_thread(peer_cli, homes[0].root, "append", "--tag", "bulk", stdin=lines)
        async with asyncio.timeout(CONVERGE_S):
            last = max(await asyncio.gather(*arrivals))
        await asyncio.sleep(1.0)
        cpu = sum(h.cpu_s() for h in homes) - cpu
    finally:
        for task in arrivals:
            task.cancel()
        await asyncio.gather(*arrivals, return_exceptions=True)
    return (last - await written_at(homes[0], bulk)) / 1e9, cpu


class Arrivals:
    """A subscriber on every daemon: when each got each single record."""

    def __init__(self) -> None:
        self.seen: dict[tuple[bytes, int], dict[int, int]] = {}  # -> daemon -> ns
        self.written: dict[tuple[bytes, int], int] = {}  # the record's timestamp (ns)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, homes: Sequence[Home]) -> None:
        for number, home in enumerate(homes):
            node = await api.connect(home.root)
            since = await node.get_index()
            self.tasks.append(asyncio.create_task(self._follow(number, node, since)))

    async def _follow(self, number: int, node: api.Connection, since: Any) -> None:
        async with node:
            follow: AsyncIterator[api.Message] = node.subscribe(tags=["single"], since=since)
            async for message in follow:
                key = (message.host, message.idx)
                self.seen.setdefault(key, {})[number] = time.time_ns()
                self.written[key] = message.timestamp

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def singles_phase(
    homes: Sequence[Home], count: int, rng: random.Random
) -> tuple[list[float], list[float], list[float]]:
    """`peer append --tag single` on random daemons' homes, one at a time; each one's
    milliseconds from its write (the record's timestamp, taken in the append's
    transaction, before `peer append` returns) until every daemon's subscriber got it,
    until the first neighbour's did (the first hop), and the first hop from `peer
    append` returning (issue 14's measure; negative when the neighbour's subscriber had
    the record before the command's process had exited)."""
    arrivals = Arrivals()
    await arrivals.start(homes)
    spans: list[float] = []
    first_hops: list[float] = []
    after_return: list[float] = []
    try:
        for number in range(count):
            author = rng.randrange(len(homes))
            output = await asyncio.to_thread(
                peer_cli,
                homes[author].root,
                "append",
                "--tag",
                "single",
                "--json",
                f"{number:05d}".ljust(RECORD_BYTES, "."),
            )
            returned = time.time_ns()
            idx = json.loads(output)["ranges"][0][0]
            key = (homes[author].host, idx)

            async def everywhere(key: tuple[bytes, int] = key) -> bool:
                return len(arrivals.seen.get(key, {})) == len(homes)

            await until(everywhere, f"single {number} everywhere", SINGLE_S)
            seen, written = arrivals.seen[key], arrivals.written[key]
            spans.append((max(seen.values()) - written) / 1e6)
            first_hop = min(t for n, t in seen.items() if n != author)
            first_hops.append((first_hop - written) / 1e6)
            after_return.append((first_hop - returned) / 1e6)
    finally:
        await arrivals.stop()
    return spans, first_hops, after_return


# -- the counts -----------------------------------------------------------------------


def read_counts(homes: Sequence[Home]) -> list[dict[str, Any]]:
    """Every daemon's counts, fresh: asked for (SIGUSR1) and waited for."""
    before = [json.loads(h.counts.read_text())["seq"] for h in homes]
    for home in homes:
        assert home.process is not None
        home.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        now = [json.loads(h.counts.read_text()) for h in homes]
        if all(c["seq"] > b for c, b in zip(now, before, strict=True)):
            return now
        time.sleep(POLL_S)
    raise RuntimeError("the daemons did not write their counts")


def copies(homes: Sequence[Home], counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Records received per node, by tag (not its own) and echoes, from both ends:
    what a daemon's links pulled or followed, and what other daemons pushed to it."""
    by_address = {h.address: n for n, h in enumerate(homes)}
    hosts = {h.host.hex(): n for n, h in enumerate(homes)}
    received: Counter[tuple[int, str]] = Counter()
    echoes = 0
    for here, entries in enumerate(counts):
        for direction, target, host, tag, n in entries["counts"]:
            receiver = here if direction == "received" else by_address[target]
            if hosts.get(host) == receiver:
                echoes += n
            else:
                received[receiver, tag] += n
    uncounted = sorted({m for c in counts for m in c["uncounted"]})
    return {"received": received, "echoes": echoes, "uncounted": uncounted}


async def held(homes: Sequence[Home]) -> Counter[tuple[int, str]]:
    """Records of other hosts each daemon holds, by tag."""
    found: Counter[tuple[int, str]] = Counter()
    for number, home in enumerate(homes):
        async with await api.connect(home.root) as node:
            for log_key, n in (await node.get_index()).items():
                if log_key.host != home.host:
                    found[number, log_key.tag] += n
    return found


def ratio(received: Counter[tuple[int, str]], had: Counter[tuple[int, str]], tag: str) -> float:
    got = sum(n for (_, t), n in received.items() if t == tag)
    total = sum(n for (_, t), n in had.items() if t == tag)
    return got / total if total else 0.0


# -- one run --------------------------------------------------------------------------


async def measure(homes: list[Home], bulk: int, singles: int, seed: int) -> dict[str, Any]:
    await until(lambda: linked(homes), "every link to go live", LINKED_S)
    to_all, cpu = await bulk_phase(homes, bulk)
    log(f"  bulk held everywhere after {to_all:.2f} s")
    spans, first_hops, after_return = await singles_phase(homes, singles, random.Random(seed))
    await asyncio.sleep(1.0)  # the last copies cross
    had = await held(homes)
    return {
        "to_all": to_all,
        "cpu": cpu,
        "spans": sorted(spans),
        "first_hops": sorted(first_hops),
        "after_return": sorted(after_return),
        "held": had,
    }


def run_daemons(
    n: int, edges: Sequence[tuple[int, int]], bulk: int, singles: int, seed: int
) -> dict[str, Any]:
    """One run of real daemons (homes, daemons, workload, counts, stop): the figures of
    a table row."""
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peer-mesh-") as tmp:
        homes = asyncio.run(make_homes(Path(tmp), n, edges))
        with running(homes):
            figures = asyncio.run(measure(homes, bulk, singles, seed))
            counted = copies(homes, read_counts(homes))
    received, had = counted["received"], figures["held"]
    per_node = [
        sum(c for (r, _), c in received.items() if r == node)
        / max(1, sum(c for (r, _), c in had.items() if r == node))
        for node in range(1, n)  # node 0 wrote the bulk: it holds few records of others
    ]
    spans = figures["spans"] or [0.0]
    return {
        "links": 2 * len(edges),
        "copies_bulk": ratio(received, had, "bulk"),
        "copies_single": ratio(received, had, "single"),
        "copies_max": max(per_node, default=0.0),
        "echoes": counted["echoes"] / (bulk + singles),
        "bulk_to_all_s": figures["to_all"],
        "single_p50_ms": statistics.median(spans),
        "single_max_ms": spans[-1],
        "first_hop_p50_ms": statistics.median(figures["first_hops"] or [0.0]),
        "returned_hop_p50_ms": statistics.median(figures["after_return"] or [0.0]),
        "cpu_per_1000": figures["cpu"] / (bulk / 1000),
        "wall_s": time.monotonic() - began,
        "uncounted": counted["uncounted"],
    }
