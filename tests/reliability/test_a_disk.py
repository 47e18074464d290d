"""A5: the receiver's disk fills up in the middle of a sync, then space comes back.

Real processes: the receiver R is `peer serve --no-sync` with its home on a small tmpfs
(root only: mount, then `remount,size=` to free space; skipped otherwise), the sender S
pushes to it with `peer sync`. Each fill point is another tmpfs size, from the seed.
No file is deleted and R is never restarted: recovery must need no manual step
(atuin #2879 needed `rm records.db`).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.reliability.conftest import Report, Tier
from tests.reliability.procs import Audit, Daemon, audit, make_homes, run_sync

PER = 8
RECORDS = 3000  # about 3.5 MB of 1 kB records: more than any fill point
KIB = 1024


@contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)]
    done = subprocess.run(mount, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10, check=False)


def grow(where: Path, size: int) -> None:
    remount = ["mount", "-o", f"remount,size={size}", str(where)]
    subprocess.run(remount, capture_output=True, timeout=10, check=True)


def _files(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*")}


def _fill_point(
    tmp_path: Path, n: int, size: int, sender: Path, template: Path, source: Audit
) -> list[str]:
    """One fill point; the problems seen (none if it recovered by itself)."""
    problems: list[str] = []
    with tmpfs(tmp_path / f"m{n}", size) as mounted:
        home = mounted / "r"
        shutil.copytree(template, home)
        daemon = Daemon(home)
        try:
            before = _files(home)
            full = run_sync(sender, daemon.address, PER)
            text = full.stdout + full.stderr
            if full.returncode == 0 or "disk is full" not in text or "Traceback" in text:
                problems.append(f"no clear disk-full error: {text[-300:]}")
            again = run_sync(sender, daemon.address, PER)  # still full: same answer
            if again.returncode == 0 or "disk is full" not in again.stdout + again.stderr:
                problems.append("a second sync while full was not refused cleanly")
            state = audit(home / "peer.db")
            problems += state.problems
            if not 0 < state.count() < RECORDS or not state.prefix_of(source):
                problems.append(f"held {state.count()} records while full")
            if not daemon.alive():
                problems.append(f"the receiver died while full: {daemon.stderr()[-300:]}")
            grow(mounted, 64 * KIB * KIB)  # space comes back; nothing else is done
            done = run_sync(sender, daemon.address, PER)
            final = audit(home / "peer.db")
            if done.returncode != 0 or final.digests() != source.digests() or not final.ok:
                problems.append(f"did not converge after space came back: {done.stdout[-300:]}")
            if not before <= _files(home):
                problems.append(f"files disappeared: {before - _files(home)}")
        finally:
            if daemon.stop() != 0:
                problems.append("the receiver did not stop cleanly")
    return problems


def test_a5_disk_full_mid_sync(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("the disk-full test mounts a tmpfs: it needs root (store-level: test_store)")
    points = tier.pick(3, 20)
    sender, template = tmp_path / "s", tmp_path / "r0"
    make_homes(sender, template, {"big": RECORDS}, PER, 1000)
    source = audit(sender / "peer.db")
    sizes = [rng.randrange(1000, 2400) * KIB for _ in range(points)]
    # A list, not a dict by size: two fill points may draw the same size.
    failures = [
        (size, _fill_point(tmp_path, n, size, sender, template, source))
        for n, size in enumerate(sizes)
    ]
    recovered = sum(not problems for _, problems in failures)
    figure = (
        f"{points} fill points (tmpfs {min(sizes) // KIB}-{max(sizes) // KIB} KiB, "
        f"{RECORDS} records of 1 kB pushed): {recovered}/{points} refused with a clear "
        f"RESOURCE_EXHAUSTED 'disk is full', stayed up, held a gap-free prefix, and "
        f"converged by themselves once space came back; 0 files deleted"
    )
    passed = recovered == points
    report(
        "full: clean error, no crash, frontier = committed rows; freed: converges, no rm",
        figure,
        passed,
        points=points,
        recovered=recovered,
    )
    assert passed, [(size, p[:3]) for size, p in failures if p]
