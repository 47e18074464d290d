"""`peer kv`, `peer history` and `peer store rebuild` as a shell meets them (SPEC §8).

Real processes against a real home under tmp_path, as in `test_cli.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_failure, ok, peer


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    ok(path, "init", "--name", "apps")
    return path


def test_kv_set_get_delete_and_list(home: Path) -> None:
    ok(home, "kv", "set", "colour", "blue")
    ok(home, "kv", "set", "colour", "green")
    ok(home, "kv", "set", "editor", "vim", "-n", "tools")
    assert ok(home, "kv", "get", "colour").out == "green\n"
    assert ok(home, "kv", "get", "editor", "-n", "tools").out == "vim\n"
    listed = ok(home, "kv", "list", "--json").json()
    assert [(i["ns"], i["key"], i["value"]) for i in listed] == [("default", "colour", "green")]
    every = ok(home, "kv", "list", "--all", "--json").json()
    assert [(i["ns"], i["key"]) for i in every] == [("default", "colour"), ("tools", "editor")]
    assert ok(home, "kv", "list", "-n", "tools").out == "editor\tvim\n"
    assert ok(home, "kv", "delete", "colour", "--json").json()["existed"] is True
    assert ok(home, "kv", "list", "--json").json() == []


def test_kv_get_of_a_missing_or_deleted_key_exits_1_with_one_line(home: Path) -> None:
    missing = peer(home, "kv", "get", "nothing")
    assert missing.code == 1 and missing.out == ""
    assert "nothing" in assert_one_line_failure(missing)
    ok(home, "kv", "set", "gone", "soon")
    ok(home, "kv", "delete", "gone")
    assert peer(home, "kv", "get", "gone").code == 1


def test_kv_values_keep_every_character(home: Path) -> None:
    value = "tab\there, ünïcode ✓, 'quotes' \"and\" $dollars"
    ok(home, "kv", "set", "k", value)
    assert ok(home, "kv", "get", "k").out == value + "\n"
    assert ok(home, "kv", "get", "k", "--json").json()["value"] == value


def test_kv_set_dash_reads_the_value_from_stdin_and_copies_a_get_exactly(home: Path) -> None:
    value = "line one\nline two\n\ttab ✓\n"
    ok(home, "kv", "set", "file", "-", stdin=value)  # one trailing newline dropped
    assert ok(home, "kv", "get", "file").out == value  # `kv get` adds it back
    ok(home, "kv", "set", "copy", "-", stdin=ok(home, "kv", "get", "file").out)
    assert ok(home, "kv", "get", "copy").out == value
    ok(home, "kv", "set", "binary", "-", stdin=b"\xff\x00 bin")
    assert ok(home, "kv", "get", "binary", "--json").json()["value_b64"] == "/wAgYmlu"
    too_big = peer(home, "kv", "set", "big", "-", stdin=b"x" * (1 << 20))
    assert too_big.code == 1
    assert "longer than the record limit of 1,048,560 bytes" in assert_one_line_failure(too_big)


def test_kv_list_and_history_list_print_control_characters_escaped(home: Path) -> None:
    ok(home, "kv", "set", "k\x1b[2J", "v\r\nFAKE")
    ok(home, "history", "add", "--", "printf", "\x1b]0;title\x07")
    assert ok(home, "kv", "list").out == "k\\x1b[2J\tv\\r\\nFAKE\n"
    assert ok(home, "history", "list").out.endswith("  printf \\x1b]0;title\\x07\n")


def test_history_add_list_search_and_delete(home: Path) -> None:
    first = ok(home, "history", "add", "--cwd", "/src", "--exit", "2", "--", "make", "-j4").out
    ok(home, "history", "add", "--duration", "1500000", "--session", "s1", "--", "make test")
    ok(home, "history", "add", "--", "git", "status")
    entries = ok(home, "history", "list", "--json").json()
    assert [e["command"] for e in entries] == ["make -j4", "make test", "git status"]
    assert entries[0]["id"] == first.strip()
    assert (entries[0]["cwd"], entries[0]["exit"]) == ("/src", 2)
    assert (entries[1]["duration"], entries[1]["session"]) == (1_500_000, "s1")
    assert len(ok(home, "history", "list", "--limit", "1", "--json").json()) == 1
    found = ok(home, "history", "search", "make", "--json").json()
    assert [e["command"] for e in found] == ["make test", "make -j4"]  # newest first
    ok(home, "history", "delete", first.strip())
    assert [e["command"] for e in ok(home, "history", "search", "make", "--json").json()] == [
        "make test"
    ]
    unknown = peer(home, "history", "delete", "0" * 32)
    assert unknown.code == 1
    assert_one_line_failure(unknown)


def test_history_import_reports_bad_lines_and_adds_nothing_twice(
    home: Path, tmp_path: Path
) -> None:
    path = tmp_path / ".zsh_history"
    path.write_bytes(b": 1700000000:0;ls\nnot zsh\n: 1700000001:3;sleep 3\n")
    run = ok(home, "history", "import", str(path))
    assert "line 2: not a zsh extended history line" in run.err
    assert "imported 2 command(s)" in run.out
    again = ok(home, "history", "import", str(path), "--format", "zsh", "--json").json()
    assert (again["added"], again["already"]) == (0, 2)
    assert again["problems"] == [{"line": 2, "reason": "not a zsh extended history line"}]
    assert [e["command"] for e in ok(home, "history", "list", "--json").json()] == [
        "ls",
        "sleep 3",
    ]
    missing = peer(home, "history", "import", str(tmp_path / "nope"), "--format", "bash")
    assert missing.code == 2
    assert_one_line_failure(missing, noise=str(tmp_path / "nope"))


def test_store_rebuild_gives_the_same_views_and_reports_skipped_records(home: Path) -> None:
    ok(home, "kv", "set", "a", "1")
    ok(home, "kv", "set", "b", "2")
    ok(home, "kv", "delete", "a")
    ok(home, "history", "add", "--", "ls")
    ok(home, "append", "--tag", "kv", "not a kv payload")  # counted, never a crash
    before = ok(home, "kv", "list", "--json").json()
    rebuilt = ok(home, "store", "rebuild", "--json").json()
    assert rebuilt == {
        "applied": 5,
        "undecryptable": 0,
        "unknown_version": 0,
        "malformed": 1,
        "kv_keys": 1,
        "history_entries": 1,
    }
    assert ok(home, "kv", "list", "--json").json() == before
    views = ok(home, "status", "--json").json()["views"]
    assert views == {"applied": 5, "undecryptable": 0, "unknown_version": 0, "malformed": 1}


@pytest.mark.parametrize(
    "command", [["kv", "set", "k", "v"], ["history", "add", "--", "true"], ["kv", "get", "k"]]
)
def test_the_shell_hook_commands_never_import_grpc(home: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PEER_HOME"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "peer.cli", "--home", str(home), *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert not {m for m in modules if m.startswith(("grpc", "peer.v1", "google.protobuf"))}
