"""The shell hook's hand-off to the running daemon (`peer.handoff`, docs/apps.md).

Real `peer serve` daemons (`tests.daemons`) and real `peer history add` processes.
With a daemon, the entry reaches the log through it, and the hook's process loads
neither cryptography nor sqlite3 nor asyncio; without one, or with one killed before
it answered, the hook writes the entry itself and nothing is lost; a bad request is
answered with what is wrong, and the daemon goes on.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from peer.handoff import HANDOFF_NAME, MAX_REQUEST_BYTES, frame
from peer.service.handoff import MAX_CONNECTIONS
from tests.cli import ok, peer
from tests.daemons import Daemon, Daemons, Home

STEP_S = 60.0  # a bound on each wait: the tests assert outcomes, not speed
POLL_S = 0.01
HEAVY = ("cryptography", "sqlite3", "_sqlite3", "asyncio", "aiosqlite", "grpc")


def serve(daemons: Daemons) -> tuple[Home, Daemon]:
    (home,) = daemons.homes("hook")
    (daemon,) = daemons.start(home, flags=["--no-sync"])
    return home, daemon


def history(home: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(ok(home, "history", "list", "--json"))
    return entries


def socket_of(home: Path) -> Path:
    local = json.loads((home / "serve.json").read_text())["socket"]
    return Path(local).parent / HANDOFF_NAME


def ask(path: Path, raw: bytes) -> dict[str, Any]:
    """Send `raw` as a hook would, and read the daemon's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(STEP_S)
        sock.connect(str(path))
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    answer: dict[str, Any] = json.loads(data[4:])
    return answer


def test_an_entry_is_handed_off_and_listed_with_its_fields(daemons: Daemons) -> None:
    home, _ = serve(daemons)
    added = json.loads(
        ok(
            home.root, "history", "add", "--exit", "3", "--cwd", "/src", "--duration",
            "1500000", "--session", "s1", "--json", "--", "make", "test",
        )
    )  # fmt: skip
    assert (added["command"], added["exit"], added["cwd"]) == ("make test", 3, "/src")
    assert history(home.root) == [added]  # the timestamp and id are the hook's
    assert json.loads(ok(home.root, "verify", "--json"))["ok"] is True
    path = socket_of(home.root)  # only the home's owner may connect
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_hand_off_loads_no_cryptography_sqlite_or_asyncio(daemons: Daemons) -> None:
    """What shows the entry went through the daemon: the direct write needs all three."""
    home, _ = serve(daemons)
    probe = _probe(home.root, "true")
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=STEP_S, check=False
    )
    assert done.stdout.splitlines()[-1] == "result 0 []", done.stderr
    assert [e["command"] for e in history(home.root)] == ["true"]


def test_hooks_at_once_are_all_handed_off_once(daemons: Daemons) -> None:
    """Eight hooks started together: each entry written once (idx 0..7), whether the
    daemon acked it in time or the hook wrote it itself (how many: printed, since
    that depends on the machine's load)."""
    home, _ = serve(daemons)
    hooks = [
        subprocess.Popen(
            [sys.executable, "-c", _probe(home.root, f"echo {n}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    handed = 0
    for hook in hooks:
        out, err = hook.communicate(timeout=STEP_S)
        assert out.splitlines()[-1].startswith("result 0 "), err
        handed += out.splitlines()[-1] == "result 0 []"
    print(f"{handed} of 8 handed off")  # the others waited past 1 s and wrote themselves
    commands = sorted(e["command"] for e in history(home.root))
    assert commands == sorted(f"echo {n}" for n in range(8))
    status = json.loads(ok(home.root, "status", "--json"))
    assert [log["next_idx"] for log in status["logs"]] == [8]


def _probe(home: Path, command: str) -> str:
    """A Python program running `peer history add -- COMMAND` as the `peer` script
    does, then printing its exit code and the heavy modules it loaded."""
    return (
        "import sys\n"
        "from peer.cli import main\n"
        f"code = main(['--home', {str(home)!r}, 'history', 'add', '--', {command!r}])\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('result', code, heavy)\n"
    )


def test_without_a_daemon_the_hook_writes_the_entry_itself(daemons: Daemons) -> None:
    home, daemon = serve(daemons)
    ok(home.root, "history", "add", "--", "while", "serving")
    daemon.stop()
    ok(home.root, "history", "add", "--", "after", "it", "stopped")
    (home.root / "serve.json").write_text(  # a crashed daemon's file: its pid is gone
        json.dumps(
            {
                "address": "",
                "pairing_address": "",
                "socket": "/nowhere/peer.sock",
                "pid": daemon.pid,
            }
        )
    )
    ok(home.root, "history", "add", "--", "after", "a", "crash")
    commands = [e["command"] for e in history(home.root)]
    assert commands == ["while serving", "after it stopped", "after a crash"]


def test_a_daemon_killed_before_it_answered_loses_nothing(daemons: Daemons) -> None:
    """The store is held locked, so the daemon cannot commit (nor answer) the entry it
    was handed; it is killed with SIGKILL once it has read the request (the hook waits
    for its answer, and the daemon's side of the connection holds nothing unread); the
    hook writes the entry itself, with its id: one entry, and the log verifies."""
    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) is needed to see that the daemon read the request")
    home, daemon = serve(daemons)
    hook_socket = str(socket_of(home.root))
    lock = sqlite3.connect(home.root / "peer.db", timeout=STEP_S, isolation_level=None)
    hook = None
    try:
        lock.execute("BEGIN IMMEDIATE")
        hook = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peer.cli",
                "--home",
                str(home.root),
                "history",
                "add",
                "--json",
                "--",
                "echo",
                "kept",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + STEP_S
        while not _request_read(hook.pid, hook_socket):
            assert time.monotonic() < deadline, "the daemon never read the request"
            assert hook.poll() is None, hook.communicate()
            time.sleep(POLL_S)
        daemon.kill()
        lock.execute("ROLLBACK")
        out, err = hook.communicate(timeout=STEP_S)
        assert hook.returncode == 0, err
    finally:
        lock.close()
        if hook is not None and hook.poll() is None:
            hook.kill()
            hook.wait(STEP_S)
    added = json.loads(out)
    assert history(home.root) == [added]
    assert json.loads(ok(home.root, "verify", "--json"))["ok"] is True


def _request_read(hook: int, path: str) -> bool:
    """Whether the hook sent its whole request and waits for the answer (it sleeps in
    poll(2), which it calls only then, once connected), and the daemon read it all (its
    side of the connection holds no byte unread)."""
    try:
        # CPython waits for a socket with a timeout in poll(2): poll_schedule_timeout...
        waiting = "poll" in Path(f"/proc/{hook}/wchan").read_text()
    except OSError:
        return False
    shown = subprocess.run(  # Netid State Recv-Q Send-Q Local Port Peer Port
        ["ss", "-xnH"], capture_output=True, text=True, timeout=STEP_S, check=False
    ).stdout.splitlines()
    unread = [int(f[2]) for f in map(str.split, shown) if f[1:2] == ["ESTAB"] and f[4] == path]
    return waiting and unread == [0]


def test_a_bad_request_gets_a_clear_answer_and_the_daemon_goes_on(daemons: Daemons) -> None:
    home, daemon = serve(daemons)
    path = socket_of(home.root)
    too_long = (MAX_REQUEST_BYTES + 1).to_bytes(4, "big")
    answer = ask(path, too_long)
    assert answer == {
        "ok": False,
        "error": f"a request of {MAX_REQUEST_BYTES + 1:,} bytes is over the limit of "
        f"{MAX_REQUEST_BYTES:,}",
    }
    assert ask(path, len(b"{nope").to_bytes(4, "big") + b"{nope")["error"].startswith(
        "the request is not UTF-8 JSON"
    )
    answer = ask(path, frame({"v": 1, "id": "x", "command": "ls", "cwd": "/", "exit": "0",
                              "duration": None, "timestamp": 1, "hostname": "h",
                              "session": ""}))  # fmt: skip
    assert answer == {"ok": False, "error": "the entry's 'exit' must be an integer"}
    assert ask(path, b"\x00\x00")["error"] == "the request ended before its length said"
    assert daemon.running()
    ok(home.root, "history", "add", "--", "still", "served")
    assert [e["command"] for e in history(home.root)] == ["still served"]


def test_hooks_past_the_connection_limit_are_told_busy(daemons: Daemons) -> None:
    """MAX_CONNECTIONS idle connections take every slot: the next is answered `busy`
    (its hook would write the entry itself); once they go, hand-offs work again."""
    home, daemon = serve(daemons)
    path = socket_of(home.root)
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            idle.append(sock)
            sock.connect(str(path))
        answer = None
        for _ in range(100):  # until the daemon has taken up every idle connection
            answer = _unasked(path)
            if answer is not None:
                break
        assert answer == {"ok": False, "error": "busy: too many hand-offs at once"}
    finally:
        for sock in idle:
            sock.close()
    assert daemon.running()
    ok(home.root, "history", "add", "--", "after", "the", "crowd")
    assert [e["command"] for e in history(home.root)] == ["after the crowd"]


def _unasked(path: Path) -> dict[str, Any] | None:
    """What the daemon says to a connection before it sends anything (it says nothing
    while it has room: it waits for the request); None if nothing within 0.5 s."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        sock.connect(str(path))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
    answer: dict[str, Any] = json.loads(data[4:])
    return answer


def test_a_command_over_the_limit_fails_in_one_line_with_a_daemon(daemons: Daemons) -> None:
    """The daemon refuses it; the hook then tries itself, and says why it cannot."""
    home, daemon = serve(daemons)
    words = ["x" * 100_000] * 3  # one argument may hold at most 128 KiB
    run = peer(home.root, "history", "add", "--", *words)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "over the limit" in run.stderr
    assert daemon.running() and history(home.root) == []


def test_a_relays_daemon_takes_no_hand_off_and_the_hook_says_why(daemons: Daemons) -> None:
    (relay,) = daemons.homes(relays=["relay"])
    (daemon,) = daemons.start(relay, flags=["--no-sync"])
    assert not socket_of(relay.root).exists()
    run = peer(relay.root, "history", "add", "--", "ls")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "no sync key" in run.stderr
    assert daemon.running()
