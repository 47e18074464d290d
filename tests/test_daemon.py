"""`peer serve` as a process (issue 5): it stops cleanly on SIGTERM and SIGINT, one home
has one daemon, `--no-sync` serves without syncing, and `peer status` says what the
daemon and each link are doing (or that no daemon runs)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from peer.errors import PeerError
from peer.records import LogKey
from peer.watch import doorbell_path
from tests.cli import ok, peer
from tests.daemons import (
    Daemon,
    Daemons,
    Subscriber,
    aok,
    cli_status,
    logs_of,
    mesh,
    pin,
    texts,
    until,
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_the_daemon_cleanly(daemons: Daemons, signum: int) -> None:
    a, b = daemons.homes("a", "b")
    mesh([a, b])
    daemon_a, _ = daemons.start(a, b)
    await until(lambda: daemons.linked(a, b), "a to follow b", 15)
    await until(lambda: daemons.linked(b, a), "b to follow a", 15)
    program = await daemons.api(a)
    subscriber = Subscriber(program.subscribe()).start()  # a program is connected too
    await program.append("notes", "before the signal")
    assert (await subscriber.next()).message.text == "before the signal"
    serving = json.loads((a.root / "serve.json").read_text())
    socket = Path(serving["socket"])
    assert serving["pid"] == daemon_a.pid and socket.exists()

    signalled = time.monotonic()
    code = daemon_a.stop(signum)
    took = time.monotonic() - signalled
    print(f"{signal.Signals(signum).name}: exit {code} after {took:.2f} s")
    assert code == 0
    assert took < 5.0  # streams to b and to the program closed, not waited out
    assert not (a.root / "serve.json").exists()
    assert not socket.exists() and not doorbell_path(socket).exists()
    assert "Traceback" not in daemon_a.stderr()
    assert subscriber.task is not None
    done, _ = await asyncio.wait({subscriber.task}, timeout=5)
    assert done  # the program's stream ended with the daemon (it does not hang)
    error = subscriber.task.exception()
    assert error is None or isinstance(error, PeerError)
    verified = json.loads(ok(a.root, "verify", "--json"))
    assert verified["ok"] and verified["records"] == 1, verified
    assert cli_status(a.root)["daemon"] is None

    async def a_gone() -> bool:
        link = await daemons.link(b, a)
        return bool(link and not link["connected"] and link["failures"])

    await until(a_gone, "b to see a go", 5)
    again = daemons.start(a)[0]  # the home can be served again at once
    assert again.ready["listen"] == a.address


async def test_a_second_daemon_for_one_home_is_refused(daemons: Daemons) -> None:
    (a,) = daemons.homes("a")
    (first,) = daemons.start(a)
    serving = (a.root / "serve.json").read_text()
    for listen in ("127.0.0.1:0", a.address):  # another port, or the same one
        second = peer(a.root, "serve", "--listen", listen)
        print(f"second `peer serve --listen {listen}`: exit {second.returncode}: {second.stderr}")
        assert second.returncode != 0
        assert second.stderr.count("\n") == 1
        assert "already runs" in second.stderr and str(a.root) in second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout == ""
    assert first.running()
    assert (a.root / "serve.json").read_text() == serving  # not overwritten nor removed
    assert Path(json.loads(serving)["socket"]).exists()
    program = await daemons.api(a)
    appended = await program.append("notes", "the first daemon still works")
    assert (await program.status())["daemon"]["pid"] == first.pid
    assert (appended.host.hex(), appended.first_idx, appended.count) == (a.host, 0, 1)
    assert await program.get_index() == {LogKey(appended.host, "notes"): 1}
    assert texts(a.root) == ["the first daemon still works"]


async def test_no_sync_serves_but_syncs_with_nobody_by_itself(daemons: Daemons) -> None:
    a, b = daemons.homes("a", "b")
    mesh([a, b], certificates=True)  # pinned while both served (see the next test)
    daemons.start(a, b, flags=["--no-sync", "--interval", "0.5"])
    await aok(a.root, "append", "--tag", "notes", "a0")
    await aok(b.root, "append", "--tag", "notes", "b0")
    program = await daemons.api(a)
    subscriber = Subscriber(program.subscribe(tags=["notes"])).start()
    assert (await subscriber.next()).message.text == "a0"
    try:
        await asyncio.sleep(2.0)  # four intervals: a syncing daemon would have synced
        for home in (a, b):
            now = await daemons.status(home)
            assert now["daemon"]["auto_sync"] is False
            assert [p["link"] for p in now["peers"]] == [None]  # no links
            assert logs_of(now) == {(home.host, "notes"): 1}
        assert "automatic sync off" in ok(a.root, "status")
        synced = json.loads(await aok(b.root, "sync", "--json"))  # by hand, still works
        print(f"`peer sync` beside a --no-sync daemon: {synced['peers']}")
        (result,) = synced["peers"]
        assert (result["pulled"], result["pushed"], result["error"]) == (1, 1, None)
        both = {(a.host, "notes"): 1, (b.host, "notes"): 1}
        assert logs_of(cli_status(a.root)) == logs_of(cli_status(b.root)) == both
        pushed = await subscriber.next(timeout=5)  # a program on a sees the push live
        assert pushed.message.text == "b0"
    finally:
        await subscriber.stop()


async def test_status_text_tells_what_the_daemon_and_each_peer_are_doing(
    daemons: Daemons,
) -> None:
    a, b, c = daemons.homes("a", "b", "c")
    pin(a, b, c)
    pin(b, a)
    daemon_a, _ = daemons.start(a, b)  # c never starts
    await aok(a.root, "append", "--tag", "notes", "a0")
    await until(lambda: daemons.linked(a, b), "a to follow b", 15)

    async def failing_c() -> bool:
        link = await daemons.link(a, c)
        return bool(link and link["failures"] and link["retry_in"] is not None)

    await until(failing_c, "a's link to c to fail", 10)
    await daemons.converged([b], {(a.host, "notes"): 1}, timeout=10)

    async def b_holds_known() -> bool:  # a learns what b holds at a round
        logs = (await daemons.status(a))["logs"]
        return bool(logs and logs[0]["peers"].get(b.node_id) == 1)

    await until(b_holds_known, "a to know what b holds", 10)
    text = ok(a.root, "status")
    print(text)
    lines = text.splitlines()
    assert f"daemon: pid {daemon_a.pid} on {a.address} (mutual TLS; automatic sync)" in lines
    (line_b,) = [line for line in lines if b.node_id in line]
    (line_c,) = [line for line in lines if c.node_id in line]
    assert re.search(r": connected, live; last sync \d+ s ago$", line_b), line_b
    assert ": FAILING: cannot reach" in line_c and "(retry in " in line_c, line_c
    assert line_c.endswith("never synced")
    (log_line,) = [line for line in lines if " notes " in line]
    assert " 1 records" in log_line and f"{b.node_id[:9]}:1" in log_line

    daemon_a.stop()
    stopped = ok(a.root, "status")
    print(stopped)
    assert "daemon: not running (`peer serve` starts it)" in stopped.splitlines()
    assert "FAILING" not in stopped and "connected" not in stopped
    assert f"{b.node_id}" in stopped  # the trust list is still shown


async def test_a_no_sync_daemon_reads_the_certificate_of_a_peer_pinned_while_offline(
    daemons: Daemons,
) -> None:
    """TLS admits only certificates the server knows, so a peer pinned by id and address
    while it was offline can call once the daemon has its certificate: the caller
    introduces itself on the pairing port when refused (docs/protocol.md §1.2), and the
    daemon also reads it in the background as soon as the peer serves."""
    a, b = daemons.homes("a", "b")
    mesh([a, b])  # `peer peers add ID HOST:PORT` while the other was offline
    daemons.start(a, flags=["--no-sync"])
    await aok(b.root, "append", "--tag", "notes", "b0")
    first = peer(b.root, "sync", "--json")  # b is not serving: it introduces itself
    assert first.returncode == 0, first.stdout
    (daemon_b,) = daemons.start(b, flags=["--no-sync"])

    async def a_knows_b() -> bool:
        listed = json.loads(await aok(a.root, "peers", "list", "--json"))["peers"]
        return bool(listed[0]["certificate"])

    await until(a_knows_b, "a to read b's certificate", 10)
    daemon_b.stop()
    done = peer(b.root, "sync", "--json")
    print(f"`peer sync` from b to a: exit {done.returncode}: {done.stdout}")
    assert done.returncode == 0
    assert logs_of(cli_status(a.root)) == {(b.host, "notes"): 1}


async def test_a_daemon_refuses_a_port_another_daemon_serves(daemons: Daemons) -> None:
    a, b = daemons.homes("a", "b")
    daemons.start(a)
    b.port = a.port
    second = Daemon(b, log=daemons.root / "b.stderr")
    daemons.started.append(second)  # stopped at the end, whatever happens
    try:
        second.wait_ready()
    except AssertionError:
        pass  # it did not start: what we want; its exit code and error are checked below
    else:
        print(f"a second node serves on {a.address} too: {second.ready}")
    assert not second.running() or second.stop() != 0
    code = second.wait()
    print(f"second daemon on {a.address}: exit {code}: {second.stderr()}")
    assert code == 2
    assert "in use" in second.stderr()


async def test_sigterm_is_prompt_while_a_link_waits_on_a_silent_peer(daemons: Daemons) -> None:
    a, silent = daemons.homes("a", "silent")
    with socket.socket() as listener:  # accepts TCP (the kernel does), never speaks TLS
        listener.bind(("127.0.0.1", silent.port))
        listener.listen(8)
        pin(a, silent)  # its certificate is not known yet: the link reads it first
        (daemon,) = daemons.start(a)
        await asyncio.sleep(0.3)  # the link is now waiting for the silent peer's hello
        signalled = time.monotonic()
        code = daemon.stop()
        took = time.monotonic() - signalled
    print(f"SIGTERM with a link waiting on a silent peer: exit {code} after {took:.2f} s")
    assert code == 0
    assert took < 2.0


async def test_the_daemon_applies_synced_records_to_the_views_without_a_read(
    daemons: Daemons,
) -> None:
    """kv and history records that arrive by sync reach the views by themselves, so the
    first `peer kv get` after a large sync does not pay for the catch-up."""
    a, b = daemons.homes("a", "b")
    mesh([a, b])
    daemons.start(a, b)
    await until(lambda: daemons.linked(b, a), "b to follow a", 15)
    await aok(a.root, "kv", "set", "colour", "green")
    await aok(a.root, "history", "add", "--", "make", "test")

    async def applied_on_b() -> int | None:
        views = (await daemons.status(b))["views"]
        return views["applied"] if views["applied"] >= 2 else None  # status reads, no catch-up

    applied = await until(applied_on_b, "b's daemon to apply a's records to its views", 10)
    print(f"records applied to b's views by its daemon: {applied}")
    assert ok(b.root, "kv", "get", "colour").strip() == "green"
