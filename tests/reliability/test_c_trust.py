"""Group C, the trust list at runtime, with real `peer serve` daemons (tests/daemons.py):
pinning must be mutual before anything moves (C3), and unpinning revokes at once (C4).

What tests/test_security.py and tests/test_mesh.py already prove in process or without
a figure (one-sided pinning syncs nothing; a removed peer's calls and Subscribe stream
are refused; `peer peers add/remove` beside a running daemon) is measured here the way
a user does it: `peer peers add/remove` in another process while the daemons run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from peer import api
from peer.client import ClientTls, PeerClient
from peer.errors import PeerRefused
from peer.trust import Credentials
from tests.cli import ok
from tests.daemons import Daemons, Home, aok, mesh, pin, until
from tests.reliability.conftest import Report
from tests.test_daemon_discovery import serve_in, stop

CALL_S = 5.0
REVOKE_LIMIT_S = 10.0
CONVERGE_LIMIT_S = 5.0


def _client_as(caller: Home, server: Home) -> PeerClient:
    """A new connection to `server`'s daemon with `caller`'s identity (key files)."""
    own = Credentials(
        (caller.root / "tls.key").read_bytes(), (caller.root / "tls.crt").read_bytes()
    )
    tls = ClientTls(own, (server.root / "tls.crt").read_bytes())
    return PeerClient(server.address, tls=tls, timeout=CALL_S)


async def _refused(caller: Home, server: Home) -> str | None:
    """The refusal a new connection from `caller` gets, or None if it is served."""
    async with _client_as(caller, server) as client:
        try:
            await client.get_index()
        except PeerRefused as exc:
            return str(exc)
    return None


async def test_c4_unpin_revokes(daemons: Daemons, report: Report) -> None:
    a, b = daemons.homes("a", "b")
    mesh([a, b], certificates=True)
    daemons.start(a, b)
    await aok(a.root, "append", "--tag", "notes", "a0")
    await until(lambda: daemons.linked(b, a), "b to follow a live (a Subscribe open on a)", 20)
    await until(lambda: daemons.linked(a, b), "a to follow b live", 20)
    assert await _refused(b, a) is None  # control: b's new connections are served

    await aok(a.root, "peers", "remove", b.node_id)  # another process, as a user does
    removed = time.monotonic()

    async def handshake_refused() -> str | None:
        """The TLS refusal, once it comes. Before it, a call may already be refused by
        the service (its trust list is read before the TLS layer's): refused too."""
        refusal = await _refused(b, a)
        return refusal if refusal and "refused the TLS handshake" in refusal else None

    async def stream_closed() -> dict[str, Any] | None:
        link = await daemons.link(b, a)
        return link if link and not link["connected"] and not link["live"] else None

    async def timed(probe: Any, what: str) -> tuple[Any, float]:
        found = await until(probe, what, REVOKE_LIMIT_S * 2)
        return found, time.monotonic() - removed

    (refusal, refused_s), (closed, closed_s) = await asyncio.gather(
        timed(handshake_refused, "a new connection from b refused"),
        timed(stream_closed, "b's live link to a closed"),
    )

    # b retries (backoff) and is refused each time; nothing written on a reaches it.
    await aok(a.root, "append", "--tag", "notes", "a1: b must not get this")
    failures = closed["failures"]

    async def retried() -> dict[str, Any] | None:
        link = await daemons.link(b, a)
        return link if link and link["failures"] > failures + 1 else None

    retry = await until(retried, "b to retry a twice and be refused", 20)
    held_by_b = (await daemons.logs(b)).get((a.host, "notes"))
    a_peers = (await daemons.status(a))["peers"]
    effective = max(refused_s, closed_s)
    handshake = "refused the TLS handshake" in refusal
    passed = (
        effective <= REVOKE_LIMIT_S
        and handshake
        and held_by_b == 1
        and a_peers == []
        and not retry["connected"]
    )
    figure = (
        f"revocation effective in {effective:.2f} s (`peer peers remove` in another process "
        f"beside the running daemon): new handshakes refused after {refused_s:.2f} s, b's "
        f"open Subscribe/link closed after {closed_s:.2f} s; b refused at "
        f"{retry['failures'] - failures} retries, 0 records reached it afterwards"
    )
    print(f"b's refusal: {refusal}\nb's link error: {retry['last_error']}")
    report(
        "after unpinning B: new handshakes fail and B's open streams are closed within 10 s",
        figure,
        passed,
        seconds=round(effective, 3),
        handshake_s=round(refused_s, 3),
        stream_s=round(closed_s, 3),
    )
    assert passed, (effective, refusal, held_by_b, a_peers, retry)


async def test_c3_mutual_add_required(daemons: Daemons, report: Report) -> None:
    a, b = daemons.homes("a", "b")
    pin(a, b)  # a trusts b; b does not trust a
    daemons.start(a, b)
    await aok(a.root, "append", "--tag", "notes", "a0")
    await aok(b.root, "append", "--tag", "notes", "b0")

    async def refused() -> str | None:  # a's link tried b and was refused at the handshake
        link = await daemons.link(a, b)
        error = link["last_error"] if link and link["failures"] else None
        return error if error and "refused the TLS handshake" in error else None

    error = await until(refused, "a to be refused by b", 20)
    link = await daemons.link(a, b)
    assert link is not None
    failures = link["failures"]

    async def refused_again() -> bool:  # and once more (its backoff), still nothing moved
        now = await daemons.link(a, b)
        return bool(now and now["failures"] > failures)

    await until(refused_again, "a to retry b and be refused again", 20)
    before = {"a": await daemons.logs(a), "b": await daemons.logs(b)}
    apart = before == {"a": {(a.host, "notes"): 1}, "b": {(b.host, "notes"): 1}}
    b_peers = (await daemons.status(b))["peers"]

    await aok(b.root, "peers", "add", a.node_id, a.address, "--name", "a")  # b's daemon runs
    both = {(a.host, "notes"): 1, (b.host, "notes"): 1}
    try:
        took = await daemons.converged([a, b], both, timeout=CONVERGE_LIMIT_S * 4)
    except AssertionError:
        took = float("inf")
    await until(lambda: daemons.linked(a, b), "a to follow b live", 20)
    await until(lambda: daemons.linked(b, a), "b to follow a live", 20)
    passed = apart and b_peers == [] and took <= CONVERGE_LIMIT_S
    figure = (
        f"time to first sync after add: {took:.2f} s (`peer peers add` on b beside its "
        f"running daemon); before it, a refused at the handshake {failures + 1}+ times, "
        f"0 records either way (both stores checked). Pending list: none on loopback (b's "
        "TLS refuses an unpinned certificate inside grpc, before the daemon sees who it "
        "was); on a LAN, b lists a as seen but not pinned (test_c3_lan_...)"
    )
    print(f"a's error before: {error}")
    report(
        "before: no data either way; after B adds A: converged within 5 s",
        figure,
        passed,
        seconds=round(took, 3),
    )
    assert passed, (before, b_peers, took)


async def test_c3_lan_unpinned_node_is_listed_and_added(
    lan: tuple[str, str], tmp_path: Path, report: Report
) -> None:
    """C3's pending list, where one can exist: on a LAN, b's discovery sees a's
    announcement, and `peer status` lists a as seen but not pinned, with the command."""
    a, b = tmp_path / "a", tmp_path / "b"
    ok(a, "init", "--name", "alpha")
    ok(b, "init", "--name", "beta", "--key", ok(a, "key", "export").strip())
    a_id, b_id = ok(a, "id").strip(), ok(b, "id").strip()
    ok(a, "peers", "add", b_id)  # by id only: discovery supplies the address
    ok(a, "append", "--tag", "notes", "a0")
    ok(b, "append", "--tag", "notes", "b0")
    started = time.monotonic()
    processes = [serve_in(lan[0], a, "198.18.0.1:7001"), serve_in(lan[1], b, "198.18.0.2:7002")]
    connections: list[api.Connection] = []
    try:
        at_a, at_b = await api.connect(a), await api.connect(b)
        connections += [at_a, at_b]

        async def listed() -> dict[str, Any] | None:
            found = (await at_b.status())["daemon"]["discovered"]
            return next((d for d in found if d["node_id"] == a_id and not d["pinned"]), None)

        async def a_refused() -> str | None:
            peers = (await at_a.status())["peers"]
            error = (peers[0]["link"] or {}).get("last_error") or ""
            return error if "refused the TLS handshake" in error else None

        entry = await until(listed, "b to list a as seen on the LAN, not pinned", 60)
        seen_s = time.monotonic() - started
        await until(a_refused, "a to dial b (found on the LAN) and be refused", 60)
        text = await asyncio.to_thread(ok, b, "status")
        logs = {
            name: {(log["host"], log["next_idx"]) for log in (await conn.status())["logs"]}
            for name, conn in (("a", at_a), ("b", at_b))
        }
        apart = all(len(held) == 1 for held in logs.values())
        hint = f"`peer peers add {a_id}`"
        in_text = "seen on the LAN, not pinned" in text and hint in text

        await asyncio.to_thread(ok, b, "peers", "add", a_id)  # no address: discovery's
        added = time.monotonic()

        async def both() -> bool:
            counts = [len((await conn.status())["logs"]) for conn in (at_a, at_b)]
            return counts == [2, 2]

        try:
            await until(both, "a and b to converge after b adds a", CONVERGE_LIMIT_S * 4)
            took = time.monotonic() - added
        except AssertionError:
            took = float("inf")
        still_listed = await listed()
    finally:
        for connection in connections:
            await connection.close()
        codes = [stop(process) for process in processes]
    passed = (
        in_text and apart and took <= CONVERGE_LIMIT_S and still_listed is None and codes == [0, 0]
    )
    figure = (
        f"on a LAN (two network namespaces): a listed on b as 'seen on the LAN, not pinned' "
        f"with the `peer peers add` command {seen_s:.1f} s after start, 0 records either way; "
        f"time to first sync after add: {took:.2f} s"
    )
    print(f"b's entry for a: {entry}")
    report(
        "before: no data either way and A appears in B's list of unpinned nodes (LAN); "
        "after B adds A: converged within 5 s",
        figure,
        passed,
        seconds=round(took, 3),
        listed_s=round(seen_s, 3),
    )
    assert passed, (in_text, text, logs, took, still_listed, codes)
