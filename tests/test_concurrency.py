"""Two shells appending to one home at once never lose or duplicate a record (SPEC §3.5).

Real processes write to one store: bulk appends from stdin, loops of single-record
appends, and both mixed. Afterwards the log must be exactly idx 0..N-1 holding every
payload once, each writer's records in the order it wrote them, and `peer verify`
must pass.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import cli

pytestmark = pytest.mark.timeout(240)

TAG = "t"
BULK_LINES = 2000
SINGLE_APPENDS = 150
START_TIMEOUT_S = 30
PROCESS_TIMEOUT_S = 180

# A writer that waits for the `go` file, then appends its items one record per call
# of the real CLI entry point, so its transactions interleave with the other writer's.
SINGLE_WRITER = """
import sys, time
from pathlib import Path
from peer.cli import main
home, tag, go, prefix, count, timeout = sys.argv[1:7]
deadline = time.monotonic() + float(timeout)
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("never told to start")
    time.sleep(0.001)
for n in range(int(count)):
    code = main(["--home", home, "append", "--tag", tag, f"{prefix}-{n}"])
    if code != 0:
        sys.exit(f"append {n} exited {code}")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PEER_HOME"}


def peer(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.peer(home, *args, env=_env(), timeout=PROCESS_TIMEOUT_S)


@dataclass
class Writer:
    """One running writer process, with its output going to files."""

    name: str
    items: list[str]
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self) -> None:
        try:
            code = self.process.wait(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise
        assert code == 0, f"{self.name} exited {code}: {self.err.read_text()}"


def spawn(
    tmp_path: Path, name: str, argv: list[str], stdin: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr going to NAME.out and NAME.err in `tmp_path`."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with (
        out.open("wb") as out_file,
        err.open("wb") as err_file,
        stdin.open("rb") if stdin else open(os.devnull, "rb") as in_file,
    ):
        return subprocess.Popen(argv, stdin=in_file, stdout=out_file, stderr=err_file, env=_env())


def bulk_writer(tmp_path: Path, home: Path, name: str) -> Writer:
    """`peer append --tag t` reading BULK_LINES distinct lines from stdin."""
    items = [f"{name}-{n}" for n in range(BULK_LINES)]
    lines = tmp_path / f"{name}.txt"
    lines.write_text("".join(item + "\n" for item in items))
    argv = [sys.executable, "-m", "peer.cli", "--home", str(home), "append", "--tag", TAG]
    process = spawn(tmp_path, name, [*argv, "--json"], stdin=lines)
    return Writer(name, items, process, tmp_path / f"{name}.out", tmp_path / f"{name}.err")


def single_writer(
    tmp_path: Path, home: Path, name: str, go: Path, *, tag: str = TAG, count: int = SINGLE_APPENDS
) -> Writer:
    """`count` one-record appends to `tag` in a loop, starting when `go` appears."""
    items = [f"{name}-{n}" for n in range(count)]
    argv = [sys.executable, "-c", SINGLE_WRITER, str(home), tag, str(go), name]
    process = spawn(tmp_path, name, [*argv, str(count), str(START_TIMEOUT_S)])
    return Writer(name, items, process, tmp_path / f"{name}.out", tmp_path / f"{name}.err")


def wait_all(writers: list[Writer]) -> None:
    try:
        for writer in writers:
            writer.wait()
    finally:
        for writer in writers:
            if writer.process.poll() is None:
                writer.process.kill()
                writer.process.wait(timeout=10)


def release(go: Path, writers: list[Writer]) -> None:
    """Give the single writers time to import peer, then let them all start at once."""
    time.sleep(0.5)
    go.touch()
    for writer in writers:
        assert writer.process.poll() in (None, 0), writer.err.read_text()


def log_of(home: Path) -> list[dict[str, Any]]:
    run = peer(home, "tail", "--json", "--tag", TAG)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def assert_log_holds_exactly(home: Path, writers: list[Writer]) -> None:
    """idx 0..N-1, every item once, each writer's items in its own order, verify ok."""
    host = json.loads(peer(home, "id", "--json").stdout)["host"]
    records = sorted(log_of(home), key=lambda r: r["idx"])
    expected = [item for writer in writers for item in writer.items]

    assert {r["host"] for r in records} == {host}
    assert [r["idx"] for r in records] == list(range(len(expected))), "gap or duplicate idx"
    seen = Counter(r["data"] for r in records)
    assert seen == Counter(expected), "a record was lost, duplicated or invented"
    assert len({r["id"] for r in records}) == len(records)
    stamps = [r["timestamp"] for r in records]
    assert all(a < b for a, b in itertools.pairwise(stamps)), "clock went back"
    for writer in writers:
        own = [r["data"] for r in records if r["data"].startswith(writer.name + "-")]
        assert own == writer.items, f"{writer.name}'s records are out of order"

    [log] = json.loads(peer(home, "status", "--json").stdout)["logs"]
    assert log["next_idx"] == len(expected)
    check = peer(home, "verify")
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    run = peer(path, "init")
    assert run.returncode == 0, run.stderr
    return path


def test_two_bulk_appends_started_together_keep_every_record_exactly_once(
    tmp_path: Path, home: Path
) -> None:
    writers = [bulk_writer(tmp_path, home, "p1"), bulk_writer(tmp_path, home, "p2")]
    wait_all(writers)

    for writer in writers:
        report = json.loads(writer.out.read_text())
        assert report["count"] == BULK_LINES
    assert_log_holds_exactly(home, writers)


def test_two_loops_of_single_appends_interleave_without_loss_or_duplicates(
    tmp_path: Path, home: Path
) -> None:
    go = tmp_path / "go"
    writers = [single_writer(tmp_path, home, name, go) for name in ("s1", "s2")]
    release(go, writers)
    wait_all(writers)

    assert_log_holds_exactly(home, writers)


def test_bulk_and_single_appends_mixed_from_four_processes_keep_the_log_exact(
    tmp_path: Path, home: Path
) -> None:
    go = tmp_path / "go"
    singles = [single_writer(tmp_path, home, name, go) for name in ("s1", "s2")]
    release(go, singles)
    bulks = [bulk_writer(tmp_path, home, name) for name in ("p1", "p2")]
    writers = singles + bulks
    wait_all(writers)

    assert_log_holds_exactly(home, writers)


def test_concurrent_appends_to_different_tags_each_stay_contiguous(
    tmp_path: Path, home: Path
) -> None:
    go = tmp_path / "go"
    writers = [
        single_writer(tmp_path, home, tag, go, tag=tag, count=100) for tag in ("left", "right")
    ]
    release(go, writers)
    wait_all(writers)

    status = json.loads(peer(home, "status", "--json").stdout)
    assert {log["tag"]: log["next_idx"] for log in status["logs"]} == {"left": 100, "right": 100}
    for tag in ("left", "right"):
        run = peer(home, "tail", "--json", "--tag", tag)
        records = [json.loads(line) for line in run.stdout.splitlines()]
        assert [r["idx"] for r in records] == list(range(100))
        assert [r["data"] for r in records] == [f"{tag}-{n}" for n in range(100)]
    assert peer(home, "verify").returncode == 0
