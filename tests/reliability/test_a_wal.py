"""A9: nothing in peer ever deletes a database's -wal or -shm file (SQLite howtocorrupt),
and an online backup of a node that is writing (sqlite3's backup API) is consistent.

Static: every call in peer/ that deletes or renames a file is on a reviewed list, none
names the database, and no code spells "-wal" or "-shm". Runtime: a daemon killed with
its WAL full of commits restarts with all of them; a backup taken while three writers
append through the API passes integrity_check, has no gap, and opens as a store.
"""

from __future__ import annotations

import ast
import asyncio
import sqlite3
from collections.abc import Awaitable
from contextlib import closing
from pathlib import Path

from peer import api
from peer.crypto import SyncKey
from peer.store import Store
from tests.reliability.conftest import Report
from tests.reliability.procs import Daemon, audit, connect_ro, make_home

PEER = Path(__file__).resolve().parents[2] / "peer"
BACKUPS = 5
DELETERS = {"unlink", "rmtree", "rmdir", "truncate"}  # on any object
OS_DELETERS = {"remove", "rename", "replace", "unlink", "rmdir", "removedirs"}  # os./shutil.
# (module, enclosing function): what each reviewed deletion removes
REVIEWED = {
    ("pair.py", "join_home"): "a home this failed join created itself",
    ("home.py", "lock_serving"): "serve.json of the stopping daemon",
    ("home.py", "write_private"): "a temp file renamed over a private file",
    ("service/local.py", "stop"): "the daemon's API socket and its private dir",
    ("service/handoff.py", "stop"): "the daemon's shell hand-off socket",
    ("service/handoff.py", "start_handoff_server"): "a stale hand-off socket of a crashed daemon",
    ("service/local.py", "start_local_server"): "a stale socket of a crashed daemon",
    ("watch.py", "open"): "a stale doorbell socket of a crashed daemon",
    ("watch.py", "close"): "the daemon's doorbell socket",
}


def deletions() -> set[tuple[str, str]]:
    """(module, function) of every call of a file-deleting or renaming function."""
    found: set[tuple[str, str]] = set()
    for path in sorted(PEER.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = ast.unparse(node.func.value)
                by_os = owner in ("os", "shutil") and node.func.attr in OS_DELETERS
                if node.func.attr in DELETERS or by_os:
                    found.add((str(path.relative_to(PEER)), function.name))
    return found


async def test_a9_wal_files_never_deleted(tmp_path: Path, report: Report) -> None:
    sites = deletions()
    spelled = [p.name for p in PEER.rglob("*.py") if {"-wal", "-shm"} & _words(p)]
    unreviewed = sites - REVIEWED.keys()

    home = tmp_path / "n"
    await make_home(home, "n", SyncKey.generate(), {}, 8)
    daemon = Daemon(home)
    try:  # the commits sit in the WAL (no checkpoint before 1,000 pages), then kill -9
        acked = await _write_while(home, asyncio.sleep(0.5))
        wal = home / "peer.db-wal"
        wal_bytes = wal.stat().st_size if wal.exists() else 0
    finally:
        daemon.kill()
    daemon = Daemon(home)  # restart: SQLite recovers from the WAL it finds
    try:
        held = audit(home / "peer.db")
        lost = acked - held.count()
        copies = [tmp_path / f"backup{n}.db" for n in range(BACKUPS)]
        writes = await _write_while(home, _backups(home / "peer.db", copies))
        checked = [audit(copy) for copy in copies]
        backup_ok = sum(check.ok for check in checked)
        opened = await Store.open(copies[-1])  # a backup is a store peer opens as is
        await opened.close()
    finally:
        assert daemon.stop() == 0
    figure = (
        f"{len(sites)} file-deleting call sites in peer/, {len(unreviewed)} unreviewed, "
        f"{len(spelled)} naming -wal/-shm; kill -9 with {wal_bytes // 1024} KiB of WAL: "
        f"{lost} of {acked} acknowledged records lost on restart; {BACKUPS} online backups "
        f"(sqlite3 backup API) during {writes} API appends: {backup_ok}/{BACKUPS} "
        f"integrity ok and gap-free ({checked[-1].count()} records in the last)"
    )
    passed = not unreviewed and not spelled and lost == 0 and wal_bytes > 0 and held.ok
    passed = passed and backup_ok == BACKUPS and writes > 0
    report(
        "no code path unlinks -wal/-shm; WAL recovered on restart; backup consistent",
        figure,
        passed,
        sites=len(sites),
        unreviewed=len(unreviewed),
        lost=lost,
        backups=BACKUPS,
        backup_ok=backup_ok,
    )
    assert passed, (unreviewed, spelled, held.problems, [c.problems for c in checked])


def _words(path: Path) -> set[str]:
    text = path.read_text()
    return {word for word in ("-wal", "-shm") if word in text}


async def _write_while(home: Path, during: Awaitable[object]) -> int:
    """Records acknowledged by 3 API writers appending until `during` is done."""
    stop = asyncio.Event()

    async def writer(n: int) -> int:
        count = 0
        async with await api.connect(home) as node:
            for _ in range(100_000):  # bounded; `during` ends it
                if stop.is_set():
                    break
                count += (await asyncio.wait_for(node.append(f"w{n}", "x", "y"), 10)).count
        return count

    tasks = [asyncio.create_task(writer(n)) for n in range(3)]
    try:
        await asyncio.wait_for(during, 60)
    finally:
        stop.set()
    return sum(await asyncio.gather(*tasks))


async def _backups(source: Path, copies: list[Path]) -> None:
    for copy in copies:
        await asyncio.sleep(0.05)
        await asyncio.to_thread(_backup, source, copy)


def _backup(source: Path, copy: Path) -> None:
    with closing(connect_ro(source)) as db, closing(sqlite3.connect(copy)) as target:
        db.backup(target)
