"""The first hop (issue 14): a record the CLI writes into the store directly reaches the
node's own daemon at once, because the CLI rings the daemon's doorbell after its commit;
with no daemon to ring, the write is just as it was.

The daemons here run in this process, so that their store's poll can be made an hour
long (`peer.watch.POLL_S`): then only the doorbell can explain a delivery within the
bounded waits below. The CLI runs as the real `peer` process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.config import Config
from peer.daemon import Daemon
from peer.home import Home as HomeFiles
from peer.home import Serving
from peer.node import Node
from peer.settings import DiscoveryConfig, Schedule
from peer.watch import doorbell_path
from tests.cli import ok, peer
from tests.daemons import Daemons, Home, Subscriber, aok, mesh, until

HOUR_S = 3600.0


@contextlib.asynccontextmanager
async def serving(home: Home) -> AsyncIterator[Daemon]:
    """The home's daemon in this process, syncing by rounds only once an hour."""
    node = await Node.open(HomeFiles(home.root))
    schedule = Schedule(interval=HOUR_S)
    config = Config(listen=home.address, sync=schedule, discovery=DiscoveryConfig(enabled=False))
    daemon = Daemon(node, config)
    try:
        await daemon.start()
        yield daemon
    finally:
        await daemon.stop()
        await node.close()


async def test_what_the_cli_writes_reaches_a_live_neighbour_by_the_doorbell(
    daemons: Daemons, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("peer.watch.POLL_S", HOUR_S)  # A's poll would not look for an hour
    a, b = daemons.homes("a", "b")
    mesh([a, b], certificates=True)
    async with serving(a), serving(b):
        await until(lambda: daemons.linked(b, a), "b to follow a live", 15)
        on_b = Subscriber((await daemons.api(b)).subscribe()).start()
        try:
            writes = [  # every command that writes to the store directly rings
                ("notes", ["append", "--tag", "notes", "first hop"]),
                ("kv", ["kv", "set", "colour", "blue"]),
                ("history", ["history", "add", "--", "make", "test"]),
            ]
            for tag, command in writes:
                await aok(a.root, *command)
                arrived = (await on_b.next(timeout=10)).message
                assert (arrived.tag, arrived.host.hex()) == (tag, a.host)

            doorbell_path(json.loads((a.root / "serve.json").read_text())["socket"]).unlink()
            await aok(a.root, "append", "--tag", "notes", "unrung")
            assert await on_b.quiet(1.0) == []  # the same write, unrung: only the poll sees it
        finally:
            await on_b.stop()


def _stale_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(path))  # closed, not unlinked: what a killed daemon leaves


@pytest.mark.parametrize("left", ["nothing", "a dead daemon", "a stale doorbell", "no socket"])
def test_with_no_daemon_to_ring_a_write_succeeds_and_says_nothing(
    tmp_path: Path, left: str
) -> None:
    """No serve.json; or one whose daemon died; or one naming a live process (ours)
    whose doorbell nobody reads any more, or naming no socket at all: the CLI writes,
    and stderr stays empty."""
    home = tmp_path / "home"
    ok(home, "init")
    files = HomeFiles(home)
    if left == "a dead daemon":
        files.record_serving(Serving("", "", str(home / "peer.sock"), 2**22 + 1))
    elif left == "a stale doorbell":
        files.record_serving(Serving("", "", str(home / "peer.sock"), os.getpid()))
        _stale_socket(doorbell_path(home / "peer.sock"))
    elif left == "no socket":
        files.record_serving(Serving("", "", "", os.getpid()))
    for command in (["append", "--tag", "notes", "hello"], ["history", "add", "--", "true"]):
        done = peer(home, *command)
        assert (done.returncode, done.stderr) == (0, ""), command
    assert json.loads(ok(home, "tail", "--tag", "notes"))["data"] == "hello"
