"""`peer history add` on its lean path (`peer.cli.quick`), as a shell hook runs it.

Real processes against a real home under tmp_path. The record must be what the full
path writes (sealed, signed, next idx, view updated: `peer verify` and the views say
so), concurrent hooks must not lose or duplicate one, and the process must not load
what the write does not need (asyncio, aiosqlite, grpc): that is what keeps it short.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peer.apps.history import TAG, encode_create, new_id
from peer.cli import quick
from peer.home import Home
from peer.node import Node
from peer.store import HistoryEntry
from peer.store.direct import Direct
from tests.test_cli import assert_one_line_failure, ok, peer

HOOK_TIMEOUT_S = 60


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    ok(path, "init", "--name", "hook")
    return path


def test_the_hook_records_an_entry_that_verifies_and_shows_at_once(home: Path) -> None:
    run = ok(
        home, "history", "add", "--exit", "3", "--cwd", "/src", "--duration", "1500000",
        "--session", "s1", "--json", "--", "make", "test",
    )  # fmt: skip
    added = run.json()
    assert (added["command"], added["exit"], added["cwd"]) == ("make test", 3, "/src")
    assert (added["duration"], added["session"]) == (1500000, "s1")
    listed = ok(home, "history", "list", "--json").json()
    assert listed == [added]
    verify = ok(home, "verify", "--json").json()
    assert verify["ok"] is True and verify["decrypted"] == 1
    status = ok(home, "status", "--json").json()
    assert [(log["tag"], log["next_idx"]) for log in status["logs"]] == [("history", 1)]
    assert status["views"]["applied"] == 1  # applied by the hook, not by a later read


def test_hooks_at_once_lose_and_duplicate_nothing(home: Path) -> None:
    """Eight hooks started together (a shell per terminal): idx 0..7, all in the view."""
    hook = [sys.executable, "-m", "peer.cli", "--home", str(home), "history", "add"]
    hooks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peer.cli",
                "--home",
                str(home),
                "history",
                "add",
                "--",
                "echo",
                str(n),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in range(8)
    ]
    for hook in hooks:
        _, err = hook.communicate(timeout=HOOK_TIMEOUT_S)
        assert hook.returncode == 0, err
    commands = sorted(e["command"] for e in ok(home, "history", "list", "--json").json())
    assert commands == sorted(f"echo {n}" for n in range(8))
    status = ok(home, "status", "--json").json()
    assert [log["next_idx"] for log in status["logs"]] == [8]
    assert ok(home, "verify", "--json").json()["ok"] is True


def test_the_hook_loads_neither_asyncio_nor_aiosqlite_nor_grpc_nor_x509(home: Path) -> None:
    """What the hook does not need, it does not import (each costs milliseconds after
    every command): asyncio, aiosqlite, grpc, the search screen, X.509 and key files."""
    probe = (
        "import sys\n"
        "from peer.cli import main\n"
        f"code = main(['--home', {str(home)!r}, 'history', 'add', '--', 'true'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('asyncio', 'aiosqlite', 'grpc', 'prompt_toolkit') or m in "
        "('cryptography.x509', 'cryptography.hazmat.primitives.serialization'))\n"
        "print('result', code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=HOOK_TIMEOUT_S,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == "result 0 []", done.stderr
    assert [e["command"] for e in ok(home, "history", "list", "--json").json()] == ["true"]


def test_a_home_without_its_store_takes_the_full_path(home: Path) -> None:
    """No peer.db (removed, say): the full path creates it, the entry is written."""
    for path in home.glob("peer.db*"):
        path.unlink()
    ok(home, "history", "add", "--", "ls")
    assert [e["command"] for e in ok(home, "history", "list", "--json").json()] == ["ls"]


def test_the_hook_fails_in_one_line_without_a_home_or_on_a_relay(tmp_path: Path) -> None:
    run = peer(tmp_path / "nowhere", "history", "add", "--", "ls")
    assert "run `peer init` first" in assert_one_line_failure(run)
    relay = tmp_path / "relay"
    ok(relay, "init", "--relay")
    run = peer(relay, "history", "add", "--", "ls")
    assert "no sync key" in assert_one_line_failure(run)
    assert run.code == 2


def test_the_hook_refuses_a_bad_flag_in_one_line(home: Path) -> None:
    run = peer(home, "history", "add", "--exit", "x", "--", "ls")
    assert run.code == 2
    assert "--exit" in assert_one_line_failure(run)


def test_help_still_comes_from_the_full_parser(home: Path) -> None:
    run = ok(home, "history", "add", "--help")
    assert "--duration" in run.out and "--json" in run.out


LEAN = [  # what hooks pass: read without argparse
    ["history", "add", "--", "make", "test"],
    ["--home", "/h", "--debug", "history", "add", "--exit", "-1", "--", "ls", "-la"],
    ["--home=/h", "history", "add", "--cwd=/src", "--duration", "15", "--json", "--", "x"],
    ["history", "add", "--session", "s", "--exit", "2147483647", "--", "--", "-x"],
]
EXPLAINED = [  # mistakes, abbreviations, no `--`: left to argparse
    ["history", "add", "--exit", "x", "--", "ls"],
    ["history", "add", "--exit", "2147483648", "--", "ls"],
    ["history", "add", "--duration=--5", "--", "ls"],
    ["history", "add", "--ex", "1", "--", "ls"],
    ["history", "add", "ls"],
    ["history", "add", "--"],
    ["history", "add", "--cwd"],
]


@pytest.mark.parametrize("argv", LEAN)
def test_the_hooks_own_reading_of_its_flags_agrees_with_argparse(argv: list[str]) -> None:
    fast = quick.parse(argv)
    assert fast is not None
    full = quick.full_parser().parse_args(quick.without_command(argv))
    assert vars(fast) == vars(full)


@pytest.mark.parametrize("argv", EXPLAINED)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert quick.parse(argv) is None


async def test_a_hook_behind_the_view_leaves_its_row_to_the_next_catch_up(home: Path) -> None:
    """A record stored without its view row (as a sync stores one) holds the view's
    cursor back: the hook's append must not apply its own row past it; the next read
    catches up and shows both, in order."""
    node = await Node.open(Home(home))
    try:
        late = HistoryEntry(new_id(), "synced", "/", 0, 1, 1, "other", "s")
        await node.store.append(node.author, TAG, [encode_create(late)])
    finally:
        await node.close()
    ok(home, "history", "add", "--", "typed")
    direct = Direct.open(Home(home).database)
    assert direct is not None
    with direct:
        assert direct.views_behind((TAG,)) is True  # nothing applied past the gap
    listed = [e["command"] for e in ok(home, "history", "list", "--json").json()]
    assert listed == ["synced", "typed"]


def test_an_entry_the_view_holds_already_is_not_written_again(home: Path) -> None:
    """A hook whose hand-off lost only the daemon's answer writes the entry itself, with
    the same id: the view holds it already, so nothing is written twice."""
    from peer.apps.direct import add_directly
    from peer.crypto import Author

    identity = Home(home).load()
    assert identity.sync is not None
    author = Author(identity.signing, identity.sync)
    entry = HistoryEntry(new_id(), "make", "/", 0, 1, 1, "here", "s")
    assert add_directly(Home(home).database, author, entry) is True
    assert add_directly(Home(home).database, author, entry) is False
    status = ok(home, "status", "--json").json()
    assert [log["next_idx"] for log in status["logs"]] == [1]
    assert [e["id"] for e in ok(home, "history", "list", "--json").json()] == [entry.id]
