"""The history search behind ctrl-r (`peer.store.finder` through `peer.store.direct`),
`peer history stats`, and `peer shell-init`'s output, on real stores under tmp_path.

The interactive screen itself is driven in real terminals by tests/test_shells.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from peer.apps.history import encode_create, import_id
from peer.cli.picker import Here, ago, duration
from peer.home import Home
from peer.node import Node
from peer.store import HistoryEntry
from peer.store.direct import Direct
from peer.store.finder import Scope
from tests.test_cli import ok

T0 = 1_700_000_000 * 10**9


def entry(n: int, command: str, *, host: str = "laptop", session: str = "s1", cwd: str = "/src",
          exit: int | None = 0) -> HistoryEntry:  # fmt: skip
    """The n-th command run (a later n ran later)."""
    return HistoryEntry(
        import_id(["test", n]), command, cwd, exit, 10**6, T0 + n * 10**9, host, session
    )


ENTRIES = [
    entry(0, "make test"),
    entry(1, "git checkout main", host="desk", session="s2"),
    entry(2, "echo 1000"),
    entry(3, "echo 100%", cwd="/tmp"),
    entry(4, "cp a_b c"),
    entry(5, "cp axb c"),
    entry(6, "Make all"),
    entry(7, "mkdir a; cake", exit=1),
    entry(8, "make test", session="s2"),  # the same command again, later
]


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[Path]:
    root = tmp_path / "home"
    node = await Node.init(Home(root), "search")
    try:
        await node.history.import_entries(ENTRIES)
    finally:
        await node.close()
    yield root


@pytest.fixture
def direct(home: Path) -> Iterator[Direct]:
    opened = Direct.open(Home(home).database)
    assert opened is not None
    with opened:
        yield opened


def commands(direct: Direct, text: str, scope: Scope | None = None, limit: int = 50) -> list[str]:
    return [e.command for e in direct.history_find(text, scope or Scope(), limit)]


def test_no_text_lists_each_command_once_newest_first(direct: Direct) -> None:
    found = direct.history_find("", Scope(), 50)
    assert [e.command for e in found] == [
        "make test", "mkdir a; cake", "Make all", "cp axb c", "cp a_b c", "echo 100%",
        "echo 1000", "git checkout main",
    ]  # fmt: skip
    assert found[0].session == "s2"  # its latest run
    assert commands(direct, "", limit=3) == ["make test", "mkdir a; cake", "Make all"]


def test_words_as_written_come_before_letters_in_order(direct: Direct) -> None:
    """ "make" is in "make test" and "Make all" (any case); "mkdir a; cake" only has
    its letters in order: it comes after them, though it ran later."""
    assert commands(direct, "make") == ["make test", "Make all", "mkdir a; cake"]
    assert commands(direct, "gco") == ["git checkout main"]
    assert commands(direct, "test make") == ["make test"]


def test_a_capital_letter_means_that_case(direct: Direct) -> None:
    assert commands(direct, "Make") == ["Make all"]


def test_wildcards_in_the_text_are_plain_characters(direct: Direct) -> None:
    assert commands(direct, "100%") == ["echo 100%"]
    assert commands(direct, "a_b") == ["cp a_b c"]
    assert commands(direct, "A_B*") == []


def test_scopes_keep_one_host_one_session_one_directory(direct: Direct) -> None:
    here = Here("laptop", "s1", "/tmp")
    assert "git checkout main" not in commands(direct, "", here.scope("host"))
    assert commands(direct, "git", here.scope("all")) == ["git checkout main"]
    session = commands(direct, "make", here.scope("session"))
    assert session == ["Make all", "make test", "mkdir a; cake"]  # its own "make test" ran first
    assert direct.history_find("make test", here.scope("session"), 5)[0].session == "s1"
    assert commands(direct, "", here.scope("directory")) == ["echo 100%"]


async def test_a_view_behind_its_records_is_noticed(home: Path, direct: Direct) -> None:
    """A record stored without its view row (as a sync stores one) is noticed, so the
    search catches up the full way first; any read catches up."""
    assert direct.views_behind(("history",)) is False
    node = await Node.open(Home(home))
    try:
        author = node.author
        assert author is not None
        await node.store.append(author, "history", [encode_create(entry(9, "late"))])
    finally:
        await node.close()
    assert direct.views_behind(("history",)) is True
    assert commands(direct, "late") == []
    ok(home, "history", "list", "--limit", "1")
    assert direct.views_behind(("history",)) is False
    assert commands(direct, "late") == ["late"]


def test_stats_counts_commands_hosts_and_failures(home: Path) -> None:
    stats = ok(home, "history", "stats", "--top", "2", "--json").json()
    assert (stats["runs"], stats["failed"], stats["known_exit"]) == (9, 1, 9)
    assert stats["commands"] == [
        {"command": "cp", "runs": 2, "failed": 0, "known_exit": 2, "failure_rate": 0.0},
        {"command": "echo", "runs": 2, "failed": 0, "known_exit": 2, "failure_rate": 0.0},
    ]  # ties by name
    hosts = {h["hostname"]: (h["runs"], h["failed"]) for h in stats["hosts"]}
    assert hosts == {"laptop": (8, 1), "desk": (1, 0)}
    text = ok(home, "history", "stats").out
    assert text.startswith("9 command(s) on 2 host(s); 11.1% failed (of 9 with a known")


def test_lines_say_how_long_ago_and_how_long() -> None:
    assert [ago(s * 10**9) for s in (5, 300, 7200, 3 * 86400, 15 * 86400)] == [
        "5s", "5m", "2h", "3d", "2w",
    ]  # fmt: skip
    assert [duration(d) for d in (None, 850 * 10**6, 3_200 * 10**6, 250 * 10**9)] == [
        "-", "850ms", "3.2s", "4m10s",
    ]  # fmt: skip
    assert duration(2 * 3600 * 10**9 + 5 * 60 * 10**9) == "2h05m"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_init_prints_a_script_the_shell_parses(tmp_path: Path, shell: str) -> None:
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed (`make sysdeps` installs it)")
    for flags in ((), ("--up-arrow",)):
        script = ok(tmp_path, "shell-init", shell, *flags).out
        assert "history add" in script and "history search -i" in script
        assert ("--mode session" in script) == bool(flags)
        path = tmp_path / f"init.{shell}"
        path.write_text(script)
        check = subprocess.run(
            [binary, "-n", str(path)], capture_output=True, text=True, timeout=30, check=False
        )
        assert check.returncode == 0, check.stderr


def test_the_interactive_search_needs_a_terminal_and_a_key(tmp_path: Path, home: Path) -> None:
    """Started with no controlling terminal (a new session), or on a relay: one line."""
    env = {k: v for k, v in os.environ.items() if k != "PEER_HOME"}
    search = [sys.executable, "-m", "peer.cli", "--home", str(home), "history", "search", "-i"]
    done = subprocess.run(
        search, capture_output=True, text=True, timeout=60, env=env, start_new_session=True,
        check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("peer: the interactive search needs a terminal")
    assert len(done.stderr.splitlines()) == 1
    relay = tmp_path / "relay"
    ok(relay, "init", "--relay")
    search[4] = str(relay)
    done = subprocess.run(
        search, capture_output=True, text=True, timeout=60, env=env, start_new_session=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no sync key" in done.stderr and len(done.stderr.splitlines()) == 1


def test_typing_on_gives_what_a_fresh_search_gives(home: Path, direct: Direct) -> None:
    """The search remembers a query whose newest rows did not fill the screen and
    skips that stage while the text is typed on: the lines must not change for it."""
    for typed in ("make test", "cp a_b", "gco", "echo 100%", "Make", "zz"):
        for scope in (Scope(), Scope(hostname="laptop", session="s1")):
            for end in range(1, len(typed) + 1):
                fresh = Direct.open(Home(home).database)
                assert fresh is not None
                with fresh:
                    expected = fresh.history_find(typed[:end], scope, 3)
                assert direct.history_find(typed[:end], scope, 3) == expected, typed[:end]
