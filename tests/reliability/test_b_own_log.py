"""B6 at the daemon: a node restored from a backup finds a peer holding more of its own
log. Real `peer serve` daemons (tests/daemons.py); the backup is a copy of the home's
database files, restored while the daemon is stopped, as a user would.

The in-process half of B6 (both cases, the summary's `own_log_behind`, 0 deletions) is
`test_b6_stale_or_regressed_peer` in test_b_sync.py; this one shows that the running
daemon counts the alarm per peer, shows it in `peer status` (JSON and text) and logs it
once per detection, and that the node then goes on appending with no fork.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tests.daemons import Daemons, Home, aok, mesh, texts, until
from tests.reliability.conftest import Report

WARNING = "held records of this node's own log beyond ours"
FIRST, LATER = 5, 5  # records in the backup, records written after it


def _database_files(home: Home) -> list[Path]:
    return [home.root / name for name in ("peer.db", "peer.db-wal", "peer.db-shm")]


def _back_up(home: Home, to: Path) -> None:
    to.mkdir()
    for path in _database_files(home):
        if path.exists():
            shutil.copy2(path, to / path.name)


def _restore(home: Home, backup: Path) -> None:
    for path in _database_files(home):
        path.unlink(missing_ok=True)
        saved = backup / path.name
        if saved.exists():
            shutil.copy2(saved, path)


async def test_b6_own_log_alarm_in_daemon_status(
    daemons: Daemons, tmp_path: Path, report: Report
) -> None:
    a, p = daemons.homes("a", "p")
    mesh([a, p], certificates=True)
    lines = "".join(f"a{n}\n" for n in range(FIRST))
    await aok(a.root, "append", "--tag", "notes", stdin=lines)
    backup = tmp_path / "backup"
    _back_up(a, backup)  # a stopped home: its files are a consistent backup
    # p only serves (no rounds of its own): a's daemon is the one that syncs, so the
    # records of a's own log come back through a's planning step, where the alarm is.
    daemons.start(p, flags=["--no-sync"])
    (first_a,) = daemons.start(a)
    later = "".join(f"a{n}\n" for n in range(FIRST, FIRST + LATER))
    await aok(a.root, "append", "--tag", "notes", stdin=later)
    total = FIRST + LATER
    await daemons.converged([a, p], {(a.host, "notes"): total}, timeout=20)
    link = await daemons.link(a, p)
    assert link is not None and link["own_log_alarms"] == 0  # a normal start: no alarm

    assert first_a.stop() == 0
    _restore(a, backup)
    restored_at = time.monotonic()
    daemons.start(a)

    async def alarmed() -> dict[str, Any] | None:
        now = await daemons.link(a, p)
        return now if now and now["own_log_alarms"] else None

    shown = await until(alarmed, "a to raise the own-log alarm for p", 20)
    took = time.monotonic() - restored_at
    await daemons.converged([a, p], {(a.host, "notes"): total}, timeout=20)
    # Rounds go on (every 2 s): the alarm is counted once per detection, not per round.
    last = shown["last_sync"]

    async def another_round() -> bool:
        now = await daemons.link(a, p)
        return bool(now and now["last_sync"] and now["last_sync"] > last)

    await until(another_round, "a's next round with p", 20)
    link = await daemons.link(a, p)
    assert link is not None
    text = await aok(a.root, "status")
    warning_lines = [line for line in text.splitlines() if WARNING in line]
    await aok(a.root, "append", "--tag", "notes", "after the restore")
    await daemons.converged([a, p], {(a.host, "notes"): total + 1}, timeout=20)
    read_back = texts(a.root)
    logged = daemons.started[-1].stderr().count(WARNING)
    forks = (await daemons.status(a))["forks"] + (await daemons.status(p))["forks"]
    expected_texts = [f"a{n}" for n in range(total)] + ["after the restore"]

    behind = [(e["tag"], e["ours"], e["theirs"]) for e in shown["own_log_behind"]]
    counted = link["own_log_alarms"]
    passed = (
        behind == [("notes", FIRST, total)]
        and counted == 1
        and len(warning_lines) == 1
        and "notes idx 5..9" in warning_lines[0]
        and logged == 1
        and read_back == expected_texts
        and not forks
    )
    figure = (
        f"restored from a backup ({FIRST} of {total} of its own records): alarm after "
        f"{took:.1f} s, counted {counted}x per peer, {len(warning_lines)} warning line in "
        f"`peer status`, logged {logged}x; {total - FIRST} own records pulled back, next "
        f"append at idx {total}, {len(forks)} forks, 0 records deleted"
    )
    print(f"status warning: {warning_lines}")
    report(
        "a restored node is alarmed (counter per peer, `peer status`, one log line) and "
        "recovers its own log with no fork and no deletion",
        figure,
        passed,
        seconds=round(took, 3),
        alarms=counted,
        logged=logged,
    )
    assert passed, (behind, counted, warning_lines, logged, read_back, forks)
