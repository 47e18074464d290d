"""Group C, resource exhaustion: slowloris streams (C14), a handshake flood (C15), an
RPC flood with rapid cancels (C16), slow and stuck subscribers (C17).

The node under test is a real mutual-TLS grpc.aio server in this process (its RSS and
fds are this process's); hostile peers that must not share its event loop run as
subprocesses (tests/reliability/hostile_c.py). Honest peers are real clients with
their own pinned identities. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.client import ClientTls, PeerClient
from peer.crypto import generate_tls_identity, record_hash
from peer.identity import node_id_of
from peer.records import Head
from peer.service import Limits, RunningServer, start_server
from peer.store import Store, TrustedPeer
from peer.sync import sync_with
from peer.trust import Credentials
from tests.conftest import new_author, open_store
from tests.reliability.conftest import Report, Tier
from tests.reliability.rel_c import open_fds, percentile, rss_mb

ROOT = Path(__file__).resolve().parents[2]


def new_credentials() -> Credentials:
    return Credentials(*generate_tls_identity())


@dataclass
class Pinned:
    """A mutual-TLS node in this process and the identities it pins."""

    root: Path
    store: Store
    running: RunningServer
    credentials: Credentials
    clients: list[Credentials] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def client(self, n: int, timeout: float = 10.0) -> PeerClient:
        tls = ClientTls(self.clients[n], self.credentials.certificate)
        return PeerClient(self.target, tls=tls, timeout=timeout, stream_timeout=120.0)

    def spec(self, n: int, **fields: Any) -> str:
        """The JSON argument of hostile_c for pinned identity n."""
        files = {}
        for name, data in (
            ("key", self.clients[n].key),
            ("cert", self.clients[n].certificate),
            ("server_cert", self.credentials.certificate),
        ):
            path = self.root / f"hostile-{n}-{name}.pem"
            path.write_bytes(data)
            files[name] = str(path)
        return json.dumps({"target": self.target, **files, **fields})

    async def close(self) -> None:
        await self.running.stop(grace=0.2)
        await self.store.close()


@contextlib.asynccontextmanager
async def pinned_node(
    root: Path, peers: int, limits: Limits | None = None
) -> AsyncIterator[Pinned]:
    root.mkdir(parents=True, exist_ok=True)
    own = new_credentials()
    store = await open_store(root / "node.db")
    clients = [new_credentials() for _ in range(peers)]
    for n, made in enumerate(clients):
        await store.peers.add(
            TrustedPeer(node_id_of(made.certificate), f"p{n}", "", made.certificate)
        )
    running = await start_server(store, "node", "127.0.0.1:0", limits=limits, credentials=own)
    node = Pinned(root, store, running, own, clients)
    try:
        yield node
    finally:
        await node.close()


def other_cpus(cpu: int) -> list[str]:
    """The command prefix that holds a subprocess to the CPUs but `cpu` (none if not
    possible)."""
    cpus = os.cpu_count() or 1
    if cpus < 2 or shutil.which("taskset") is None:
        return []
    rest = ",".join(str(c) for c in range(cpus) if c != cpu)
    return ["taskset", "-c", rest]


class Hostile:
    """tests/reliability/hostile_c.py in a subprocess; `result()` waits for its JSON."""

    def __init__(self, spec: str, prefix: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "tests.reliability.hostile_c", spec],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "GRPC_VERBOSITY": "NONE"},
        )

    def running(self) -> bool:
        return self.process.poll() is None

    async def result(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.running():
            self.process.kill()
        out, err = self.process.communicate(timeout=10)
        assert self.process.returncode == 0, err[-2000:]
        return dict(json.loads(out.strip().splitlines()[-1]))


class RssPeak:
    """Samples this process's RSS every 0.1 s while in use."""

    def __init__(self) -> None:
        self.start = rss_mb()
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> RssPeak:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.start


# -- C15: handshake flood --------------------------------------------------------------------

PARTIAL_HELLO = bytes.fromhex("160301020001") + bytes(60)  # a ClientHello cut short


async def _half_open(port: int, hello: bool, deadline: float) -> float | None:
    """Connect, maybe send part of a ClientHello, then stall; seconds until the server
    hangs up (None: it never did before the deadline)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        if hello:
            writer.write(PARTIAL_HELLO)
            await writer.drain()
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), deadline - time.monotonic())
            except TimeoutError:
                return None
            except ConnectionError:
                return time.monotonic() - started
            if not data:
                return time.monotonic() - started
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_c15_handshake_flood(tmp_path: Path, tier: Tier, report: Report) -> None:
    silent, stalled = tier.pick((1000, 200), (5000, 1000))
    timeout_s = 5.0  # grpc.server_handshake_timeout_ms in peer.service.server.server_options
    async with pinned_node(tmp_path, 1) as node:
        async with node.client(0) as peer:
            await peer.get_index()  # warm: the baseline includes the honest connection
        fds_before = open_fds()
        deadline = time.monotonic() + timeout_s + 10
        flood: list[asyncio.Task[float | None]] = []
        for n in range(silent + stalled):
            flood.append(asyncio.create_task(_half_open(node.running.port, n >= silent, deadline)))
            if n % 100 == 99:
                await asyncio.sleep(0)  # connect in waves, as a scanner does
        await asyncio.sleep(0.5)
        honest: list[float] = []
        for _ in range(5):  # honest calls during the flood, new connections each
            started = time.monotonic()
            async with node.client(0) as peer:
                await peer.get_index()
            honest.append(time.monotonic() - started)
        closed = await asyncio.gather(*flood)
        times = sorted(t for t in closed if t is not None)
        settled = None
        for step in range(100):  # fds back to baseline within 10 s
            if abs(open_fds() - fds_before) <= 10:
                settled = step * 0.1
                break
            await asyncio.sleep(0.1)
        fds_after = open_fds()
    total = silent + stalled
    last = times[-1] if times else float("nan")
    worst = max(honest)
    print(
        f"{len(times)}/{total} closed, last after {last:.1f} s; honest {honest}; fds "
        f"{fds_before} -> {fds_after}"
    )
    passed = len(times) == total and last <= timeout_s + 2 and worst < 1.0 and settled is not None
    report(
        f"{silent} TCP connects that never send a ClientHello and {stalled} that stall "
        f"mid-handshake: all closed within the handshake timeout ({timeout_s:.0f} s) + 2 s; "
        "fds back to baseline +-10 within 10 s; an honest call takes < 1 s during the flood",
        f"{total:,} half-open, {len(times):,} closed by the server, the last after "
        f"{last:.1f} s; honest latency max {worst * 1000:.0f} ms; fds back to baseline "
        f"after {settled if settled is not None else 'never'} s",
        passed,
        half_open=total,
        closed=len(times),
        last_closed_s=round(last, 2),
        honest_ms=round(worst * 1000),
    )
    assert len(times) == total
    assert last <= timeout_s + 2
    assert worst < 1.0
    assert settled is not None


# -- C16: RPC flood with rapid cancels -----------------------------------------------------


async def _honest_rate(node: Pinned, peers: range, seconds: float) -> float:
    """Honest peers, each in its own process (as on its own machine), pull everything
    the node holds for `seconds`: their records per second, summed."""
    runs = [Hostile(node.spec(n, mode="pull", seconds=seconds)) for n in peers]
    results = [await run.result(seconds + 60) for run in runs]
    return sum(r["records"] / r["seconds"] for r in results)


async def _c16_run(
    tmp_path: Path, calls: int, cancels: int, window: float, honest: range
) -> dict[str, Any]:
    async with pinned_node(tmp_path, 4) as node:
        author = new_author()
        await node.store.add_host(author.signing.public_key)
        await node.store.append(author, "t", [os.urandom(200) for _ in range(2000)])
        before = await _honest_rate(node, honest, window)
        policy = node.running.servicer.policy  # type: ignore[union-attr]
        flooder_id = node_id_of(node.clients[0].certificate).hex()
        async with RssPeak() as rss:
            flooder = Hostile(
                node.spec(0, mode="flood", calls=calls, cancels=cancels, concurrency=64),
                other_cpus(0),  # held to one CPU, as if it were another machine
            )
            for _ in range(300):  # until the node sees the flood (bounded: 30 s)
                if flooder_id in policy._callers or not flooder.running():
                    break
                await asyncio.sleep(0.1)
            under = await _honest_rate(node, honest, window)
            overlapped = flooder.running()  # the flood lasted the whole honest window
            result = await flooder.result(300)
        after = await _honest_rate(node, honest, window)
        async with node.client(1) as peer:
            still = len((await peer.get_index()).logs)
        return {
            "baseline": (before + after) / 2,  # bracketed: before and after the flood
            "under": under,
            "overlapped": overlapped,
            "result": result,
            "bans": policy.bans,
            "banned": policy.banned(flooder_id),
            "still": still,
            "rss": rss.growth,
        }


async def test_c16_rpc_flood_and_rapid_cancel(tmp_path: Path, tier: Tier, report: Report) -> None:
    calls, cancels = tier.pick((4_000, 2000), (50_000, 10_000))  # throttled: ~250 calls/s
    window = 4.0
    run = await _c16_run(tmp_path, calls, cancels, window, range(1, 4))
    ratio = run["under"] / run["baseline"]
    codes = run["result"]["codes"]
    print(f"{run}")
    passed = (
        ratio >= 0.5
        and run["overlapped"]
        and run["rss"] < 100
        and codes.get("RESOURCE_EXHAUSTED", 0) > 0
        and run["bans"] >= 1
        and run["banned"]
        and run["still"] == 1
    )
    report(
        "one pinned peer fires GetIndex calls as fast as it can, then Subscribe streams "
        "cancelled at once (rapid reset), while 3 honest peers (own processes) pull: node RSS "
        "< +100 MB, honest throughput >= 50 % of baseline (mean of before and after), the "
        "flooder gets RESOURCE_EXHAUSTED from its rate limit and is cut off (bans rise)",
        f"{calls:,} calls + {cancels:,} cancels: honest throughput {ratio:.0%} of baseline "
        f"({run['under']:,.0f} vs {run['baseline']:,.0f} records/s), peak RSS "
        f"+{run['rss']:.1f} MB; flooder {codes}; bans {run['bans']}",
        passed,
        calls=calls,
        cancels=cancels,
        throughput_ratio=round(ratio, 2),
        rss_mb=round(run["rss"], 1),
        bans=run["bans"],
    )
    assert run["overlapped"], "the flood ended before the honest window: raise the calls"
    assert ratio >= 0.5
    assert run["rss"] < 100
    assert codes.get("RESOURCE_EXHAUSTED", 0) > 0
    assert run["bans"] >= 1 and run["banned"]
    assert run["still"] == 1


# -- C14: slowloris streams ----------------------------------------------------------------


async def _honest_syncs(node: Pinned, peers: range, records: int, tmp: Path) -> list[float]:
    """Each honest peer (own store, own records) syncs with the node once; seconds each."""

    async def one(n: int) -> float:
        author = new_author()
        store = await open_store(tmp / f"honest-{n}-{os.urandom(4).hex()}.db", author)
        try:
            await store.append(author, "t", [b"h%d" % i for i in range(records)])
            started = time.monotonic()
            async with node.client(n) as peer:
                summary = await asyncio.wait_for(sync_with(store, peer), 60)
            assert summary.pushed == records
            return time.monotonic() - started
        finally:
            await store.close()

    return list(await asyncio.gather(*(one(n) for n in peers)))


async def _until_idle(pid: int, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Until process `pid` used no CPU for `quiet_s` (bounded by `limit_s`)."""

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    last, quiet = cpu_ticks(), 0.0
    for _ in range(int(limit_s / 0.1)):
        await asyncio.sleep(0.1)
        now = cpu_ticks()
        quiet = quiet + 0.1 if now == last else 0.0
        last = now
        if quiet >= quiet_s:
            return


async def test_c14_slowloris_streams(tmp_path: Path, tier: Tier, report: Report) -> None:
    honest_peers, records = tier.pick((10, 1000), (19, 2000))
    idle_s = 6.0
    limits = Limits(idle_s=idle_s)
    async with pinned_node(tmp_path / "baseline", honest_peers + 2, limits) as node:
        await _honest_syncs(node, range(1, 2), records, tmp_path)  # warm-up, not measured
        baseline = await _honest_syncs(node, range(2, honest_peers + 2), records, tmp_path)
    async with pinned_node(tmp_path / "attacked", honest_peers + 2, limits) as node:
        await _honest_syncs(node, range(1, 2), records, tmp_path)  # the same warm-up
        slow = Hostile(node.spec(0, mode="slowloris", connections=10, streams=10, hold_s=14))
        servicer = node.running.servicer
        assert servicer is not None
        hostile_id = node_id_of(node.clients[0].certificate).hex()
        for _ in range(150):  # until its streams hold every slot it may have (<= 15 s)
            if servicer._streams.get(hostile_id, 0) >= limits.streams_per_caller:
                break
            await asyncio.sleep(0.1)
        held = servicer._streams.get(hostile_id, 0)
        await _until_idle(slow.process.pid)  # its start-up burst is over: only the streams
        attacked = await _honest_syncs(node, range(2, honest_peers + 2), records, tmp_path)
        still_held = servicer._streams.get(hostile_id, 0)  # the syncs ran under attack
        result = await slow.result(30)
    closed = result["closed"]
    capped = [c for c in closed if "too many concurrent streams" in c[1]]
    idled = [c for c in closed if "idle stream closed" in c[1]]
    p99_base, p99 = percentile(baseline, 0.99), percentile(attacked, 0.99)
    print(
        f"baseline {baseline}; attacked {attacked}; hostile codes {result['codes']}; "
        f"capped {len(capped)}, idled {len(idled)} at {[round(c[2], 1) for c in idled]}"
    )
    idle_in_time = all(c[2] <= idle_s + 6 for c in idled)  # + the hostile's start-up
    passed = (
        len(attacked) == honest_peers
        and len(capped) + len(idled) == 100
        and len(idled) == limits.streams_per_caller
        and idle_in_time
        and held == still_held == limits.streams_per_caller
        and p99 <= 2 * p99_base
    )
    report(
        "a pinned peer holds 10 connections x 10 push streams that send nothing while honest "
        "peers sync: all honest syncs complete, the hostile peer is held to the per-peer "
        "stream cap (RESOURCE_EXHAUSTED), its idle streams are closed after the idle "
        "timeout, honest p99 sync time <= 2x the run without it",
        f"100 hostile streams: {len(capped)} refused at the cap, {len(idled)} closed idle "
        f"after {idle_s:.0f} s; {len(attacked)}/{honest_peers} honest syncs of {records} "
        f"records complete, p99 {p99:.2f} s vs {p99_base:.2f} s baseline "
        f"(x{p99 / p99_base:.2f})",
        passed,
        honest=honest_peers,
        p99_s=round(p99, 2),
        baseline_p99_s=round(p99_base, 2),
        capped=len(capped),
        idled=len(idled),
    )
    assert len(attacked) == honest_peers
    assert len(capped) + len(idled) == 100, result
    assert len(idled) == limits.streams_per_caller and idle_in_time
    assert held == still_held == limits.streams_per_caller
    assert p99 <= 2 * p99_base


# -- C17: slow and stuck subscribers -------------------------------------------------------


async def test_c17_slow_and_stuck_subscribers(  # noqa: PLR0915
    tmp_path: Path, tier: Tier, report: Report
) -> None:
    total, batch = tier.pick((10_000, 100), (50_000, 100))
    slow_count, fast_count = 20, 3
    author = new_author()
    write_idle_s = 2.0
    queue = 16  # live batches a subscriber may fall behind (64 by default)
    limits = Limits(streams_per_caller=100, write_idle_s=write_idle_s, subscriber_queue=queue)
    store = await open_store(tmp_path / "node.db")
    running = await start_server(store, "node", "127.0.0.1:0", limits=limits)
    servicer = running.servicer
    assert servicer is not None
    target = f"127.0.0.1:{running.port}"
    pushed_at: dict[int, float] = {}  # the pusher sent the batch
    stored_at: dict[int, float] = {}  # the node acknowledged it (stored)
    fast_seen: list[list[int]] = [[] for _ in range(fast_count)]
    received: list[dict[int, float]] = [{} for _ in range(fast_count)]

    def streams() -> int:
        return sum(servicer._streams.values())

    async def until(condition: Any, seconds: float) -> bool:
        for _ in range(int(seconds / 0.1)):
            if condition():
                return True
            await asyncio.sleep(0.1)
        return bool(condition())

    async def fast(n: int) -> None:
        async with PeerClient(target) as peer:
            stream = peer.subscribe()
            try:
                while len(fast_seen[n]) < total:
                    records, _ = await asyncio.wait_for(anext(stream), 30)
                    now = time.monotonic()
                    for record in records:
                        fast_seen[n].append(record.idx)
                        received[n][record.idx] = now
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

    async def push_all() -> None:
        head = Head(0)
        keys = {author.host: author.signing.public_key}
        async with PeerClient(target) as peer:
            for start in range(0, total, batch):
                count = min(batch, total - start)
                stamps = [1_000 + start + i for i in range(count)]
                records = author.write("t", head, stamps, [b"x" * 1000] * count)
                head = Head(start + count, record_hash(records[-1]))
                now = time.monotonic()
                for record in records:
                    pushed_at[record.idx] = now

                async def one(records: list[Any] = records) -> AsyncIterator[Any]:
                    yield records, keys

                await peer.push(one())
                now = time.monotonic()  # acknowledged: the node has stored them
                for record in records:
                    stored_at[record.idx] = now
                await asyncio.sleep(0.02)

    hostile = None
    try:
        async with RssPeak() as rss:
            hostile = Hostile(
                json.dumps(
                    {
                        "target": target,
                        "mode": "subscribers",
                        "slow": slow_count,
                        "stuck": 1,
                        "pause": 1.0,
                        "hold_s": 40,
                    }
                )
            )
            opened = await until(lambda: streams() >= slow_count + 1, 20)
            fast_tasks = [asyncio.create_task(fast(n)) for n in range(fast_count)]
            await until(lambda: streams() >= slow_count + 1 + fast_count, 10)
            started = time.monotonic()
            await push_all()
            await asyncio.wait_for(asyncio.gather(*fast_tasks), 60)
            pushed_s = time.monotonic() - started
            # The slow and stuck streams are cut once they fell behind (bounded wait).
            await until(lambda: streams() == 0, 30)
            left = streams()

    finally:
        if hostile is not None and hostile.running():
            hostile.process.kill()
        if hostile is not None:
            hostile.process.communicate(timeout=10)
        await running.stop(grace=0.2)
        await store.close()
    cut = slow_count + 1 - left
    in_order = all(seen == list(range(total)) for seen in fast_seen)
    # Delay after the node stored a record (a subscriber may get it before the pusher
    # sees the acknowledgement: 0); and, for the record, after the pusher sent it.
    delays = [max(0.0, at - stored_at[idx]) for seen in received for idx, at in seen.items()]
    p99 = percentile(delays, 0.99)
    p99_sent = percentile([at - pushed_at[i] for seen in received for i, at in seen.items()], 0.99)
    bound = 4 * (slow_count + 1) + 30
    print(
        f"opened {opened}; pushed {total} in {pushed_s:.1f} s; fast p99 {p99 * 1000:.0f} ms; "
        f"{cut} cut, {left} left; RSS +{rss.growth:.1f} MB"
    )
    passed = opened and in_order and p99 < 1.0 and rss.growth < bound and left == 0
    report(
        f"{slow_count} subscribers reading 1 msg/s and 1 that never reads (another process) "
        f"while {total:,} records of 1 KB arrive: server RSS bounded (< 4 MB per slow stream "
        f"+ 30 MB = {bound} MB), {fast_count} fast subscribers see every record in order with "
        f"p99 delay < 1 s after the node stored a record, slow and stuck streams cut "
        f"(queue overflow, then cancelled after the write-idle timeout, {write_idle_s:.0f} s "
        f"here; a queue of {queue} batches)",
        f"{slow_count + 1} slow/stuck subscribers: RSS +{rss.growth:.1f} MB, fast p99 "
        f"{p99 * 1000:.0f} ms ({p99_sent * 1000:.0f} ms from the pusher's send), "
        f"{cut}/{slow_count + 1} cut off, fast in order: {in_order}",
        passed,
        records=total,
        rss_mb=round(rss.growth, 1),
        fast_p99_ms=round(p99 * 1000),
        fast_p99_from_send_ms=round(p99_sent * 1000),
        cut=cut,
    )
    assert opened
    assert in_order
    assert p99 < 1.0
    assert rss.growth < bound
    assert left == 0
