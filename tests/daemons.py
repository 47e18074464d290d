"""Real `peer serve` daemons as subprocesses, for the tests of the daemon (issue 5).

Each daemon serves one home on a fixed loopback port chosen free beforehand, so a
daemon that is killed comes back on the same address its peers have pinned. Homes are
made and pinned in process (the CLI for that is tested elsewhere; this keeps the suite
fast); everything the tests check goes through the daemons: the `peer` CLI, and the
Python API on each daemon's Unix socket, which serves the same live status as
`peer status --json` and is cheap enough to poll.

Every wait is bounded: `until` polls with a deadline, a daemon that does not print its
ready line in time fails the test with its stderr, and `Daemons.close` stops (SIGTERM,
then SIGKILL) every process it started, whatever happened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peer import api
from peer.crypto import SyncKey
from peer.home import Home as HomeFiles
from peer.identity import format_node_id, parse_node_id
from peer.node import Node
from peer.store import TrustedPeer
from tests.cli import ok

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.02
INTERVAL_S = 2.0  # the sync interval of the test daemons: short, so rounds happen

T = TypeVar("T")
Logs = dict[tuple[str, str], int]


# -- the CLI --------------------------------------------------------------------------


async def aok(home: Path, *args: str, stdin: str | None = None) -> str:
    """`ok` without blocking the event loop (subscribers keep reading meanwhile)."""
    return await asyncio.to_thread(ok, home, *args, stdin=stdin)


def cli_status(home: Path) -> dict[str, Any]:
    """`peer status --json` of a home (the daemon's live state when one runs)."""
    value: dict[str, Any] = json.loads(ok(home, "status", "--json"))
    return value


def logs_of(status: dict[str, Any]) -> Logs:
    """(host, tag) -> next_idx of every log in a status object."""
    return {(log["host"], log["tag"]): log["next_idx"] for log in status["logs"]}


def texts(home: Path, tag: str | None = None) -> list[str]:
    """The plaintexts `peer tail --json` prints, in its order ("b64:..." if not UTF-8,
    "error:..." if not readable here)."""
    args = ["tail", "--json"] + (["--tag", tag] if tag else [])
    shown = []
    for line in ok(home, *args).splitlines():
        entry = json.loads(line)
        if "data" in entry:
            shown.append(entry["data"])
        elif "data_b64" in entry:
            shown.append(f"b64:{entry['data_b64']}")
        else:
            shown.append(f"error:{entry['error']}")
    return shown


# -- waiting --------------------------------------------------------------------------


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    """Await `probe` until it returns something truthy (returned), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last})")
        await asyncio.sleep(POLL_S)


async def holds(probe: Callable[[], Awaitable[bool]], what: str, duration: float) -> None:
    """`probe` stays true for `duration` seconds (checked at every poll)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert await probe(), f"{what} stopped holding"
        await asyncio.sleep(POLL_S * 5)


# -- homes ----------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now, outside the kernel's ephemeral range (so
    no outgoing connection takes one while its daemon is down for a restart). Each is
    even, with the next one free too: a daemon serves pairing on its port + 1."""
    chosen: list[int] = []
    for _ in range(500):
        port = random.randrange(20_000, 32_000) & ~1
        if port in chosen or not all(_bindable(p) for p in (port, port + 1)):
            continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise AssertionError("no free loopback ports")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own (callable from sync and async tests alike)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class Home:
    """A node's home, its identity and the fixed port its daemon serves on."""

    name: str
    root: Path
    node_id: str
    node_id_bytes: bytes
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def _make_homes(root: Path, names: Iterable[str], relays: Iterable[str]) -> list[Home]:
    sync = SyncKey.generate()
    wanted = [(n, False) for n in names] + [(n, True) for n in relays]
    ports = iter(free_ports(len(wanted)))
    made = []
    for name, relay in wanted:
        node = await Node.init(HomeFiles(root / name), name, None if relay else sync, relay=relay)
        await node.close()
        identity = node.identity
        node_id = identity.node_id
        made.append(
            Home(name, root / name, format_node_id(node_id), node_id, identity.host.hex(), 0)
        )
        made[-1].port = next(ports)
    return made


async def _pin(pairs: list[tuple[Home, Home]], certificates: bool) -> None:
    for home, other in pairs:
        node = await Node.open(HomeFiles(home.root))
        certificate = (other.root / "tls.crt").read_bytes() if certificates else None
        try:
            await node.store.peers.add(
                TrustedPeer(other.node_id_bytes, other.name, other.address, certificate)
            )
        finally:
            await node.close()


def pin(home: Home, *others: Home, certificates: bool = False) -> None:
    """`home` trusts `others` at their fixed addresses, as `peer peers add ID HOST:PORT`
    does while they are offline: their certificates are checked at the first contact.
    With `certificates`, as it does while they serve: their certificates are known."""
    run_async(_pin([(home, other) for other in others], certificates))


def mesh(homes: Iterable[Home], certificates: bool = False) -> None:
    """Every home trusts every other one."""
    every = list(homes)
    run_async(_pin([(h, o) for h in every for o in every if o is not h], certificates))


async def joined_home(daemons: Daemons, inviter: Home, name: str, relay: bool = False) -> Home:
    """A new home that joined through `inviter`'s running daemon (`peer invite` there,
    `peer join` here), its daemon started too."""
    code = (await aok(inviter.root, "invite", *(["--relay"] if relay else []))).strip()
    root = daemons.root / name
    await aok(root, "join", code, "--name", name)
    node_id = (await aok(root, "id")).strip()
    status = json.loads(await aok(root, "status", "--json"))
    home = Home(name, root, node_id, parse_node_id(node_id), status["host"], free_ports(1)[0])
    daemons.start(home)
    return home


# -- daemons --------------------------------------------------------------------------


class Daemon:
    """One `peer serve --json` subprocess; `stop` (a signal) or `kill` (SIGKILL) it."""

    def __init__(self, home: Home, *flags: str, log: Path) -> None:
        self.home = home
        self.log = log
        self._stderr = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peer.cli",
                "--home",
                str(home.root),
                "serve",
                "--listen",
                home.address,
                "--json",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.ready: dict[str, Any] = {}
        self.closed = False

    def wait_ready(self) -> dict[str, Any]:
        """The ready line `peer serve --json` prints once it serves (bounded wait)."""
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(READY_TIMEOUT_S):
                self.kill()
                raise AssertionError(f"{self.home.name}: no ready line in {READY_TIMEOUT_S} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(STOP_TIMEOUT_S)
            self._close()
            raise AssertionError(f"{self.home.name} did not start: {self.stderr()}")
        self.ready = json.loads(line)
        return self.ready

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def send(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self) -> int:
        """Wait for the exit (bounded; SIGKILL after); the exit code."""
        if self.closed:
            return self.process.wait()
        try:
            code = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.home.name} did not exit in {STOP_TIMEOUT_S} s") from None
        self._close()
        return code

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.send(signum)
        return self.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(STOP_TIMEOUT_S)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


class Daemons:
    """Homes sharing one sync key under `root`, the daemons started for them, and
    API connections to those daemons; all closed by `close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Daemon] = []
        self.connections: dict[Path, api.Connection] = {}
        self.stale: list[api.Connection] = []  # to daemons since restarted

    def homes(self, *names: str, relays: Iterable[str] = ()) -> list[Home]:
        """New homes (one sync key; relays get none), each with a free port."""
        return run_async(_make_homes(self.root, names, relays))

    def start(self, *homes: Home, flags: Iterable[str] = ()) -> list[Daemon]:
        """`peer serve` for each home on its port, all at once; returns when all serve."""
        extra = list(flags)
        if "--interval" not in extra:
            extra += ["--interval", str(INTERVAL_S)]
        made = []
        for home in homes:
            if home.root in self.connections:  # a new daemon: a new socket
                self.stale.append(self.connections.pop(home.root))
            made.append(Daemon(home, *extra, log=self.root / f"{home.name}.stderr"))
        self.started += made
        for daemon in made:
            daemon.wait_ready()
        return made

    async def api(self, home: Home) -> api.Connection:
        """A connection to the home's running daemon (kept for the test)."""
        connection = self.connections.get(home.root)
        if connection is None:
            connection = self.connections[home.root] = await api.connect(home.root)
        return connection

    async def status(self, home: Home) -> dict[str, Any]:
        """What `peer status --json` shows, from the daemon's socket."""
        return await (await self.api(home)).status()

    async def logs(self, home: Home) -> Logs:
        return logs_of(await self.status(home))

    async def link(self, home: Home, other: Home) -> dict[str, Any] | None:
        """`home`'s link to `other` as its status shows it (None if none)."""
        for entry in (await self.status(home))["peers"]:
            if entry["node_id"] == other.node_id:
                found: dict[str, Any] | None = entry.get("link")
                return found
        return None

    async def linked(self, home: Home, *others: Home) -> dict[str, Any] | None:
        """`home`'s status once its links to all `others` are connected and live."""
        now = await self.status(home)
        links = {p["node_id"]: p.get("link") or {} for p in now["peers"]}
        if all(links.get(o.node_id, {}).get("live") for o in others):
            return now
        return None

    async def converged(self, homes: list[Home], expected: Logs, timeout: float) -> float:
        """Wait until every home holds exactly `expected`; the seconds it took."""
        start = time.monotonic()

        async def probe() -> bool:
            return all([await self.logs(home) == expected for home in homes])

        await until(probe, f"{[h.name for h in homes]} to hold {expected}", timeout)
        return time.monotonic() - start

    async def close(self) -> None:
        for connection in [*self.connections.values(), *self.stale]:
            await connection.close()
        self.connections.clear()
        for daemon in self.started:
            daemon.send(signal.SIGTERM)
        for daemon in self.started:
            with contextlib.suppress(AssertionError):
                daemon.wait()
        for daemon in self.started:
            text = daemon.stderr().strip()
            if text:  # pytest shows it when the test fails
                print(f"--- {daemon.home.name} (pid {daemon.pid}) stderr:\n{text}")


# -- programs on the local API --------------------------------------------------------


@dataclass
class Arrival:
    message: api.Message
    at_ns: int  # wall clock when the subscriber got it


@dataclass
class Subscriber:
    """Reads an `api.Connection.subscribe` stream in the background, timing arrivals."""

    stream: AsyncIterator[api.Message]
    queue: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def start(self) -> Subscriber:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for message in self.stream:
            self.queue.put_nowait(Arrival(message, time.time_ns()))

    async def next(self, timeout: float = 10.0) -> Arrival:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, count: int, timeout: float = 10.0) -> list[Arrival]:
        return [await self.next(timeout) for _ in range(count)]

    async def quiet(self, seconds: float) -> list[Arrival]:
        """Whatever else arrives within `seconds` (to show that nothing more does)."""
        await asyncio.sleep(seconds)
        extra: list[Arrival] = []
        while not self.queue.empty():
            extra.append(self.queue.get_nowait())
        return extra

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
