"""The `peer` command line as a user meets it (SPEC §8).

Every test runs the real CLI in a subprocess against a real home under `tmp_path`,
so what is checked is exactly what a shell script sees: stdout, stderr, exit code and
the files left behind.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import peer.errors
from peer import segment
from peer.crypto import SyncKey

TIMEOUT_S = 60
KEY_PREFIX = "peer-key-1:"
HOST_ID = re.compile(r"[0-9a-f]{32}")
NODE_ID = re.compile(r"([A-Z2-7]{7}-){7}[A-Z2-7]{7}")
HASH = re.compile(r"[0-9a-f]{64}")
TAIL_KEYS = {"host", "tag", "idx", "timestamp", "id", "data"}

# Names a user must never see in a message: every exception class Python or peer has.
EXCEPTION_NAMES = {
    name
    for namespace in (vars(builtins), vars(peer.errors))
    for name, value in namespace.items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


@dataclass(frozen=True)
class Run:
    """What one `peer` invocation did, as seen from a shell."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def peer(home: Path, *args: str | bytes, stdin: bytes | str = b"") -> Run:
    """Run `peer --home HOME ARGS...` as a real process, feeding it `stdin`."""
    env = {k: v for k, v in os.environ.items() if k != "PEER_HOME"}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(
        [sys.executable, "-m", "peer.cli", "--home", str(home), *args],
        input=data,
        capture_output=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def ok(home: Path, *args: str | bytes, stdin: bytes | str = b"") -> Run:
    """Run `peer` and insist it succeeded."""
    run = peer(home, *args, stdin=stdin)
    assert run.code == 0, run.err
    return run


def assert_one_line_failure(run: Run, *, noise: str = "") -> str:
    """A failure as SPEC §8 wants it: non-zero, one plain line on stderr, no Python."""
    assert run.code != 0
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    message = lines[0].replace(noise, "<path>") if noise else lines[0]
    assert message.startswith("peer: ")
    assert "Traceback" not in run.err
    words = set(re.findall(r"[A-Za-z_]\w*", message))
    assert not words & EXCEPTION_NAMES, message
    assert not re.search(r"(?<![\w/.-])_[a-z]\w*", message), f"private Python name in: {message}"
    return message


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An initialised home."""
    path = tmp_path / "home"
    ok(path, "init", "--name", "test")
    return path


def node_id(home: Path) -> str:
    """The host id this home writes under (what `tail` and `status` show as host)."""
    return str(ok(home, "id", "--json").json()["host"])


def tail(home: Path, *args: str) -> list[dict[str, Any]]:
    return ok(home, "tail", "--json", *args).json_lines()


def damaged(key: str, position: int) -> str:
    """`key` with the character at `position` (inside the base64 body) replaced."""
    body_at = len(KEY_PREFIX) + position
    old = key[body_at]
    new = "A" if old != "A" else "B"
    return key[:body_at] + new + key[body_at + 1 :]


# -- init, id, keys ----------------------------------------------------------------


def test_init_prints_the_node_id_and_creates_key_files_only_the_owner_can_read(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    run = ok(home, "init")
    assert len(run.lines) == 1
    assert NODE_ID.fullmatch(run.lines[0])
    for name in ("host.key", "sync.key", "tls.key"):
        mode = stat.S_IMODE((home / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"


def test_init_refuses_a_home_that_already_has_an_identity(home: Path) -> None:
    before = {name: (home / name).read_bytes() for name in ("host.key", "sync.key")}
    run = peer(home, "init")
    assert_one_line_failure(run, noise=str(home))
    assert run.out == ""
    assert {name: (home / name).read_bytes() for name in before} == before


def test_successful_commands_print_nothing_on_stderr(tmp_path: Path) -> None:
    home = tmp_path / "home"
    commands: list[tuple[str, ...]] = [
        ("init", "--name", "quiet"),
        ("id",),
        ("key", "export"),
        ("append", "--tag", "notes", "one"),
        ("tail",),
        ("status",),
        ("status", "--json"),
        ("verify",),
    ]
    for args in commands:
        run = ok(home, *args)
        assert run.err == "", f"peer {' '.join(args)} wrote to stderr: {run.err}"


def test_id_prints_the_same_id_that_init_printed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    printed = ok(home, "init").out
    assert ok(home, "id").out == printed
    assert ok(home, "id").out == printed


def test_key_export_prints_one_line_starting_with_the_key_prefix(home: Path) -> None:
    run = ok(home, "key", "export")
    assert len(run.lines) == 1
    assert run.lines[0].startswith(KEY_PREFIX)


def test_init_with_an_exported_key_gives_a_new_host_sharing_the_same_sync_key(
    home: Path, tmp_path: Path
) -> None:
    key = ok(home, "key", "export").out.strip()
    second = tmp_path / "second"
    ok(second, "init", "--key", key)
    assert ok(second, "key", "export").out.strip() == key
    assert node_id(second) != node_id(home)


@pytest.mark.parametrize("position", [0, 20, -1], ids=["first-char", "middle-char", "last-char"])
def test_key_import_refuses_a_key_with_one_character_changed_and_changes_nothing(
    tmp_path: Path, position: int
) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    other = tmp_path / "other"
    ok(other, "init")
    good = ok(other, "key", "export").out.strip()
    bad = damaged(good, position if position >= 0 else len(good) - len(KEY_PREFIX) - 1)
    assert bad != good and len(bad) == len(good)
    before = (home / "sync.key").read_bytes()
    exported = ok(home, "key", "export").out

    run = peer(home, "key", "import", bad)

    message = assert_one_line_failure(run, noise=str(home))
    assert "checksum" in message
    assert (home / "sync.key").read_bytes() == before
    assert ok(home, "key", "export").out == exported


def test_init_with_a_damaged_key_fails_before_creating_anything(home: Path, tmp_path: Path) -> None:
    bad = damaged(ok(home, "key", "export").out.strip(), 12)
    fresh = tmp_path / "fresh"

    run = peer(fresh, "init", "--key", bad)

    assert "checksum" in assert_one_line_failure(run, noise=str(fresh))
    assert not fresh.exists()


def test_key_import_refuses_damaged_key_text_read_from_stdin(home: Path) -> None:
    key = ok(home, "key", "export").out.strip()
    run = peer(home, "key", "import", "-", stdin=damaged(key, 5) + "\n")
    assert "checksum" in assert_one_line_failure(run, noise=str(home))
    assert ok(home, "key", "export").out.strip() == key


def test_key_import_on_a_node_without_records_switches_to_the_new_key(
    home: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    ok(other, "init")
    key = ok(other, "key", "export").out.strip()

    ok(home, "key", "import", key)

    assert ok(home, "key", "export").out.strip() == key
    assert stat.S_IMODE((home / "sync.key").stat().st_mode) == 0o600
    ok(home, "append", "--tag", "notes", "after import")
    assert [r["data"] for r in tail(home)] == ["after import"]


def test_key_import_refuses_once_the_node_has_written_records(home: Path, tmp_path: Path) -> None:
    ok(home, "append", "--tag", "notes", "sealed with the first key")
    key_before = ok(home, "key", "export").out
    other = tmp_path / "other"
    ok(other, "init")

    run = peer(home, "key", "import", ok(other, "key", "export").out.strip())

    message = assert_one_line_failure(run, noise=str(home))
    assert "already wrote 1 records" in message
    assert "peer init --key" in message
    assert ok(home, "key", "export").out == key_before
    assert [r["data"] for r in tail(home)] == ["sealed with the first key"]


# -- append and tail ---------------------------------------------------------------


def test_append_then_tail_json_shows_the_record_with_every_documented_field(home: Path) -> None:
    started = time.time_ns()
    ok(home, "append", "--tag", "notes", "hello")

    [record] = tail(home)

    assert set(record) == TAIL_KEYS
    assert record["data"] == "hello"
    assert record["host"] == node_id(home)
    assert record["tag"] == "notes"
    assert record["idx"] == 0
    assert HOST_ID.fullmatch(record["id"])
    assert isinstance(record["timestamp"], int)
    assert record["timestamp"] >= started, "the clock is never below the wall clock"


def test_tail_without_json_also_prints_one_json_object_per_record(home: Path) -> None:
    ok(home, "append", "--tag", "notes", "hello")
    [line] = ok(home, "tail").lines
    assert json.loads(line)["data"] == "hello"


def test_append_json_reports_host_tag_idx_ranges_and_count(home: Path) -> None:
    ok(home, "append", "--tag", "notes", "one")
    report = ok(home, "append", "--tag", "notes", "--json", stdin="two\nthree\n").json()
    assert report == {"host": node_id(home), "tag": "notes", "ranges": [[1, 2]], "count": 2}


def test_bulk_append_of_1000_stdin_lines_numbers_them_0_to_999_in_order(home: Path) -> None:
    lines = [f"line {n}" for n in range(1000)]

    ok(home, "append", "--tag", "bulk", stdin="\n".join(lines) + "\n")

    records = tail(home, "--tag", "bulk")
    assert [r["idx"] for r in records] == list(range(1000))
    assert [r["data"] for r in records] == lines
    assert len({r["id"] for r in records}) == 1000
    stamps = [r["timestamp"] for r in records]
    assert stamps == sorted(set(stamps)), "timestamps strictly increase along the log"


def test_stdin_lines_lose_their_line_ending_and_a_last_line_needs_none(home: Path) -> None:
    ok(home, "append", "--tag", "lines", stdin=b"unix\nwindows\r\n\nlast")
    assert [r["data"] for r in tail(home)] == ["unix", "windows", "", "last"]


def test_records_that_are_not_utf8_are_shown_as_data_b64(home: Path) -> None:
    raw = b"\xff\xfe\x00binary"
    ok(home, "append", "--tag", "bin", stdin=b"text\n" + raw + b"\n")

    text, binary = tail(home, "--tag", "bin")

    assert text["data"] == "text"
    assert "data" not in binary
    assert set(binary) == TAIL_KEYS - {"data"} | {"data_b64"}
    assert base64.b64decode(binary["data_b64"]) == raw


def test_a_non_utf8_data_argument_is_stored_as_its_bytes(home: Path) -> None:
    ok(home, "append", "--tag", "bin", b"\xff\xfe")
    [record] = tail(home, "--tag", "bin")
    assert base64.b64decode(record["data_b64"]) == b"\xff\xfe"


def test_tail_tag_shows_only_that_tag_and_limit_keeps_the_newest(home: Path) -> None:
    for n in range(5):
        ok(home, "append", "--tag", "a", f"a{n}")
        if n < 3:
            ok(home, "append", "--tag", "b", f"b{n}")

    assert [r["data"] for r in tail(home, "--tag", "a")] == [f"a{n}" for n in range(5)]
    assert [r["data"] for r in tail(home, "--tag", "b")] == ["b0", "b1", "b2"]
    assert [r["data"] for r in tail(home, "--tag", "a", "--limit", "2")] == ["a3", "a4"]
    assert [r["data"] for r in tail(home, "--tag", "b", "--limit", "1")] == ["b2"]
    assert [r["data"] for r in tail(home, "--tag", "b", "--limit", "10")] == ["b0", "b1", "b2"]
    assert [r["data"] for r in tail(home, "--limit", "3")] == ["b2", "a3", "a4"]
    assert tail(home, "--tag", "nothing-here") == []


def test_tail_of_a_fresh_node_prints_nothing(home: Path) -> None:
    assert ok(home, "tail").out == ""


# -- status and verify -------------------------------------------------------------


def test_status_json_has_identity_every_log_with_its_head_peers_and_forks(home: Path) -> None:
    ok(home, "append", "--tag", "notes", "one")
    ok(home, "append", "--tag", "kv", stdin="a\nb\nc\n")

    status = ok(home, "status", "--json").json()

    me = node_id(home)
    assert status["node_id"] == ok(home, "id").out.strip()
    assert NODE_ID.fullmatch(status["node_id"])
    assert status["host"] == me
    assert status["peers"] == []
    assert status["forks"] == []
    logs = {log["tag"]: log for log in status["logs"]}
    assert set(logs) == {"notes", "kv"}
    assert logs["notes"]["next_idx"] == 1
    assert logs["kv"]["next_idx"] == 3
    for log in status["logs"]:
        assert {"host", "tag", "next_idx", "head"} <= set(log)
        assert log["host"] == me
        assert HASH.fullmatch(log["head"]), "hashes are lowercase hex"


def test_status_head_changes_with_every_append(home: Path) -> None:
    ok(home, "append", "--tag", "notes", "one")
    [first] = ok(home, "status", "--json").json()["logs"]
    ok(home, "append", "--tag", "notes", "two")
    [second] = ok(home, "status", "--json").json()["logs"]
    assert second["next_idx"] == first["next_idx"] + 1
    assert second["head"] != first["head"]


def test_status_of_a_fresh_node_lists_no_logs(home: Path) -> None:
    status = ok(home, "status", "--json").json()
    assert status["logs"] == []
    assert "0 log(s)" in ok(home, "status").out


def test_verify_passes_on_an_untouched_store(home: Path) -> None:
    ok(home, "append", "--tag", "notes", stdin="a\nb\nc\n")
    ok(home, "append", "--tag", "other", "x")

    run = ok(home, "verify")

    assert run.lines[-1].startswith("ok:")
    report = ok(home, "verify", "--json").json()
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["records"] == 4
    assert report["decrypted"] == 4


def test_verify_passes_on_an_empty_store(home: Path) -> None:
    ok(home, "verify")


@pytest.mark.parametrize("victim", [0, 2, 4], ids=["first-record", "middle-record", "head-record"])
def test_verify_fails_and_names_a_problem_when_one_payload_byte_is_flipped(
    home: Path, victim: int
) -> None:
    ok(home, "append", "--tag", "notes", stdin="".join(f"note {n}\n" for n in range(5)))
    with sqlite3.connect(home / "peer.db") as db:
        seq, data = db.execute("SELECT seq, data FROM segments WHERE tag = 'notes'").fetchone()
        records = segment.decode(data)  # the five notes: one append, one segment
        payload = records[victim].payload
        flipped = replace(records[victim], payload=bytes([payload[0] ^ 0x01]) + payload[1:])
        records[victim] = flipped
        db.execute("UPDATE segments SET data = ? WHERE seq = ?", (segment.encode(records), seq))
    db.close()

    run = peer(home, "verify")

    assert run.code != 0
    assert "Traceback" not in run.err
    assert any(line.startswith("problem:") for line in run.lines), run.out
    assert run.lines[-1].startswith("FAILED")
    report = peer(home, "verify", "--json").json()
    assert report["ok"] is False
    assert report["problems"]


# -- failures ----------------------------------------------------------------------

BEFORE_INIT: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "key-export": ("key", "export"),
    "key-import": ("key", "import", "-"),
    "append": ("append", "--tag", "notes", "x"),
    "tail": ("tail",),
    "status": ("status",),
    "verify": ("verify",),
}

MISTAKES: dict[str, tuple[str, ...]] = {
    "uppercase-tag": ("append", "--tag", "BAD", "x"),
    "tail-uppercase-tag": ("tail", "--tag", "BAD"),
    "tag-too-long": ("append", "--tag", "a" * 65, "x"),
    "tag-with-slash": ("append", "--tag", "a/b", "x"),
    "empty-tag": ("append", "--tag", "", "x"),
    "unknown-global-flag": ("--bogus", "id"),
    "unknown-command-flag": ("append", "--tag", "notes", "--bogus", "x"),
    "unknown-command": ("frobnicate",),
    "unknown-key-action": ("key", "rekey"),
    "key-without-action": ("key",),
    "append-without-tag": ("append", "x"),
    "tail-limit-zero": ("tail", "--limit", "0"),
    "key-import-not-a-key": ("key", "import", "hunter2"),
    "init-again": ("init",),
}


@pytest.mark.parametrize("args", BEFORE_INIT.values(), ids=BEFORE_INIT.keys())
def test_every_command_before_init_is_one_plain_line_telling_to_run_init(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    home = tmp_path / "home"
    home.mkdir()

    run = peer(home, *args, stdin=SyncKey.generate().to_text() + "\n")

    message = assert_one_line_failure(run, noise=str(home))
    assert "peer init" in message
    assert run.out == ""
    assert list(home.iterdir()) == [], "a failed command leaves the home untouched"


@pytest.mark.parametrize("args", MISTAKES.values(), ids=MISTAKES.keys())
def test_every_mistake_is_one_plain_line_on_stderr_and_a_non_zero_exit(
    home: Path, args: tuple[str, ...]
) -> None:
    run = peer(home, *args)
    assert_one_line_failure(run, noise=str(home))
    assert run.out == ""


@pytest.mark.parametrize("args", [("tail",), ("append", "--tag", "notes", "x"), ("status",)])
def test_a_missing_home_is_reported_and_not_created(tmp_path: Path, args: tuple[str, ...]) -> None:
    home = tmp_path / "missing"

    run = peer(home, *args)

    message = assert_one_line_failure(run, noise=str(tmp_path))
    assert "peer init" in message
    assert not home.exists()


def test_a_non_numeric_limit_is_one_line_without_python_names(home: Path) -> None:
    assert_one_line_failure(peer(home, "tail", "--limit", "abc"), noise=str(home))


def test_a_failure_with_debug_still_exits_non_zero(tmp_path: Path) -> None:
    run = peer(tmp_path / "missing", "--debug", "tail")
    assert run.code != 0
    assert "peer init" in run.err


def test_tail_under_the_wrong_key_prints_everything_then_exits_3_naming_both_keys(
    home: Path, tmp_path: Path
) -> None:
    """A script piping `peer tail --json` must not read an unreadable log as success."""
    ok(home, "append", "--tag", "notes", "one")
    ok(home, "append", "--tag", "notes", "two")
    written_with = ok(home, "key", "export", "--json").json()["key_id"]
    other = tmp_path / "other"
    ok(other, "init")
    wrong = tmp_path / "wrong"
    shutil.copytree(home, wrong)
    shutil.copyfile(other / "sync.key", wrong / "sync.key")  # a user with the wrong key
    held = ok(wrong, "key", "export", "--json").json()["key_id"]

    done = peer(wrong, "tail", "--json")

    assert done.code == 3
    assert [r["idx"] for r in done.json_lines()] == [0, 1]
    assert all("error" in r and "data" not in r for r in done.json_lines())
    line = assert_one_line_failure(done)
    assert "2 of 2 record(s) could not be opened" in line
    assert written_with in line and held in line


def test_tail_on_a_relay_opens_nothing_by_design_and_exits_0(home: Path, tmp_path: Path) -> None:
    ok(home, "append", "--tag", "notes", "one")
    relay = tmp_path / "relay"
    shutil.copytree(home, relay)
    (relay / "sync.key").unlink()  # what `peer init --relay` leaves out
    done = peer(relay, "tail", "--json")
    assert (done.code, done.err) == (0, "")
    assert "no sync key" in done.json_lines()[0]["error"]
