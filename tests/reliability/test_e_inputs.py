"""Group E, hostile input on the command line (issue 18, findings 3 and 4).

E3: what a command reads is streamed in bounded memory, and a path must name a regular
file: `/dev/zero` behind a symlink, a sparse 1 GiB file, a FIFO no one writes, and
`/dev/zero` on stdin each end in one clear line within seconds and under 100 MB; a
giant line is one reported, skipped line and the lines around it are imported.
E4: text from elsewhere (names, addresses, commands, kv keys and values) is printed
escaped, never raw, and names are bounded to 64 characters on the way in.

Real `peer` processes on real homes under tmp_path; each one writes its own peak RSS
(VmHWM) at exit, so it is that process's own, whatever the size of the test runner.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from peer.cli.render import status_lines
from peer.discovery import SERVICE_TYPE, Discovery, Found, txt_properties
from peer.identity import format_node_id
from tests.cli import Server, ok
from tests.reliability.conftest import Report, Tier
from tests.reliability.procs import child_env, peer_command
from tests.test_discovery import ME, OTHER, announcement

RUN_TIMEOUT_S = 60.0
POLL_S = 0.01
MAX_SECONDS = 10.0  # one hostile input, start-up included, on a busy 2-core machine
MAX_RSS_MB = 100.0
LINE_LIMIT = 262_144  # peer.apps.imports.LINE_LIMIT, as the user reads it
RECORD_LIMIT = 1_048_560  # peer.crypto.MAX_PLAINTEXT, as the user reads it
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\r\n FAKE peer line \x9b31m\u202e" + "x" * 180
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")  # tab and newline allowed


@dataclass(frozen=True)
class Run:
    """A finished `peer` process: exit code, output, wall time, peak RSS."""

    code: int
    out: str
    err: str
    seconds: float
    rss_mb: float

    def one_line_failure(self, code: int, text: str) -> bool:
        lines = self.err.splitlines()
        return (
            self.code == code
            and len(lines) == 1
            and lines[0].startswith("peer: ")
            and text in lines[0]
            and "Traceback" not in self.err
        )


# `peer` as it runs, plus its own peak RSS written at exit. The peak is VmHWM: a child's
# ru_maxrss (wait4) also counts the pytest process it was forked from, hundreds of MB
# late in a full run; VmHWM belongs to the memory map that exec gave the child.
WITH_PEAK = """\
import atexit, os, sys
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEER_TEST_PEAK"], "w") as out:
        out.write(kib)
atexit.register(peak)
from peer.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run(home: Path, *args: str, stdin: Path | None = None) -> Run:
    """`peer --home HOME ARGS` to completion (killed after RUN_TIMEOUT_S), stdin from a
    file (or none); its peak RSS as it wrote it at exit (infinite if it never exited)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as peak,
        open(stdin or os.devnull, "rb") as source,
    ):
        start = time.monotonic()
        command = [sys.executable, "-c", WITH_PEAK, *peer_command(home, *args)[3:]]
        process = subprocess.Popen(
            command,
            stdin=source,
            stdout=out,
            stderr=err,
            env={**child_env(), "PEER_TEST_PEAK": peak.name},
        )
        while True:
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > RUN_TIMEOUT_S:
                process.kill()
                _, status, _ = os.wait4(process.pid, 0)
                break
            time.sleep(POLL_S)
        seconds = time.monotonic() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            seconds,
            _peak_mb(peak.read()),
        )


def _peak_mb(kib: str) -> float:
    return int(kib) / 1024 if kib.strip().isdigit() else float("inf")


def giant(path: Path, head: bytes, size: int, tail: bytes) -> Path:
    """`head`, then one line of `size` bytes written for real (so it is read, not jumped
    over as a hole would be), then `tail`."""
    chunk = b"x" * (1 << 20)
    with path.open("wb") as f:
        f.write(head)
        for start in range(0, size, len(chunk)):
            f.write(chunk[: size - start])
        f.write(tail)
    return path


# -- E3: hostile sources ---------------------------------------------------------------


def test_e3_hostile_sources_end_in_one_clear_line_fast_and_small(
    tmp_path: Path, report: Report
) -> None:
    home = tmp_path / "home"
    ok(home, "init", "--name", "box")
    zero = tmp_path / "zero_history"
    zero.symlink_to("/dev/zero")
    atuin = tmp_path / "history.db"
    atuin.symlink_to("/dev/zero")
    big = tmp_path / "sparse_history"
    big.touch()
    os.truncate(big, 1 << 30)
    fifo = tmp_path / "fifo_history"
    os.mkfifo(fifo)
    folder = tmp_path / "a_directory"
    folder.mkdir()
    dev_zero = Path("/dev/zero")

    cases = {
        "symlink to /dev/zero": (
            run(home, "history", "import", str(zero)),
            2,
            "it is a character device, not a regular file",
        ),
        "atuin db -> /dev/zero": (
            run(home, "history", "import", str(atuin)),
            2,
            "it is a character device, not a regular file",
        ),
        "sparse 1 GiB": (
            run(home, "history", "import", str(big)),
            0,
            f"line 1: longer than {LINE_LIMIT:,} bytes, skipped",
        ),
        "FIFO": (
            run(home, "history", "import", str(fifo)),
            2,
            "it is a FIFO (named pipe), not a regular file",
        ),
        "directory": (
            run(home, "history", "import", str(folder)),
            2,
            "it is a directory, not a regular file",
        ),
        "key import - < /dev/zero": (
            run(home, "key", "import", "-", stdin=dev_zero),
            1,
            "not a peer sync key: the first line of stdin is longer than 4,096 bytes",
        ),
        "kv set K - < /dev/zero": (
            run(home, "kv", "set", "k", "-", stdin=dev_zero),
            1,
            f"the value on stdin is longer than the record limit of {RECORD_LIMIT:,} bytes",
        ),
        "append < /dev/zero": (
            run(home, "append", "--tag", "t", stdin=dev_zero),
            1,
            "stdin line 1 is longer than the record limit",
        ),
    }
    for name, (done, _, _) in cases.items():
        print(f"{name}: exit {done.code}, {done.seconds:.2f} s, {done.rss_mb:.0f} MB: {done.err!r}")
    clear = [name for name, (done, code, why) in cases.items() if done.one_line_failure(code, why)]
    slowest = max(done.seconds for done, _, _ in cases.values())
    biggest = max(done.rss_mb for done, _, _ in cases.values())
    imported_nothing = "imported 0 command(s)" in cases["sparse 1 GiB"][0].out
    passed = (
        len(clear) == len(cases)
        and imported_nothing
        and slowest < MAX_SECONDS
        and biggest < MAX_RSS_MB
    )
    report(
        f"each hostile source ends in one clear line in < {MAX_SECONDS:.0f} s and "
        f"< {MAX_RSS_MB:.0f} MB",
        f"{', '.join(cases)}: {len(clear)}/{len(cases)} one clear line, "
        f"max {slowest:.1f} s, peak RSS {biggest:.0f} MB",
        passed,
        clear=len(clear),
        cases=len(cases),
        max_seconds=round(slowest, 2),
        peak_rss_mb=round(biggest, 1),
    )
    assert passed, {name: cases[name][0] for name in cases if name not in clear}


def test_e3_a_giant_line_is_one_skipped_line_and_the_rest_is_imported(
    tmp_path: Path, tier: Tier, report: Report
) -> None:
    size = tier.pick(20_000_000, 200_000_000)
    home = tmp_path / "home"
    ok(home, "init", "--name", "box")
    samples = {  # format: (head, tail, the long line's number, the commands kept)
        "bash": (b"echo one\n", b"\necho two\n", 2, ["echo one", "echo two"]),
        "stamped bash": (
            b"#1700000000\necho one\n#1700000001\n",
            b"\n#1700000002\necho two\n",
            4,
            ["echo one", "echo two"],
        ),
        "zsh": (
            b": 1700000000:0;echo one\n",
            b"\n: 1700000002:0;echo two\\\nand more\n",
            2,
            ["echo one", "echo two\nand more"],
        ),
        "fish": (
            b"- cmd: echo one\n  when: 1700000000\n- cmd: ",
            b"\n  when: 1700000001\n- cmd: echo two\n  when: 1700000002\n",
            3,
            ["echo one", "echo two"],
        ),
    }
    runs: dict[str, Run] = {}
    right: list[str] = []
    for name, (head, tail, line, kept) in samples.items():
        fmt = name.split()[-1]
        other = tmp_path / f"home-{fmt}-{len(runs)}"
        ok(other, "init", "--name", "box")
        path = giant(tmp_path / f"{len(runs)}_history", head, size, tail)
        done = runs[name] = run(other, "history", "import", str(path), "--format", fmt)
        path.unlink()  # one giant file on disk at a time
        listed = [e["command"] for e in json.loads(ok(other, "history", "list", "--json"))]
        expected = sorted(kept)
        problem = f"peer: {path}: line {line}: longer than {LINE_LIMIT:,} bytes, skipped"
        if (
            done.code == 0
            and done.err.splitlines() == [problem]
            and sorted(listed) == expected
            and f"imported {len(kept)} command(s)" in done.out
        ):
            right.append(name)
        shown = [command[:40] for command in listed]
        print(f"{name}: {done.seconds:.2f} s, {done.rss_mb:.0f} MB, {shown}, {done.err[:300]!r}")
    stdin = giant(tmp_path / "records", b"first\nsecond\n", 2 * RECORD_LIMIT, b"\nthird\n")
    appended = runs["append"] = run(home, "append", "--tag", "notes", stdin=stdin)
    tail = [json.loads(line)["data"] for line in ok(home, "tail", "--tag", "notes").splitlines()]
    kept_before = tail == ["first", "second"] and appended.one_line_failure(
        1,
        "stdin line 3 is longer than the record limit of 1,048,560 bytes: stopped there, "
        "the 2 line(s) before it were appended",
    )
    slowest = max(done.seconds for done in runs.values())
    biggest = max(done.rss_mb for done in runs.values())
    passed = (
        len(right) == len(samples)
        and kept_before
        and slowest < MAX_SECONDS
        and biggest < MAX_RSS_MB
    )
    report(
        "a giant line is one reported, skipped line; the lines around it are imported",
        f"{size // 1_000_000} MB line in {', '.join(samples)}: {len(right)}/{len(samples)} "
        f"imported the good commands and reported 1 line; append kept the "
        f"{len(tail)} lines before it and named line 3; max {slowest:.1f} s, "
        f"peak RSS {biggest:.0f} MB",
        passed,
        line_bytes=size,
        formats_right=len(right),
        formats=len(samples),
        max_seconds=round(slowest, 2),
        peak_rss_mb=round(biggest, 1),
    )
    assert passed, (right, tail, appended)


# -- E4: text from elsewhere -----------------------------------------------------------


def clean_output(text: str) -> bool:
    """No raw control byte (but tab and newline), and no line forged by one."""
    forged = any(line.lstrip().startswith("FAKE") for line in text.splitlines())
    return RAW_CONTROL.search(text) is None and not forged


def test_e4_names_and_text_from_elsewhere_are_printed_escaped_and_bounded(
    tmp_path: Path, report: Report
) -> None:
    laptop, phone = tmp_path / "laptop", tmp_path / "phone"
    refused = [
        run(laptop, "init", "--name", "n" * 65).one_line_failure(
            2, "a node name is at most 64 characters, not 65"
        ),
        run(laptop, "init", "--name", "a\x1bb").one_line_failure(
            2, "a node name is printable text: it holds '\\x1b'"
        ),
    ]
    ok(laptop, "init", "--name", "laptop")
    ok(phone, "init", "--name", "phone")
    for home in (laptop, phone):  # each side's own node.json, as a hostile node writes it
        (home / "node.json").write_text(json.dumps({"name": HOSTILE}) + "\n")
    refused.append(
        run(laptop, "peers", "add", format_node_id(OTHER), "--name", "n" * 65).one_line_failure(
            2, "a node name is at most 64 characters"
        )
    )
    server = Server(laptop)
    try:
        code = ok(laptop, "invite").strip()
        printed = {"join": ok(phone, "join", code)}
        ok(phone, "history", "add", "--", f"printf {HOSTILE}")
        ok(phone, "kv", "set", f"key{HOSTILE}", f"value{HOSTILE}")
        older = bytes(range(2, 34))  # a row written before names were cleaned
        with closing(sqlite3.connect(phone / "peer.db")) as db, db:
            db.execute(
                "INSERT INTO peers (node_id, name, address, certificate, added_at) "
                "VALUES (?, ?, ?, NULL, 0)",
                (older, HOSTILE * 10, f"198.18.0.9:1{HOSTILE}"),
            )
        printed["laptop peers list"] = ok(laptop, "peers", "list")
        printed["laptop status"] = ok(laptop, "status")
        printed["phone peers list"] = ok(phone, "peers", "list")
        printed["phone status"] = ok(phone, "status")
        printed["history list"] = ok(phone, "history", "list")
        printed["history search"] = ok(phone, "history", "search", "printf")
        printed["kv list"] = ok(phone, "kv", "list")
        names = [
            p["name"]
            for home in (laptop, phone)
            for p in json.loads(ok(home, "peers", "list", "--json"))["peers"]
        ]
        entry = json.loads(ok(phone, "history", "list", "--json"))[0]
        printed["history delete"] = ok(phone, "history", "delete", entry["id"])
    finally:
        stopped = server.stop()
    # A LAN announcement, taken in as the daemon's browser does (no multicast here: the
    # suite's network is 127.0.0.1), and a status showing such a name unpinned.
    lan: list[Found] = []
    discovery = Discovery(ME, 7417, "me", on_found=lan.append)
    hostile_lan = announcement(txt_properties(OTHER), ["198.18.0.2"])
    discovery.learn(f"{HOSTILE}.{SERVICE_TYPE}", hostile_lan)
    status = {
        "node_id": "me",
        "name": HOSTILE,
        "key_id": "k",
        "daemon": {
            "pid": 1,
            "listen": "127.0.0.1:1",
            "tls": True,
            "auto_sync": True,
            "discovered": [
                {"node_id": "x", "address": f"1.2.3.4:5{HOSTILE}", "name": HOSTILE, "pinned": False}
            ],
        },
        "logs": [],
        "peers": [],
        "forks": [],
    }
    printed["LAN names in status"] = "\n".join(status_lines(status))

    for place, text in printed.items():
        print(f"--- {place}:\n{text}")
    dirty = [place for place, text in printed.items() if not clean_output(text)]
    escaped = [
        place
        for place in ("history list", "history search", "kv list", "history delete", "phone status")
        if "\\x1b[2J\\x1b]0;pwned\\x07\\r\\n FAKE" in printed[place]
    ]
    stored = names + [found.name for found in lan]
    bounded = all(len(n) <= 64 and n.isprintable() for n in stored if n != HOSTILE * 10)
    raw_bytes = sum(len(RAW_CONTROL.findall(text)) for text in printed.values())
    passed = (
        stopped == 0
        and all(refused)
        and not dirty
        and len(escaped) == 5
        and bounded
        and len(stored) == 4  # laptop's phone, phone's laptop and older row, the LAN one
    )
    report(
        "text from elsewhere is printed escaped on one line; names bounded to 64 on the way in",
        f"{len(printed)} printed places: {raw_bytes} raw control bytes, {len(dirty)} forged "
        f"lines or raw escapes, {len(escaped)}/5 visibly escaped; {len(stored) - 1} received "
        f"names bounded to 64 and printable; {sum(refused)}/3 bad user names refused",
        passed,
        places=len(printed),
        raw_control_bytes=raw_bytes,
        refused=sum(refused),
    )
    assert passed, (dirty, escaped, stored, refused)
