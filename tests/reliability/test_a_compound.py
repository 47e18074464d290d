"""A6 and A7 (the soak tier's counts; a few cycles in the pr tier).

A6: kill -9 of a receiving `peer sync` process mid-stream, then an I/O error (the
store's `Faults` hook, at a random statement of the open path, once or persistently)
during the first open after the crash; then a clean `peer sync` must resume and converge.

A7: 1-16 random bytes flipped in a copy of a stopped node's database: `peer verify`
either refuses with a one-line error or reports problems (never a traceback or a crash),
and a node serving the copy serves nothing corrupt (a fresh receiver that pulls from it
stores only records identical to the originals; AEAD failures counted).
"""

from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path

from peer.client import PeerClient
from peer.crypto import open_record
from peer.errors import CryptoError, PeerError, StoreError
from peer.home import Home
from peer.records import Record
from peer.service import start_server
from peer.store import Faults, Store
from peer.sync import sync_with
from tests.reliability.conftest import Report, Tier
from tests.reliability.procs import (
    Daemon,
    audit,
    killed_syncs,
    new_homes,
    run_peer,
    run_sync,
)
from tests.reliability.test_a_crash import PER

# -- A6 ---------------------------------------------------------------------------------


async def _open_with_fault(path: Path, at: int, persist: bool) -> tuple[bool, str]:
    """Open the store as a restarting node does, with statement `at` failing; (opened,
    the error text if not)."""
    faults = Faults()
    faults.arm(at, persist)
    try:
        store = await Store.open(path, faults=faults)
    except StoreError as exc:
        return False, str(exc)
    try:
        await store.index()
        return True, ""
    finally:
        await store.close()


async def _open_statements(path: Path) -> int:
    faults = Faults()
    faults.arm(10**9)
    store = await Store.open(path, faults=faults)
    await store.close()
    return faults.count


async def test_a6_ioerr_during_recovery(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    cycles = tier.pick(3, 20)
    sender, template = tmp_path / "s", tmp_path / "r0"
    await new_homes(sender, template, {tag: 400 for tag in "ab"}, PER)
    source = audit(sender / "peer.db")
    total = source.count()
    statements = await _open_statements(template / "peer.db")
    refused, unclear, inconsistent, converged = 0, 0, 0, 0
    problems: list[str] = []
    daemon = Daemon(sender)
    try:
        kills = killed_syncs(
            tmp_path, template, daemon.address, batch=PER, cycles=cycles, total=total, rng=rng
        )
        for home in kills:
            at, persist = rng.randint(1, statements), rng.random() < 0.5
            opened, error = await _open_with_fault(home / "peer.db", at, persist)
            if not opened:
                refused += 1
                unclear += "I/O error" not in error or "Traceback" in error
            state = audit(home / "peer.db")
            inconsistent += not state.ok or not state.prefix_of(source)
            problems += state.problems
            done = run_sync(home, daemon.address, PER)  # the next, clean start
            final = audit(home / "peer.db")
            converged += done.returncode == 0 and final.ok and final.digests() == source.digests()
    finally:
        assert daemon.stop() == 0
    figure = (
        f"{cycles} compound cycles (kill -9 mid-sync, then an I/O error at a random one of "
        f"the {statements} statements of the first open): {refused} opens refused, "
        f"{unclear} without a clear I/O error message, {inconsistent} inconsistencies, "
        f"{converged}/{cycles} converge on the next clean start"
    )
    passed = unclear == 0 and inconsistent == 0 and converged == cycles and refused > 0
    report(
        "the open reports the error; the next clean start is fully consistent",
        figure,
        passed,
        cycles=cycles,
        refused=refused,
        inconsistent=inconsistent,
        converged=converged,
    )
    assert passed, problems[:5]


# -- A7 ---------------------------------------------------------------------------------


def _verify(home: Path) -> tuple[str, str]:
    """`peer verify` on a home: (outcome, output); outcome is ok / flagged / refused /
    crash."""
    done = run_peer(home, "verify")
    output = done.stdout + done.stderr
    if "Traceback" in output or "unexpected failure" in output or done.returncode not in (0, 1):
        return "crash", output
    if done.returncode == 0:
        return "ok", output
    if done.stdout.startswith(("problem:", "FAILED")):
        return "flagged", output
    return "refused", output


async def _served(path: Path, receiver: Path) -> tuple[list[Record], str]:
    """Serve the store at `path` and pull everything from it into a fresh store: the
    records the receiver accepted, and how serving ended (ok / error / crash)."""
    try:
        store = await Store.open(path)
    except StoreError:
        return [], "refused"
    ending = "ok"
    try:
        try:
            running = await start_server(store, "corrupt", "127.0.0.1:0")
        except StoreError:  # refusing to start with a clear error is a pass
            return [], "refused"
        fresh = await Store.open(receiver)
        try:
            async with PeerClient(f"127.0.0.1:{running.port}") as peer:
                await sync_with(fresh, peer)
        except PeerError:
            ending = "error"
        except Exception as exc:  # an unhandled exception: counted as a crash
            ending = f"crash {type(exc).__name__}"
        finally:
            await running.stop(grace=0.2)
        held = [
            r
            for log, head in (await fresh.index()).items()
            for r in await fresh.read_range(log.host, log.tag, 0, head.next_idx)
        ]
        await fresh.close()
    finally:
        await store.close()
    return held, ending


async def test_a7_corrupt_db_bytes(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    copies = tier.pick(8, 100)
    sender, _ = tmp_path / "s", tmp_path / "unused"
    await new_homes(sender, tmp_path / "unused", {tag: 300 for tag in "abc"}, PER, 200)
    original = await _all_records(sender / "peer.db")
    sync_key = Home(sender).load_sync_key()
    assert sync_key is not None
    outcomes: dict[str, int] = {}
    crashes, corrupt_served, aead_failures = 0, 0, 0
    crash_text: list[str] = []
    for n in range(copies):
        home = tmp_path / f"c{n}"
        shutil.copytree(sender, home)
        data = bytearray((home / "peer.db").read_bytes())
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        (home / "peer.db").write_bytes(bytes(data))
        outcome, output = _verify(home)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "crash":
            crash_text.append(output[-400:])
        held, ending = await _served(home / "peer.db", tmp_path / f"fresh{n}.db")
        if ending.startswith("crash"):
            crashes += 1
            crash_text.append(ending)
        corrupt_served += sum(original.get((r.host, r.tag, r.idx)) != r for r in held)
        for record in held:
            with contextlib.suppress(CryptoError):
                open_record(sync_key, record)
                continue
            aead_failures += 1
        shutil.rmtree(home)
    crashes += outcomes.get("crash", 0)
    figure = (
        f"{copies} corrupted copies (1-16 flipped bits): peer verify "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + f"; {crashes} crashes or tracebacks, {corrupt_served} corrupt records served, "
        f"{aead_failures} AEAD failures among records a receiver accepted"
    )
    passed = crashes == 0 and corrupt_served == 0
    report(
        "refuses with a clear error or flags it; never a crash; nothing corrupt served",
        figure,
        passed,
        copies=copies,
        crashes=crashes,
        corrupt_served=corrupt_served,
        aead_failures=aead_failures,
    )
    assert passed, crash_text[:3]


async def _all_records(path: Path) -> dict[tuple[bytes, str, int], Record]:
    store = await Store.open(path)
    try:
        return {
            (r.host, r.tag, r.idx): r
            for log, head in (await store.index()).items()
            for r in await store.read_range(log.host, log.tag, 0, head.next_idx)
        }
    finally:
        await store.close()
