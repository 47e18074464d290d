"""The mesh of `peer serve` daemons (issue 5): real daemons as subprocesses on fixed
loopback ports converge by themselves, carry a write live to a program subscribed on
another node, back off from a killed peer and catch it up when it returns, and follow
`peer peers add/remove` while running. Plus the schedule's arithmetic, in process."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from peer import segment
from peer.client import PeerClient
from peer.mesh import MAX_DISCOVERED, Mesh
from peer.settings import Schedule
from peer.store import TrustedPeer
from tests.daemons import (
    INTERVAL_S,
    Daemons,
    Home,
    Subscriber,
    aok,
    cli_status,
    holds,
    logs_of,
    mesh,
    pin,
    texts,
    until,
)
from tests.nodes import Nodes, next_idx

# -- convergence ----------------------------------------------------------------------


async def test_three_daemons_converge_by_themselves(daemons: Daemons) -> None:
    a, b, c = daemons.homes("a", "b", "c")
    mesh([a, b, c])  # pinned while all are offline: certificates are checked at first contact
    await aok(a.root, "append", "--tag", "notes", stdin="a0\na1\na2\n")  # held before start
    started = time.monotonic()
    daemons.start(a, b, c)
    await aok(b.root, "append", "--tag", "notes", "b0")  # written beside a running daemon
    await aok(c.root, "append", "--tag", "notes", "c0")
    expected = {(a.host, "notes"): 3, (b.host, "notes"): 1, (c.host, "notes"): 1}
    took = await daemons.converged([a, b, c], expected, timeout=20)
    print(
        f"3 daemons converged {took:.2f} s after the last write, "
        f"{time.monotonic() - started:.2f} s after starting them"
    )
    for home in (a, b, c):  # as the CLI sees it
        assert logs_of(cli_status(home.root)) == expected
        assert sorted(texts(home.root, "notes")) == ["a0", "a1", "a2", "b0", "c0"]

    async def shows_the_mesh(home: Home) -> dict[str, Any] | None:
        """Live links to both others, and what each of them holds, per log."""
        others = [o for o in (a, b, c) if o is not home]
        now = await daemons.linked(home, *others)
        if now is None:
            return None
        held = {(log["host"], log["tag"]): log["peers"] for log in now["logs"]}
        wanted = {log: {o.node_id: n for o in others} for log, n in expected.items()}
        return now if held == wanted else None

    for home in (a, b, c):  # heads are learnt by rounds: within an interval or so
        await until(functools.partial(shows_the_mesh, home), f"{home.name} to show the mesh", 15)
    shown = cli_status(a.root)
    assert {p["name"]: p["link"]["live"] for p in shown["peers"]} == {"b": True, "c": True}


async def test_two_daemons_starting_together_move_each_record_about_once(
    daemons: Daemons,
) -> None:
    """Both links run a round at start: b pulls a's records while a would push the same.
    A round leaves its push to a peer that pulls from us by itself, and a pull asks only
    for what has not arrived since its plan, so each record crosses about once (the few
    batches in flight when the pull arrives may race), not twice."""
    a, b = daemons.homes("a", "b")
    mesh([a, b])
    count = 20_000
    lines = "".join(f"note {n}\n" for n in range(count))
    await aok(a.root, "append", "--tag", "notes", stdin=lines)
    daemons.start(a, b)
    took = await daemons.converged([a, b], {(a.host, "notes"): count}, timeout=60)
    links = {}
    for home, other in ((a, b), (b, a)):
        now = await until(functools.partial(daemons.linked, home, other), "live links", 15)
        (link,) = [p["link"] for p in now["peers"]]
        links[home.name] = link
    moved = links["a"]["pushed"] + links["b"]["pulled"]
    left = links["a"]["pushes_left_to_peer"]
    print(f"{count} records converged in {took:.2f} s; crossed {moved} times; a left {left}")
    # Without the rule: 2 x count. The batches in flight when b's pull arrives depend on
    # the load (0-3,000 idle, up to 4,600 beside a full test run on 2 cores).
    assert count <= moved <= count * 1.5
    assert links["b"]["pushed"] == 0 and links["a"]["pulled"] == 0


async def test_a_line_converges_through_the_middle(daemons: Daemons) -> None:
    a, b, c = daemons.homes("a", "b", "c")
    pin(a, b)
    pin(b, a, c)
    pin(c, b)  # a and c do not know each other
    daemons.start(a, b, c)
    await aok(a.root, "append", "--tag", "notes", "from a")
    await aok(c.root, "append", "--tag", "notes", "from c")
    expected = {(a.host, "notes"): 1, (c.host, "notes"): 1}
    took = await daemons.converged([a, b, c], expected, timeout=20)
    print(f"a line of 3 converged through b in {took:.2f} s")
    assert sorted(texts(a.root)) == sorted(texts(c.root)) == ["from a", "from c"]
    assert [p["node_id"] for p in cli_status(a.root)["peers"]] == [b.node_id]
    assert [p["node_id"] for p in cli_status(c.root)["peers"]] == [b.node_id]


# -- live propagation -----------------------------------------------------------------


async def test_an_append_on_a_reaches_a_subscriber_on_c_within_a_second(
    daemons: Daemons,
) -> None:
    a, b, c = daemons.homes("a", "b", "c")
    mesh([a, b, c])
    daemons.start(a, b, c)
    await until(lambda: daemons.linked(c, a, b), "c to follow a and b live", 15)
    program = await daemons.api(c)
    subscriber = Subscriber(program.subscribe(tags=["live"])).start()
    try:
        await program.append("live", "subscribed")  # its arrival shows the stream is up
        assert (await subscriber.next()).message.text == "subscribed"
        from_write, from_launch = [], []
        for n in range(5):
            launched = time.time_ns()
            await aok(a.root, "append", "--tag", "live", f"a{n}")
            arrival = await subscriber.next(timeout=5)
            assert arrival.message.text == f"a{n}"
            assert arrival.message.host.hex() == a.host
            from_write.append((arrival.at_ns - arrival.message.timestamp) / 1e9)
            from_launch.append((arrival.at_ns - launched) / 1e9)
        assert not await subscriber.quiet(0.3)  # each record once, though b relays it too
    finally:
        await subscriber.stop()
    print(
        "append on a -> subscriber on c: from the write "
        + ", ".join(f"{s * 1000:.0f}" for s in from_write)
        + f" ms (median {statistics.median(from_write) * 1000:.0f} ms); from launching "
        f"`peer append`: median {statistics.median(from_launch) * 1000:.0f} ms"
    )
    # Within a second: the median of five surely; one straggler is allowed up to 3 s on a
    # machine loaded far beyond its cores (seen at load 24 on 2 cores: 1.26 s, others 25-77 ms).
    assert statistics.median(from_write) < 1.0
    assert sorted(from_write)[-2] < 1.0 and max(from_write) < 3.0


# -- a peer that dies and comes back --------------------------------------------------


async def test_a_killed_peer_is_backed_off_then_caught_up_when_it_returns(
    daemons: Daemons,
) -> None:
    a, b = daemons.homes("a", "b")
    mesh([a, b])
    _, daemon_b = daemons.start(a, b)
    await until(lambda: daemons.linked(a, b), "a to follow b", 15)
    await until(lambda: daemons.linked(b, a), "b to follow a", 15)
    daemon_b.kill()  # SIGKILL: no goodbye
    killed = time.monotonic()

    async def failing(at_least: int) -> dict[str, Any] | None:
        now = await daemons.link(a, b)
        return now if now and now["failures"] >= at_least else None

    first = await until(lambda: failing(1), "a to notice that b is gone", 10)
    print(f"a saw b fail after {time.monotonic() - killed:.2f} s: {first['last_error']}")
    assert not first["connected"] and not first["live"]
    assert 0 <= first["retry_in"] <= Schedule().backoff(first["failures"])
    await aok(a.root, "append", "--tag", "notes", "written while b was down")
    await until(lambda: failing(3), "a to keep retrying, backing off", 15)
    shown = next(p["link"] for p in cli_status(a.root)["peers"] if p["node_id"] == b.node_id)
    print(
        f"`peer status --json` on a, {time.monotonic() - killed:.2f} s after the kill: "
        f"{shown['failures']} failures, retry in {shown['retry_in']:.2f} s: "
        f"{shown['last_error']}"
    )
    assert shown["failures"] >= 3 and not shown["connected"]
    assert "cannot reach" in shown["last_error"]  # in words, with what to check
    assert "peer serve" in shown["last_error"]
    assert Schedule().backoff(shown["failures"]) >= 4.0  # the backoff grew
    assert 0 <= shown["retry_in"] <= Schedule().backoff(shown["failures"])

    backoff_left = (await daemons.link(a, b) or {})["retry_in"]
    measured = time.monotonic()
    daemons.start(b)  # back on the same port
    back = time.monotonic()
    backoff_left -= back - measured  # what remains of a's backoff once b serves
    expected = {(a.host, "notes"): 1}
    took = await daemons.converged([b], expected, timeout=10)
    relinked = await until(lambda: daemons.linked(a, b), "a to follow b again", 10)
    reconnected = time.monotonic() - back
    print(
        f"b caught up {took:.2f} s after its restart; a followed b live again after "
        f"{reconnected:.2f} s (its backoff had {backoff_left:.1f} s left once b served)"
    )
    assert took < 5.0
    assert reconnected < 5.0
    if backoff_left > 1.0:  # b's call poked a's link: it did not wait out its backoff
        assert reconnected < backoff_left
    assert relinked["peers"][0]["link"]["failures"] == 0
    assert texts(b.root) == ["written while b was down"]
    await aok(b.root, "append", "--tag", "notes", "b is back")
    await daemons.converged([a, b], {**expected, (b.host, "notes"): 1}, timeout=10)


async def test_a_peer_dying_mid_stream_is_not_reported_as_refusing_our_certificate(
    daemons: Daemons,
) -> None:
    a, b = daemons.homes("a", "b")
    mesh([a, b])
    daemons.start(a)

    async def failures() -> int:
        now = await daemons.link(a, b)
        return int(now["failures"]) if now else 0

    errors = []
    for _ in range(3):  # how the socket dies varies (FIN or RST): up to three deaths
        (daemon_b,) = daemons.start(b)
        await until(lambda: daemons.linked(a, b), "a to follow b", 15)
        before = await failures()  # failures while b was down count too: not reset here

        async def first_error(before: int = before) -> str | None:  # polled fast: the
            now = await daemons.link(a, b)  # next attempt is 1 s later
            return now["last_error"] if now and now["failures"] > before else None

        daemon_b.kill()
        errors.append(await until(first_error, "a to notice that b is gone", 5))
        print(f"a's first error for b after SIGKILL: {errors[-1]}")
        if "peer peers add" in errors[-1]:
            break
    assert not any("peer peers add" in error for error in errors)
    assert not any("refused the TLS handshake" in error for error in errors)


# -- the trust list, changed while running --------------------------------------------


async def test_peers_add_and_remove_take_effect_in_a_running_daemon(daemons: Daemons) -> None:
    a, b = daemons.homes("a", "b")
    pin(b, a)  # b trusts a; a does not trust b yet
    daemons.start(a, b)
    await aok(a.root, "append", "--tag", "notes", "a0")
    await aok(b.root, "append", "--tag", "notes", "b0")

    async def refused() -> str | None:  # (the first attempt may come before a listens)
        now = await daemons.link(b, a)
        error = now["last_error"] if now and now["failures"] else None
        return error if error and "refused the TLS handshake" in error else None

    error = await until(refused, "b to be refused by a", 10)
    print(f"b, not trusted by a: {error}")
    assert "run `peer peers add` there" in error  # says what to do
    assert await daemons.logs(a) == {(a.host, "notes"): 1}
    assert (await daemons.status(a))["peers"] == []

    added = time.monotonic()
    await aok(a.root, "peers", "add", b.node_id, b.address, "--name", "b")  # while a runs
    both = {(a.host, "notes"): 1, (b.host, "notes"): 1}
    took = await daemons.converged([a, b], both, timeout=10)
    await until(lambda: daemons.linked(a, b), "a to follow b", 10)
    await until(lambda: daemons.linked(b, a), "b to follow a", 10)
    print(f"`peer peers add` beside a running daemon: in sync after {took:.2f} s")
    assert time.monotonic() - added < 8.0

    await aok(a.root, "peers", "remove", b.node_id)
    removed = time.monotonic()

    async def gone() -> bool:
        return not (await daemons.status(a))["peers"]

    async def cut_off() -> dict[str, Any] | None:
        now = await daemons.link(b, a)
        return now if now and not now["connected"] and now["failures"] else None

    await until(gone, "a to drop b from its status", 5)
    cut = await until(cut_off, "b to be cut off by a", 10)
    print(f"`peer peers remove`: b cut off after {time.monotonic() - removed:.2f} s")
    print(f"b's error: {cut['last_error']}")
    assert "no longer trusts" in cut["last_error"] or "peer peers add" in cut["last_error"]
    await aok(b.root, "append", "--tag", "notes", "b1: a must not take this")
    await aok(a.root, "append", "--tag", "notes", "a1: b must not get this")

    async def apart() -> bool:
        held_a, held_b = await daemons.logs(a), await daemons.logs(b)
        return held_a[(b.host, "notes")] == 1 and held_b[(a.host, "notes")] == 1

    await holds(apart, "a and b apart", 1.5 * INTERVAL_S)  # a round's interval and then some
    assert "a1: b must not get this" not in texts(b.root)
    assert not cli_status(a.root)["peers"]


# -- the schedule ---------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    schedule = Schedule(backoff_initial=1.0, backoff_max=300.0)
    assert schedule.backoff(0) == 0.0
    assert schedule.backoff(-3) == 0.0
    delays = [schedule.backoff(n) for n in range(1, 12)]
    print(f"backoff after 1..11 failures: {delays}")
    assert delays[:9] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    assert delays[9:] == [300.0, 300.0]
    assert schedule.backoff(10_000) == 300.0  # no overflow after a very long outage
    assert Schedule(backoff_initial=0.25, backoff_max=1.0).backoff(2) == 0.5
    assert Schedule(backoff_initial=0.25, backoff_max=1.0).backoff(4) == 1.0


def test_rounds_are_the_interval_give_or_take_the_jitter(rng: random.Random) -> None:
    schedule = Schedule(interval=10.0, jitter=0.2)
    rounds = [schedule.next_round(rng) for _ in range(2000)]
    print(f"2000 rounds of 10 s ± 20 %: min {min(rounds):.3f}, max {max(rounds):.3f}")
    assert all(8.0 <= r <= 12.0 for r in rounds)
    assert min(rounds) < 8.2 and max(rounds) > 11.8  # spread over the whole range
    assert len(set(rounds)) > 1900  # not in lockstep
    seed = rng.randrange(2**32)
    again = [schedule.next_round(random.Random(seed)) for _ in range(3)]
    assert again == [schedule.next_round(random.Random(seed)) for _ in range(3)]
    assert Schedule(interval=5.0, jitter=0.0).next_round(rng) == 5.0


# -- discovery's hook, in process -----------------------------------------------------


async def test_addresses_found_on_the_lan_are_bounded(tmp_path: Path) -> None:
    """A LAN flood of announced ids keeps only the newest MAX_DISCOVERED addresses."""
    async with Nodes(tmp_path) as nodes:
        here = await nodes.node("here", serve=False)

        async def connect(peer: TrustedPeer, address: str) -> PeerClient:
            raise AssertionError("no peer is pinned: nothing may be dialled")

        mesh = Mesh(here.store, Schedule(interval=60.0), connect)
        ids = [n.to_bytes(4, "big") * 8 for n in range(MAX_DISCOVERED + 20)]
        for n, node_id in enumerate(ids):
            mesh.found(node_id, f"198.18.0.{n % 250 + 1}:7417")
        assert list(mesh.discovered) == ids[-MAX_DISCOVERED:]


async def test_an_address_found_by_discovery_is_used_at_once(tmp_path: Path) -> None:
    """`Mesh.found` (what LAN discovery calls) gives a pinned peer with no address one,
    and the link syncs now instead of at its next interval. (Discovery itself, the
    zeroconf announcer and browser, is not in the daemon yet.)"""
    async with Nodes(tmp_path) as nodes:
        here = await nodes.node("here", serve=False)
        there = await nodes.node("there")
        await there.append_each("notes", 3)
        node_id = os.urandom(32)
        await here.store.peers.add(TrustedPeer(node_id, "there"))  # no address known
        called: list[str] = []

        async def connect(peer: TrustedPeer, address: str) -> PeerClient:
            called.append(address)
            return PeerClient(address)  # plaintext on loopback: trust is not the point here

        mesh = Mesh(here.store, Schedule(interval=60.0), connect)
        await mesh.start()
        try:
            (state,) = mesh.states()
            await eventually_async(lambda: state.last_error is not None, "the link's first try")
            assert state.last_error and "no address known" in state.last_error
            assert called == []
            found = time.monotonic()
            mesh.found(node_id, there.target)
            mesh.found(node_id, there.target)  # seen again: no second poke
            await eventually_async(lambda: state.last_sync is not None, "a sync", 5)
            took = time.monotonic() - found
            print(f"synced {took * 1000:.0f} ms after discovery found the peer")
            assert took < 2.0  # not the 60 s interval
            assert called == [there.target]
            assert state.pulled == 3 and state.address == there.target
            assert await next_idx(here.store, there.log("notes")) == 3
        finally:
            await mesh.close()


async def eventually_async(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    async def probe() -> bool:
        return condition()

    await until(probe, what, timeout)


async def test_an_error_retrying_cannot_mend_waits_the_longest_backoff_at_once(
    tmp_path: Path,
) -> None:
    """A peer serving a record damaged in its database fails every round alike (a
    ForgeryError here): its link waits the cap at once instead of trying again in 1, 2,
    4 s. A peer that is not there (retryable) still starts at 1 s."""
    async with Nodes(tmp_path) as nodes:
        here = await nodes.node("here", serve=False)
        there = await nodes.node("there")
        await there.append_each("notes", 3)
        with sqlite3.connect(tmp_path / "there.db") as db:
            seq, data = db.execute("SELECT seq, data FROM segments WHERE tag = 'notes'").fetchone()
            records = segment.decode(data)  # the three appends, merged into one segment
            records[1] = replace(records[1], payload=b"damaged")
            db.execute("UPDATE segments SET data = ? WHERE seq = ?", (segment.encode(records), seq))
        db.close()
        damaged, absent = (
            TrustedPeer(os.urandom(32), "damaged", there.target),
            TrustedPeer(os.urandom(32), "absent", "127.0.0.1:1"),
        )
        for pinned in (damaged, absent):
            await here.store.peers.add(pinned)

        async def connect(peer: TrustedPeer, address: str) -> PeerClient:
            return PeerClient(address)  # plaintext on loopback: trust is not the point here

        schedule = Schedule(interval=60.0, backoff_initial=1.0, backoff_max=300.0)
        mesh = Mesh(here.store, schedule, connect)
        await mesh.start()
        try:
            states = {state.name: state for state in mesh.states()}
            for state in states.values():
                await eventually_async(lambda s=state: s.failures >= 1, f"{state.name} to fail")
            retry_in = {name: (s.retry_at or 0) - time.time() for name, s in states.items()}
            print(f"after one failure: {states['damaged'].last_error!r}, retry in {retry_in}")
            error = states["damaged"].last_error or ""
            assert "does not verify" in error or "prev is not the hash" in error  # forged
            assert states["damaged"].failures == 1 and 290.0 < retry_in["damaged"] <= 300.0
            assert "cannot reach" in (states["absent"].last_error or "")
            assert retry_in["absent"] <= schedule.backoff(states["absent"].failures) < 290.0
        finally:
            await mesh.close()


async def test_a_bug_in_one_attempt_is_retried_and_the_mesh_still_closes(tmp_path: Path) -> None:
    """An exception that is no PeerError (a bug) in one attempt does not end the link
    for good: `peer status` says "internal error", the link tries again after its
    backoff and syncs; closing the mesh afterwards ends every link."""
    async with Nodes(tmp_path) as nodes:
        here = await nodes.node("here", serve=False)
        there = await nodes.node("there")
        await there.append_each("notes", 2)
        await here.store.peers.add(TrustedPeer(os.urandom(32), "there", there.target))
        attempts: list[str] = []

        async def connect(peer: TrustedPeer, address: str) -> PeerClient:
            attempts.append(address)
            if len(attempts) == 1:
                raise RuntimeError("a bug")
            return PeerClient(address)  # plaintext on loopback: trust is not the point here

        schedule = Schedule(interval=60.0, backoff_initial=0.05, backoff_max=0.2)
        mesh = Mesh(here.store, schedule, connect)
        await mesh.start()
        try:
            (state,) = mesh.states()
            await eventually_async(lambda: state.failures >= 1, "the first attempt to fail")
            assert state.last_error == "internal error (a bug); see the daemon log"
            await eventually_async(lambda: state.last_sync is not None, "the retry to sync")
            assert len(attempts) == 2 and state.pulled == 2
        finally:
            await asyncio.wait_for(mesh.close(), 5)
