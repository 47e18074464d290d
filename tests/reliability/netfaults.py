"""Network-fault harness for group D: real `peer serve` daemons as subprocesses, joined
either by network namespaces (root: one namespace per node, veth pairs into a hub
namespace with a bridge; partitions are blackhole routes inside the namespaces, which
need only iproute2) or, without root, on loopback through a user-space asyncio TCP
fault proxy per ordered pair of nodes.

Everything is bounded: each wait has a deadline, each daemon is killed and each
namespace deleted in `close()`, which the tests call in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from peer.client import LocalClient
from peer.errors import PeerError

CLI_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
POLL_S = 0.1
STATUS_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without PEER_* (a daemon reads those as settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
    env["GRPC_VERBOSITY"] = "ERROR"
    env.update(extra or {})
    return env


async def cli(
    home: Path,
    *args: str,
    prefix: Sequence[str] = (),
    check: bool = True,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """One `peer` command as a subprocess; its stdout (stderr in the error, or appended
    when `check` is false)."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "peer.cli",
        "--home",
        str(home),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(env),
    )
    try:
        feed = stdin.encode() if stdin is not None else None
        out, err = await asyncio.wait_for(process.communicate(feed), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if check and process.returncode != 0:
        raise AssertionError(f"peer {' '.join(args)}: {err.decode()}")
    return out.decode() + ("" if check else err.decode())


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, timeout: float) -> float:
    """Poll until `condition` holds; the seconds it took. Bounded by `timeout`."""
    started = time.monotonic()
    for _ in range(int(timeout / POLL_S) + 1):
        if await condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            break
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- daemons --------------------------------------------------------------------------


@dataclass
class Daemon:
    """One node: its home, and its `peer serve` process (restartable on the same port)."""

    name: str
    home: Path
    listen: str
    prefix: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    paused: bool = False

    @property
    def socket(self) -> str:
        return str(self.home / "peer.sock")

    async def start(self) -> None:
        self.starts += 1
        out = self.home / f"serve-{self.starts}.out"
        err = self.home / f"serve-{self.starts}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *self.prefix,
                sys.executable,
                "-m",
                "peer.cli",
                "--home",
                str(self.home),
                "serve",
                "--listen",
                self.listen,
                "--json",
                stdout=stdout,
                stderr=stderr,
                env=clean_env(self.env),
            )

        async def ready() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited: {err.read_text()}")
            return bool(out.read_bytes().strip())

        await eventually(ready, f"{self.name} to serve", READY_TIMEOUT_S)

    def stderr_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.home.glob("*.err")))

    async def kill(self) -> None:
        """kill -9 (after SIGCONT if paused, so the kernel can reap it)."""
        if self.process is not None and self.process.returncode is None:
            self._signal(signal.SIGKILL)
            if self.paused:
                self._signal(signal.SIGCONT)
            await asyncio.wait_for(self.process.wait(), 20)
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused and self.process.returncode is None:
            self._signal(signal.SIGCONT)
        self.paused = False

    def _signal(self, signum: int) -> None:
        """Signal the daemon (the process itself: no wrapper forks in between)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    async def status(self) -> dict[str, Any] | None:
        """The daemon's live status (`peer status --json`), or None if it does not answer."""
        try:
            async with LocalClient(self.socket, timeout=STATUS_TIMEOUT_S) as client:
                return (await client.status()).as_json()
        except PeerError:
            return None


def heads(status: dict[str, Any] | None) -> dict[tuple[str, str], tuple[int, str]] | None:
    if status is None:
        return None
    return {(log["host"], log["tag"]): (log["next_idx"], log["head"]) for log in status["logs"]}


async def all_heads_equal(daemons: Sequence[Daemon], want_logs: int) -> bool:
    seen = [heads(await d.status()) for d in daemons]
    first = seen[0]
    return first is not None and len(first) >= want_logs and all(s == first for s in seen)


async def init_homes(root: Path, names: Sequence[str]) -> list[tuple[Path, str]]:
    """Homes sharing one sync key; (home, node id) each."""
    made: list[tuple[Path, str]] = []
    key = ""
    for name in names:
        home = root / name
        args = ["init", "--name", name, "--json"] + (["--key", key] if key else [])
        node_id = json.loads(await cli(home, *args))["node_id"]
        if not key:
            key = (await cli(home, "key", "export")).strip()
        made.append((home, node_id))
    return made


def write_config(home: Path, settings: dict[str, Any], peers: Sequence[tuple[str, str]]) -> None:
    """config.toml: [sync] settings (discovery off) and [[peers]] (node id, address)."""
    lines = ["[sync]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["", "[discovery]", "enabled = false"]
    for node_id, address in peers:
        lines += ["", "[[peers]]", f'id = "{node_id}"', f'address = "{address}"']
    (home / "config.toml").write_text("\n".join(lines) + "\n")


# -- the user-space fault proxy -------------------------------------------------------


@dataclass
class Faults:
    """What the proxy does to the bytes it forwards (all off: a transparent proxy)."""

    blackhole: bool = False  # forward nothing, close nothing (like iptables DROP)
    latency: float = 0.0  # seconds added before each chunk is forwarded
    reset_every: int = 0  # bytes per connection, then RST both sides (0: never)
    stall: bool = False  # hold the bytes until the stall ends, then forward them
    flip_after: int = 0  # flip one bit at this offset of a stream (once per `set`)


class FaultProxy:
    """An asyncio TCP proxy 127.0.0.1:port -> target with switchable faults."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.faults = Faults()
        self.flips = 0
        self.resets = 0
        self.connections = 0
        self._flip_armed = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, **faults: Any) -> None:
        self.faults = Faults(**faults)
        self._flip_armed = self.faults.flip_after > 0
        if self.faults.stall:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def clear(self, reset_open: bool = False) -> None:
        self.set()
        if reset_open:
            self.reset_all()

    def reset_all(self) -> None:
        for writer in list(self._open):
            _reset(writer)

    async def close(self) -> None:
        self._unstalled.set()
        if self._server is not None:
            self._server.close()
        self.reset_all()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except OSError:
            _reset(writer)
            return
        except TimeoutError:
            _reset(writer)
            return
        self._open |= {writer, up_writer}
        budget = [self.faults.reset_every]
        pair = (writer, up_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair, budget),
                self._pipe(up_reader, writer, pair, budget),
            )
        finally:
            for w in pair:
                self._open.discard(w)
                _reset(w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        budget: list[int],
    ) -> None:
        offset = 0
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(16384):
                faults = self.faults
                if faults.blackhole:
                    continue
                await self._unstalled.wait()
                if faults.latency:
                    await asyncio.sleep(faults.latency)
                at = faults.flip_after - offset
                if self._flip_armed and 0 <= at < len(chunk):
                    chunk = chunk[:at] + bytes([chunk[at] ^ 0x10]) + chunk[at + 1 :]
                    self._flip_armed = False
                    self.flips += 1
                offset += len(chunk)
                if budget[0]:
                    budget[0] -= len(chunk)
                    if budget[0] <= 0:
                        self.resets += 1
                        for w in pair:
                            _reset(w)
                        return
                writer.write(chunk)
                await writer.drain()
        for w in pair:
            _reset(w)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a middlebox or a crashed host would."""
    with contextlib.suppress(OSError):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- networks: how nodes reach each other, and how to cut them apart ------------------


class Network(Protocol):
    @property
    def kind(self) -> str: ...

    def listen(self, i: int) -> str: ...
    def address(self, i: int, j: int) -> str: ...
    def prefix(self, i: int) -> list[str]: ...
    async def partition(self, groups: Sequence[Sequence[int]]) -> None: ...
    async def heal(self) -> None: ...
    async def close(self) -> None: ...


class ProxyNetwork:
    """Loopback: node i reaches node j through its own proxy (i, j)."""

    kind = "loopback + user-space proxy"

    def __init__(self, count: int) -> None:
        self.count = count
        self.ports = [free_port() for _ in range(count)]
        self.proxies: dict[tuple[int, int], FaultProxy] = {}

    async def start(self) -> None:
        for i in range(self.count):
            for j in range(self.count):
                if i != j:
                    proxy = FaultProxy(self.ports[j])
                    await proxy.start()
                    self.proxies[i, j] = proxy

    def listen(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def address(self, i: int, j: int) -> str:
        return self.proxies[i, j].address

    def prefix(self, i: int) -> list[str]:
        return []

    async def partition(self, groups: Sequence[Sequence[int]]) -> None:
        for (i, j), proxy in self.proxies.items():
            if _apart(groups, i, j):
                proxy.set(blackhole=True)

    async def heal(self) -> None:
        for proxy in self.proxies.values():
            if proxy.faults.blackhole:
                proxy.clear(reset_open=True)  # blackholed connections are dead anyway

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()


def _apart(groups: Sequence[Sequence[int]], i: int, j: int) -> bool:
    return not any(i in g and j in g for g in groups)


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "network namespaces need Linux and root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.decode().strip()}")


class NetnsNetwork:
    """One namespace per node (198.18.7.i+1), veths into a hub namespace's bridge.
    A partition drops the other side's packets silently (no RST, no ICMP): with
    `iptables -j DROP` on input inside each namespace, or, without iptables, with
    blackhole routes (only iproute2; the sender's own stack discards them)."""

    PORT = 7400

    def __init__(self, count: int) -> None:
        self.iptables = shutil.which("iptables") is not None
        self.kind = "network namespaces + " + (
            "iptables DROP" if self.iptables else "blackhole routes"
        )
        self.count = count
        tag = f"{os.getpid() % 100000}"
        self.hub = f"pd-hub-{tag}"
        self.names = [f"pd-n{i}-{tag}" for i in range(count)]
        self.blocked: list[tuple[int, int]] = []
        self.made: list[str] = []

    def ip_of(self, i: int) -> str:
        return f"198.18.7.{i + 1}"

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self._create()
        if self.iptables:  # the binary may be there without netfilter in namespaces
            probe = ["ip", "netns", "exec", self.names[0], "iptables", "-w", "-L", "INPUT"]
            done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
            self.iptables = done.returncode == 0
            self.kind = "network namespaces + " + (
                "iptables DROP" if self.iptables else "blackhole routes"
            )

    def _create(self) -> None:
        _ip("netns", "add", self.hub)
        self.made.append(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        _ip("-n", self.hub, "link", "set", "lo", "up")
        for i, ns in enumerate(self.names):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}")
            _ip("-n", ns, "link", "set", f"v{i}", "netns", self.hub)
            _ip("-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.ip_of(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def listen(self, i: int) -> str:
        return f"{self.ip_of(i)}:{self.PORT}"

    def address(self, i: int, j: int) -> str:
        return self.listen(j)

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    async def partition(self, groups: Sequence[Sequence[int]]) -> None:
        for i in range(self.count):
            for j in range(self.count):
                if i != j and _apart(groups, i, j):
                    self._block(i, j, add=True)
                    self.blocked.append((i, j))

    def _block(self, i: int, j: int, add: bool) -> None:
        if self.iptables:
            rule = ["INPUT", "-s", self.ip_of(j), "-j", "DROP"]
            command = ["ip", "netns", "exec", self.names[i], "iptables", "-w"]
            command += ["-A" if add else "-D", *rule]
            done = subprocess.run(command, capture_output=True, timeout=10, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"iptables: {done.stderr.decode().strip()}")
        else:
            verb = "add" if add else "del"
            _ip("-n", self.names[i], "route", verb, "blackhole", f"{self.ip_of(j)}/32")

    async def heal(self) -> None:
        while self.blocked:
            i, j = self.blocked.pop()
            self._block(i, j, add=False)

    async def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        self.made.clear()


class SkewNetwork:
    """Loopback, direct (no proxy); node i runs with its clock moved by skews[i]."""

    kind = "loopback + libfaketime"

    def __init__(self, skews: Sequence[str]) -> None:
        self.skews = list(skews)
        self.ports = [free_port() for _ in skews]

    def listen(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def address(self, i: int, j: int) -> str:
        return self.listen(j)

    def prefix(self, i: int) -> list[str]:
        return []

    def env(self, i: int) -> dict[str, str]:
        return faketime_env(self.skews[i])

    async def partition(self, groups: Sequence[Sequence[int]]) -> None:
        raise NotImplementedError("no partitions here")

    async def heal(self) -> None:
        return None

    async def close(self) -> None:
        return None


LIBFAKETIME = [
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/faketime/libfaketime.so.1"),
]


def libfaketime() -> Path | None:
    return next((p for p in LIBFAKETIME if p.exists()), None)


def faketime_env(offset: str) -> dict[str, str]:
    """The environment running a process with its clock moved by `offset` (-3d, +5y):
    libfaketime preloaded into the process itself (the `faketime` wrapper forks, and a
    kill -9 of the wrapper would leave the daemon running)."""
    library = libfaketime()
    if not offset or library is None:
        return {}
    return {
        "LD_PRELOAD": str(library),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


async def make_network(count: int) -> ProxyNetwork | NetnsNetwork:
    """Namespaces when root can make them, else loopback proxies (PEER_NET=proxy forces
    the proxies, to exercise the unprivileged path as root)."""
    if netns_unavailable() is None and os.environ.get("PEER_NET") != "proxy":
        network = NetnsNetwork(count)
        try:
            await network.start()
            return network
        except RuntimeError as exc:
            print(f"namespaces unavailable ({exc}); using the user-space proxy")
            await network.close()
    proxies = ProxyNetwork(count)
    await proxies.start()
    return proxies


async def start_mesh(
    root: Path, network: Network, count: int, settings: dict[str, Any]
) -> list[Daemon]:
    """`count` daemons, each pinning every other one, all started."""
    homes = await init_homes(root, [f"n{i}" for i in range(count)])
    daemons: list[Daemon] = []
    for i, (home, _) in enumerate(homes):
        pins = [(homes[j][1], network.address(i, j)) for j in range(count) if j != i]
        write_config(home, settings, pins)
        env = network.env(i) if isinstance(network, SkewNetwork) else {}
        daemons.append(Daemon(f"n{i}", home, network.listen(i), network.prefix(i), env))
    for daemon in daemons:
        await daemon.start()
    return daemons


async def stop_all(daemons: Sequence[Daemon]) -> None:
    for daemon in daemons:
        with contextlib.suppress(Exception):
            await daemon.kill()


def leftovers(root: Path) -> list[int]:
    """Processes still running a `peer` command on a home under `root` (should be none)."""
    marker = f"--home\0{root}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


async def tail_data(daemon: Daemon, tag: str) -> list[dict[str, Any]]:
    """`peer tail --json --tag TAG` of a node: every record it holds, decrypted."""
    out = await cli(daemon.home, "tail", "--json", "--tag", tag)
    return [json.loads(line) for line in out.splitlines() if line.strip()]
