"""C18: every outgoing call has a deadline, and every handler bounds its own runtime.

The channel's multi-callable factories are wrapped so that a call without `timeout=`
fails the test at once (the long-lived Subscribe, Follow and AppendStream are the
exceptions, only on a channel with HTTP/2 keepalive and a ping timeout, which end it
when the peer goes silent). A representative workload then runs through them, all real
and in process: two `Daemon`s over mutual TLS (pairing Join, the mesh's rounds and live
streams, the local API on the Unix socket through `peer.api` (its writer too), `peer
sync`'s `sync_peers`), and raw `PeerClient` sessions (get_index, pull, push, subscribe,
sync_with both ways). The call sites exercised are checked against every channel call
site in `peer/` (found by parsing the source), so a new call site without a deadline
cannot hide from the test.

Server side: a pull whose caller reads nothing must end within the idle bound (the push
idle bound is C14's, the stuck subscriber's write-idle cut C17's).
"""

from __future__ import annotations

import ast
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc.aio import _channel

import peer
from peer import codec
from peer.api import Connection
from peer.client import LocalClient, PeerClient
from peer.config import Config
from peer.daemon import Daemon
from peer.home import Home
from peer.node import Node
from peer.pair import invite, join
from peer.records import LogKey, Range
from peer.service import Limits
from peer.settings import DiscoveryConfig, Schedule
from peer.sync import sync_with
from peer.sync_now import sync_peers
from tests.nodes import Nodes, batches_of, keys_of
from tests.nodes import eventually as poll
from tests.reliability.conftest import Report
from tests.reliability.rel_c import RAW, method

KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
PEER_DIR = Path(peer.__file__).resolve().parent
LONG_LIVED = {f"/{codec.SERVICE_NAME}/{name}" for name in ("Subscribe", "Follow")} | {
    f"/{codec.LOCAL_SERVICE_NAME}/AppendStream"  # a producer may write for days
}  # ...
KEEPALIVE_OPTIONS = ("grpc.keepalive_time_ms", "grpc.http2.ping_timeout_ms")  # ... with these
IDLE_S = 2.0  # the server's idle bound in the silent-client check
SLACK_S = 3.0


@dataclass
class Guard:
    """What the wrapped factories saw: (site, method) -> calls with a deadline."""

    options: dict[int, dict[str, Any]] = field(default_factory=dict)  # id(channel) -> options
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    long_lived: Counter[tuple[str, str]] = field(default_factory=Counter)
    missing: list[tuple[str, str]] = field(default_factory=list)
    keepalive: set[tuple[int, int]] = field(default_factory=set)
    enforce: bool = True

    def check(self, channel: Any, site: str, name: str, timeout: float | None) -> None:
        if not self.enforce:
            return
        if timeout is not None:
            self.calls[site, name] += 1
            return
        options = self.options.get(id(channel), {})
        if name in LONG_LIVED and all(options.get(o, 0) > 0 for o in KEEPALIVE_OPTIONS):
            self.long_lived[site, name] += 1
            self.keepalive.add(tuple(options[o] for o in KEEPALIVE_OPTIONS))  # type: ignore[arg-type]
            return
        self.missing.append((site, name))
        raise AssertionError(f"{name} called without a deadline at {site}")


def _site() -> str:
    """file:line of the first frame outside this module and grpc (the factory's caller)."""
    frame = sys._getframe(2)
    return f"{Path(frame.f_code.co_filename).resolve()}:{frame.f_lineno}"


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    seen = Guard()
    for factory in ("insecure_channel", "secure_channel"):
        original_factory = getattr(aio, factory)

        def made(*args: Any, _original: Callable[..., Any] = original_factory, **kw: Any) -> Any:
            channel = _original(*args, **kw)
            seen.options[id(channel)] = dict(kw.get("options") or ())
            return channel

        monkeypatch.setattr(aio, factory, made)
    for kind in KINDS:
        original = getattr(_channel.Channel, kind)

        def factory_of(
            self: Any, name: str, *args: Any, _original: Callable[..., Any] = original, **kw: Any
        ) -> Any:
            callable_ = _original(self, name, *args, **kw)
            site = _site()

            def call(
                request: Any = None, *c_args: Any, timeout: float | None = None, **c_kw: Any
            ) -> Any:
                seen.check(self, site, name, timeout)
                return callable_(request, *c_args, timeout=timeout, **c_kw)

            return call

        monkeypatch.setattr(_channel.Channel, kind, factory_of)
    yield seen


def channel_call_sites() -> set[str]:
    """Every `<x>.unary_unary(...)` (and the other three) in peer/: file:line."""
    sites = set()
    for path in sorted(PEER_DIR.rglob("*.py")):
        if "v1" in path.relative_to(PEER_DIR).parts:
            continue  # generated stubs (unused: every call site is raw bytes)
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in KINDS
            ):
                sites.add(f"{path.resolve()}:{node.lineno}")
    return sites


def short(site: str) -> str:
    return str(Path(site).relative_to(PEER_DIR.parent)) if site.startswith("/") else site


async def _daemon(root: Path, name: str, schedule: Schedule) -> Daemon:
    node = await Node.init(Home(root / name), name)
    config = Config(listen="127.0.0.1:0", sync=schedule, discovery=DiscoveryConfig(enabled=False))
    daemon = Daemon(node, config)
    await daemon.start()
    return daemon


async def _holds(node: Node, log: LogKey, count: int) -> bool:
    head = (await node.store.index()).get(log)
    return head is not None and head.next_idx >= count


async def daemon_workload(root: Path) -> dict[str, int]:
    """Two in-process daemons over mTLS: pairing, mesh rounds and live streams, the
    local API, and `peer sync`."""
    schedule = Schedule(interval=0.5, backoff_initial=0.2, backoff_max=1.0)
    a = await _daemon(root, "a", schedule)
    b = await _daemon(root, "b", schedule)
    done: dict[str, int] = {}
    try:
        invitation = await invite(a.node, relay=False, ttl_s=60, address=None)
        await join(b.node, invitation)  # PairingService.Join; B pins A (with its address)
        serving = a.node.home.serving()
        assert serving is not None
        async with Connection(LocalClient(serving.socket), None, a.node.home.root) as api:
            appended = await api.append("notes", *[f"a{n}" for n in range(20)])
            log = LogKey(appended.host, "notes")
            await poll(lambda: _holds(b.node, log, 20), "B to get A's records", 30)
            await api.append("notes", "live")  # B's live stream (or its next round)
            await poll(lambda: _holds(b.node, log, 21), "B to get the live record", 30)
            done["api_index"] = sum((await api.get_index()).values())
            done["api_status"] = len((await api.status())["logs"])
            got = 0
            async with asyncio.timeout(10):
                async for _ in api.subscribe(tags=["notes"]):
                    got += 1
                    if got == 21:
                        break
            done["api_subscribed"] = got
            async with api.writer("stream") as writer:  # AppendStream: keepalive-bounded
                await writer.write(*[f"s{n}" for n in range(10)])
                done["api_streamed"] = sum(end - start for start, end in await writer.flush())
        async with LocalClient(serving.socket) as local:  # the unary Append (api streams)
            done["unary_appended"] = (await local.append("notes", [b"unary"])).count
        await b.node.append("notes", [b"b0", b"b1"])
        results = await sync_peers(b.node, [], 100, lambda address: lambda done, total: None)
        done["peer_sync_errors"] = sum(r.error is not None for r in results)
        done["links_live_rounds"] = sum(s.pulled + s.pushed for s in b.mesh.states())
    finally:
        for daemon in (b, a):
            await daemon.stop()
            await daemon.node.close()
    return done


async def client_workload(root: Path) -> dict[str, int]:
    """Raw PeerClient sessions on loopback: every method, and sync_with both ways."""
    done: dict[str, int] = {}
    root.mkdir()
    async with Nodes(root) as nodes:
        x = await nodes.node("x")
        y = await nodes.node("y")
        await x.append_each("t", 30)
        await y.append_each("t", 5)
        async with PeerClient(x.target) as session:
            index = await session.get_index()
            ranges = [Range(log.host, log.tag, 0, h.next_idx) for log, h in index.logs.items()]
            done["pulled"] = sum([len(b) async for b, _ in session.pull(ranges, 7)])
            ours = await y.store.read_range(y.host, "t", 0, 5)
            added, _ = await session.push(batches_of((ours, keys_of(y.author))))
            done["pushed"] = added
            seen = 0
            async with asyncio.timeout(10):
                async for records, _ in session.subscribe(tags=["t"]):
                    seen += len(records)
                    if seen >= 35:
                        break
            done["subscribed"] = seen
        for client, server in ((x, y), (y, x)):
            async with PeerClient(server.target) as session:
                await asyncio.wait_for(sync_with(client.store, session, batch=10), 30)
    return done


async def silent_puller(root: Path, guard: Guard) -> tuple[float, str]:
    """A PullRecords caller that sets no deadline and reads nothing: the server's
    handler must end by itself; the seconds it took and what the caller got."""
    root.mkdir()
    async with Nodes(root) as nodes:
        s = await nodes.node("s", limits=Limits(idle_s=IDLE_S))
        for _ in range(16):  # 16 MB: far more than the transport buffers for one stream
            await s.store.append(s.author, "big", [bytes(64 << 10)] * 16)
        servicer = s.running.servicer if s.running else None
        assert servicer is not None
        index = await s.store.index()
        ranges = [Range(log.host, log.tag, 0, h.next_idx) for log, h in index.items()]
        async with aio.insecure_channel(s.target) as channel:
            guard.enforce = False  # a hostile caller: no deadline, on purpose
            call = channel.unary_stream(method("PullRecords"), **RAW)
            stream = call(codec.encode_pull_request(ranges, 0))
            guard.enforce = True
            await stream.wait_for_connection()
            started = time.monotonic()

            async def ended() -> bool:
                return not servicer._streams  # type: ignore[attr-defined]

            await poll(ended, "the pull handler to end", IDLE_S + 30)
            took = time.monotonic() - started
            try:
                async with asyncio.timeout(10):
                    async for _ in stream:
                        pass
                outcome = "OK"
            except aio.AioRpcError as exc:
                outcome = exc.code().name
            except TimeoutError:
                outcome = "still open"
            stream.cancel()
    return took, outcome


async def test_c18_every_call_has_deadline(guard: Guard, tmp_path: Path, report: Report) -> None:
    started = time.monotonic()
    daemon_done = await daemon_workload(tmp_path / "daemons")
    client_done = await client_workload(tmp_path / "clients")
    workload_s = time.monotonic() - started
    exercised = {site for site, _ in guard.calls} | {site for site, _ in guard.long_lived}
    in_peer = {s for s in exercised if s.startswith(str(PEER_DIR))}
    static = channel_call_sites()
    methods = {name for _, name in guard.calls} | {name for _, name in guard.long_lived}
    cut_s, outcome = await silent_puller(tmp_path / "silent", guard)
    print(f"daemon workload: {daemon_done}; clients: {client_done}")
    print("calls with a deadline:", {(short(s), n): c for (s, n), c in guard.calls.items()})
    print("long-lived, keepalive-bounded:", dict(guard.long_lived), guard.keepalive)
    print(f"static call sites: {sorted(short(s) for s in static)}")
    keepalive = ", ".join(
        f"{t / 1000:.0f} s + {p / 1000:.0f} s" for t, p in sorted(guard.keepalive)
    )
    passed = (
        not guard.missing
        and in_peer == static
        and len(methods) == 10
        and cut_s <= IDLE_S + SLACK_S
        and outcome == "RESOURCE_EXHAUSTED"
        and daemon_done.get("peer_sync_errors") == 0
    )
    report(
        "every client call carries a deadline (a long-lived Subscribe, Follow or AppendStream "
        "only on a channel whose keepalive and ping timeout end it); every handler bounds its "
        "own runtime",
        f"{len(static)} call sites in peer/ ({len(in_peer)} exercised), {len(methods)} methods, "
        f"{sum(guard.calls.values())} calls, {len(guard.missing)} without deadline; "
        f"Subscribe, Follow and AppendStream ({sum(guard.long_lived.values())} streams) bounded "
        f"by keepalive {keepalive} instead of a deadline; a pull that reads nothing is cut "
        f"{cut_s:.1f} s after it stalls (idle bound {IDLE_S:.0f} s, caller sees {outcome}); "
        f"silent push and stuck subscriber: C14, C17",
        passed,
        call_sites=len(static),
        exercised=len(in_peer),
        calls=sum(guard.calls.values()),
        without_deadline=len(guard.missing),
        pull_cut_s=round(cut_s, 2),
        workload_s=round(workload_s, 1),
    )
    assert not guard.missing, guard.missing
    assert in_peer == static, (sorted(map(short, in_peer)), sorted(map(short, static)))
    assert len(methods) == 10, methods
    assert daemon_done.get("peer_sync_errors") == 0, daemon_done
    assert cut_s <= IDLE_S + SLACK_S and outcome == "RESOURCE_EXHAUSTED", (cut_s, outcome)
