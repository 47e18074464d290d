"""A8: kill -9 in the middle of bringing the kv and history views up to date (after a
large sync, or a `peer store rebuild`, which is the same catch-up from empty views)."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from peer.crypto import SyncKey
from tests.reliability.conftest import Report, Tier
from tests.views_crash import (
    CHILD,
    HISTORY_RECORDS,
    KV_RECORDS,
    UNKNOWN,
    check_resumed,
    kill_mid_catch_up,
    make_source,
)


def test_a8_kill9_during_view_catch_up(
    tmp_path: Path, rng: random.Random, tier: Tier, report: Report
) -> None:
    sync = SyncKey.generate()
    source = tmp_path / "source.db"
    asyncio.run(make_source(source, sync))
    total = KV_RECORDS + UNKNOWN + HISTORY_RECORDS
    cycles = tier.pick(3, 50)
    duration = _full_catch_up_seconds(source, tmp_path / "timed.db", sync)
    progress: list[int] = []
    stale = 0
    for cycle in range(cycles):
        target = tmp_path / f"target{cycle % 2}.db"
        for leftover in tmp_path.glob(f"target{cycle % 2}.db*"):
            leftover.unlink()
        kill_mid_catch_up(source, target, sync, rng.uniform(0.05, 0.9) * duration)
        with sqlite3.connect(target) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            applied = db.execute("SELECT coalesce(sum(next_idx), 0) FROM view_cursors").fetchone()
        progress.append(int(applied[0]))
        try:
            asyncio.run(check_resumed(target, sync, total))
        except AssertionError:
            stale += 1
    mid = sum(1 for n in progress if 0 < n < total)
    report(
        "after kill -9 during a catch-up of the views, a restart completes them: they equal "
        "a rebuild from scratch, nothing applied or counted twice, no manual step",
        f"{cycles} kill -9 during a {duration:.1f} s catch-up of {total:,} records ({mid} mid-way, "
        f"applied when killed: {min(progress):,}-{max(progress):,}): {stale} stale or "
        "wrong views after restart",
        stale == 0 and mid > 0,
        cycles=cycles,
        stale=stale,
    )
    assert mid > 0, "no kill landed mid-way: the catch-up is faster than timed"
    assert stale == 0


def _full_catch_up_seconds(source: Path, target: Path, sync: SyncKey) -> float:
    """How long one uninterrupted catch-up takes here (kills are timed within it)."""
    shutil.copy(source, target)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", CHILD, str(target), sync.to_text()],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return time.monotonic() - started
