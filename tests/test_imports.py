"""Importing shell histories: bash, zsh (extended), fish and atuin, from files in
their real formats made here; malformed lines are reported by number and skipped;
importing the same file again adds nothing."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import closing
from pathlib import Path

import pytest

from peer.apps import imports
from peer.apps.history import History
from peer.apps.imports import Command, Problem
from peer.apps.views import ViewEngine
from peer.crypto import Author, SigningKey, SyncKey
from peer.errors import UsageError
from peer.store import Store

S = 1_000_000_000
ATUIN_SCHEMA = """CREATE TABLE history (
    id text PRIMARY KEY,
    timestamp integer NOT NULL,
    duration integer NOT NULL,
    exit integer NOT NULL,
    command text NOT NULL,
    cwd text NOT NULL,
    session text NOT NULL,
    hostname text NOT NULL,
    deleted_at integer,
    UNIQUE (timestamp, cwd, command)
)"""


def commands(parsed: imports.Parsed) -> list[tuple[int, str, int | None]]:
    return [(c.line, c.command, c.timestamp) for c in parsed.commands]


def test_bash_plain_one_command_per_line() -> None:
    data = b"ls -la\ncd /tmp\n\ngit status\n\xff\xfe broken\nls -la\n"
    parsed = imports.parse_bash(imports.lines_of(data))
    assert commands(parsed) == [
        (1, "ls -la", None),
        (2, "cd /tmp", None),
        (4, "git status", None),
        (6, "ls -la", None),
    ]
    assert parsed.problems == [Problem(5, "not valid UTF-8")]


def test_bash_with_timestamps_keeps_multi_line_commands_whole() -> None:
    data = (
        b"#1700000000\nls\n#1700000005\nfor i in 1 2; do\n  echo $i\ndone\n"
        b"#1700000009\n#1700000010\nmake\n"
    )
    parsed = imports.parse_bash(imports.lines_of(data))
    assert commands(parsed) == [
        (2, "ls", 1700000000 * S),
        (4, "for i in 1 2; do\n  echo $i\ndone", 1700000005 * S),
        (9, "make", 1700000010 * S),
    ]
    assert parsed.problems == [Problem(7, "a timestamp line with no command after it")]


def test_zsh_extended_with_durations_continuations_and_metafied_text() -> None:
    data = (
        b": 1700000000:0;ls\n"
        b": 1700000003:2;echo one\\\ntwo\\\nthree\n"
        b"garbage line\n"
        b": 1700000010:5;git commit -m 'x'\n"
        b": 1700000020:0;echo \xc4\x83\xa3\n"  # "echo ă" as zsh writes it (metafied)
        b": 99999999999999999999:0;too far\n"
    )
    parsed = imports.parse_zsh(imports.lines_of(data))
    assert parsed.commands == [
        Command(1, "ls", 1700000000 * S, 0),
        Command(2, "echo one\ntwo\nthree", 1700000003 * S, 2 * S),
        Command(6, "git commit -m 'x'", 1700000010 * S, 5 * S),
        Command(7, "echo ă", 1700000020 * S, 0),
    ]
    assert parsed.problems == [
        Problem(5, "not a zsh extended history line"),
        Problem(8, "timestamp 99999999999999999999 is out of range"),
    ]


def test_fish_history_entries_with_paths_and_escapes() -> None:
    data = (
        b"- cmd: ls\n  when: 1700000000\n"
        b"- cmd: echo a\\nb \\\\ c\n  when: 1700000001\n  paths:\n    - /tmp\n"
        b"- cmd: late\n  when: soon\n"
        b"what is this\n"
        b"- cmd: make\n  when: 1700000005\n"
    )
    parsed = imports.parse_fish(imports.lines_of(data))
    assert commands(parsed) == [
        (1, "ls", 1700000000 * S),
        (3, "echo a\nb \\ c", 1700000001 * S),
        (7, "late", None),
        (10, "make", 1700000005 * S),
    ]
    assert parsed.problems == [
        Problem(8, "when 'soon' is not a number of seconds"),
        Problem(9, "not a fish history line"),
    ]


def make_atuin(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(ATUIN_SCHEMA)
        db.executemany(
            "INSERT INTO history VALUES (?,?,?,?,?,?,?,?,?)",
            [
                ("a1", 1700000000 * S, 2_000_000, 0, "ls", "/home/me", "s1", "laptop:me", None),
                ("a2", 1700000001 * S, -1, 1, "false", "/", "s1", "laptop:me", None),
                ("a3", 1700000002 * S, 5, 0, "secret", "/", "s1", "laptop:me", 1700000003 * S),
                ("a4", "yesterday", 5, 0, "odd", "/", "s1", "laptop:me", None),
            ],
        )


def test_atuin_history_db_rows_deleted_rows_left_out(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    make_atuin(path)
    assert imports.guess_format(path) == "atuin"
    parsed = imports.load(path, "atuin")
    assert parsed.commands == [
        Command(1, "ls", 1700000000 * S, 2_000_000, "/home/me", 0, "s1", "laptop:me", "a1"),
        Command(2, "false", 1700000001 * S, None, "/", 1, "s1", "laptop:me", "a2"),
    ]
    assert parsed.deleted == 1
    assert parsed.problems == [Problem(4, "an atuin row with missing or mistyped fields")]


def test_a_file_that_is_not_an_atuin_database_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(UsageError, match=r"cannot read .* as an atuin history\.db"):
        imports.load(path, "atuin")
    with closing(sqlite3.connect(tmp_path / "other.db")) as db:
        db.execute("CREATE TABLE history (id text)")
    with pytest.raises(UsageError, match="lacks timestamp"):
        imports.load(tmp_path / "other.db", "atuin")


def test_ids_are_deterministic_and_tell_repeated_commands_apart() -> None:
    same = [Command(1, "ls", 5 * S), Command(2, "ls", 5 * S), Command(3, "ls")]
    first = imports.to_entries(same, "zsh", "box", mtime_ns=100 * S)
    again = imports.to_entries(same, "zsh", "box", mtime_ns=200 * S)
    assert [e.id for e in first] == [e.id for e in again]
    assert len({e.id for e in first}) == 3
    assert first[2].timestamp == 100 * S  # no time in the file: its modification time
    elsewhere = imports.to_entries(same, "zsh", "other-box", mtime_ns=100 * S)
    assert not {e.id for e in first} & {e.id for e in elsewhere}


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[History]:
    sync = SyncKey.generate()
    author = Author(SigningKey.generate(), sync)
    store = await Store.open(tmp_path / "peer.db")
    await store.add_host(author.signing.public_key)
    yield History(ViewEngine(store, sync), author)
    await store.close()


async def import_file(history: History, path: Path, fmt: str) -> tuple[int, int]:
    parsed = imports.load(path, fmt)
    entries = imports.to_entries(parsed.commands, fmt, "box", path.stat().st_mtime_ns)
    result = await history.import_entries(entries)
    return result.added, result.already


@pytest.mark.parametrize("fmt", ["bash", "zsh", "fish", "atuin"])
async def test_importing_the_same_file_again_adds_nothing(
    tmp_path: Path, history: History, fmt: str
) -> None:
    path = tmp_path / f"{fmt}_history"
    samples = {
        "bash": b"ls\nls\nmake\n",
        "zsh": b": 1700000000:0;ls\n: 1700000000:0;ls\n: 1700000001:1;make\n",
        "fish": b"- cmd: ls\n  when: 1700000000\n- cmd: make\n  when: 1700000001\n",
    }
    if fmt == "atuin":
        make_atuin(path)
    else:
        path.write_bytes(samples[fmt])
    added, _ = await import_file(history, path, fmt)
    assert added == len(await history.recent()) > 0
    assert await import_file(history, path, fmt) == (0, added)
    imported = await history.recent()
    assert len(imported) == added
    await history._views.rebuild()  # the view written from plaintexts equals a replay
    assert await history.recent() == imported


async def test_a_grown_history_file_adds_only_its_new_lines(
    tmp_path: Path, history: History
) -> None:
    path = tmp_path / ".zsh_history"
    path.write_bytes(b": 1700000000:0;ls\n: 1700000001:0;make\n")
    assert await import_file(history, path, "zsh") == (2, 0)
    with path.open("ab") as handle:
        handle.write(b": 1700000002:0;make test\n")
    assert await import_file(history, path, "zsh") == (1, 2)
    assert [e.command for e in await history.recent()] == ["ls", "make", "make test"]


async def test_a_deleted_entry_is_not_brought_back_by_importing_again(
    tmp_path: Path, history: History
) -> None:
    path = tmp_path / "bash_history"
    path.write_bytes(b"echo secret-token\nls\n")
    await import_file(history, path, "bash")
    (secret,) = await history.search("secret")
    await history.delete(secret.id)
    assert await import_file(history, path, "bash") == (0, 2)
    assert [e.command for e in await history.recent()] == ["ls"]


LONG = b"x" * (imports.LINE_LIMIT + 1)
TOO_LONG = f"longer than {imports.LINE_LIMIT:,} bytes"


@pytest.mark.parametrize(
    ("parse", "data", "kept", "problems"),
    [
        (imports.parse_bash, b"ls\n" + LONG + b"\nmake\n", ["ls", "make"], [(2, TOO_LONG)]),
        (
            imports.parse_bash,  # a stamped command with a line too long is dropped whole
            b"#1700000000\nls\n#1700000001\nfor i; do\n" + LONG + b"\ndone\n#1700000002\nmake\n",
            ["ls", "make"],
            [(5, TOO_LONG)],
        ),
        (
            imports.parse_zsh,  # the line after a too-long one starts afresh
            b": 1700000000:0;ls\n" + LONG + b"\\\n: 1700000001:0;a\\\nb\n",
            ["ls", "a\nb"],
            [(2, TOO_LONG)],
        ),
        (
            imports.parse_zsh,
            b": 1700000000:0;ls\n: 1700000001:0;a\\\n" + LONG + b"\n: 1700000002:0;make\n",
            ["ls", "make"],
            [(3, TOO_LONG)],
        ),
        (
            imports.parse_fish,  # the `when` of a dropped entry is passed over
            b"- cmd: ls\n  when: 1\n- cmd: " + LONG + b"\n  when: 2\n- cmd: make\n  when: 3\n",
            ["ls", "make"],
            [(3, TOO_LONG)],
        ),
    ],
)
def test_a_line_too_long_is_one_problem_and_the_commands_around_it_are_kept(
    parse: Callable[[Iterable[imports.Line]], imports.Parsed],
    data: bytes,
    kept: list[str],
    problems: list[tuple[int, str]],
) -> None:
    parsed = parse(imports.lines_of(data))
    assert [c.command for c in parsed.commands] == kept
    assert [(p.line, p.reason) for p in parsed.problems] == problems


def test_commands_too_big_for_one_record_are_reported_not_fatal(tmp_path: Path) -> None:
    escapes = "\x01" * 200_000  # under the line limit, but 1.2 MB once written as JSON
    lines = "\n".join(["# part"] * 40_000)  # many short lines, over the limit in all
    path = tmp_path / "zsh_history"
    path.write_bytes(
        f": 1700000000:0;ls\n: 1700000001:0;{escapes}\n: 1700000002:0;make\n".encode()
        + b": 1700000003:0;"
        + lines.replace("\n", "\\\n").encode()
        + b"\n"
    )
    parsed = imports.load(path, "zsh")
    assert [c.command for c in parsed.commands] == ["ls", "make"]
    assert [p.line for p in parsed.problems] == [2, 4]
    assert parsed.problems[0].reason.startswith("an entry of 1,200,")
    assert parsed.problems[0].reason.endswith("bytes is over the record limit of 1,048,560")
    assert parsed.problems[1].reason == f"a command longer than {imports.LINE_LIMIT:,} bytes"


def test_a_fifo_or_a_device_is_refused_before_it_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fish_history"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match=r"it is a FIFO \(named pipe\), not a regular file"):
        imports.load(fifo, "fish")
    atuin = tmp_path / "history.db"
    atuin.symlink_to("/dev/zero")
    with pytest.raises(UsageError, match="it is a character device, not a regular file"):
        imports.load(atuin, "atuin")
