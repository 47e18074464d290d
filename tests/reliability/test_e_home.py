"""Group E, the probe of issue 18: a home is private (E1), and hostile values given to
the command line, the environment or config.toml are clear one-line errors (E7).

Every check runs real `peer` processes on homes under tmp_path; a server listens on
127.0.0.1 only. Modes are read with lstat, as another local user would meet them.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from peer import errors as peer_errors
from peer.home import Home
from tests.cli import Server, cli_env, ok, peer
from tests.reliability.conftest import Report

PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
HOSTILE_TIMEOUT_S = 15.0  # a hostile value that slipped through would leave `serve` running
# Words a user must never meet in a message: Python's and peer's exception classes, and
# the names of the types a bad number turns into.
TYPE_NAMES = {"int", "float", "str", "NoneType"} | {
    name
    for namespace in (vars(builtins), vars(peer_errors))
    for name, value in namespace.items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the children started inside with this umask (they inherit it)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes(home: Path) -> dict[str, int]:
    """Every entry of the home (files, the lock, the socket) with its permission bits."""
    return {entry.name: mode(entry) for entry in home.iterdir()}


def loose(found: dict[str, int]) -> dict[str, str]:
    return {name: f"{bits:04o}" for name, bits in found.items() if bits != PRIVATE_FILE}


# -- E1: a home and its files are private -----------------------------------------------------


def test_e1_init_under_umask_0_into_an_open_dir(tmp_path: Path, report: Report) -> None:
    home = tmp_path / "H"
    home.mkdir()
    home.chmod(0o755)  # made by hand with `mkdir`, as the probe did
    (home / "config.toml").write_text("[sync]\ninterval = 30\n")  # settings written first
    (home / "config.toml").chmod(0o644)
    log = tmp_path / "serve.log"  # outside the home: the test's file, not peer's
    with umask(0):
        init = peer(home, "init")
        after_init = (mode(home), modes(home))
        ok(home, "kv", "set", "token", "s3cret")
        ok(home, "history", "add", "--", "make", "test")
        after_writes = (mode(home), modes(home))
        server = Server(home, log=log)
        try:
            ok(home, "kv", "set", "token", "s3cret2")  # the daemon holds the store open
            serving_modes = (mode(home), modes(home))
            status = json.loads(ok(home, "status", "--json"))
            serving = Home(home).serving()
            assert serving is not None
            socket = Path(serving.socket)
            socket_modes = (mode(socket), mode(socket.parent))
        finally:
            server.stop()
    assert init.returncode == 0, init.stderr
    assert init.stderr.splitlines() == [
        f"peer: note: {home} was open to other users (mode 0755); it is now 0700",
        f"peer: note: {home}/config.toml was open to other users (mode 0644); it is now 0600",
    ]
    assert (home / "config.toml").read_text() == "[sync]\ninterval = 30\n"  # kept, tightened
    made = {"host.key", "sync.key", "tls.key", "tls.crt", "node.json", "config.toml", "peer.db"}
    while_serving = made | {"peer.db-wal", "peer.db-shm", "serve.json", "serve.lock"}
    assert set(after_init[1]) == made
    assert set(after_writes[1]) == made
    assert while_serving <= set(serving_modes[1])
    for home_mode, files in (after_init, after_writes, serving_modes):
        assert home_mode == PRIVATE_DIR
        assert loose(files) == {}
    assert socket_modes == (PRIVATE_FILE, PRIVATE_DIR)  # in the home or a private temp dir
    assert status["warnings"] == []
    report(
        "the home is 0700 and every file in it 0600 from its creation, whatever the umask "
        "and whatever mode the directory had; init says what it tightened",
        f"init into a 0755 dir (with a 0644 config.toml) under umask 000: home 0700 at every "
        f"step; {len(after_init[1])} files all 0600 after init, {len(after_writes[1])} after "
        f"kv set + history add, {len(serving_modes[1])} while serving (db WAL and shm, "
        "serve.json, serve.lock, the socket); 2 notes; status warns of nothing",
        True,
        files_serving=len(serving_modes[1]),
    )


def test_e1_status_verify_and_serve_warn_on_open_modes(tmp_path: Path, report: Report) -> None:
    home = tmp_path / "H"
    ok(home, "init")
    ok(home, "kv", "set", "token", "s3cret")
    home.chmod(0o755)
    (home / "peer.db").chmod(0o644)
    expected = [
        f"the home {home} is open to other users (mode 0755): run `chmod 700 {home}`",
        f"{home}/peer.db is open to other users (mode 0644): run `chmod 600 {home}/peer.db`",
    ]
    said = ["peer: warning: " + line for line in expected]
    status, verify = peer(home, "status"), peer(home, "verify")
    status_json, verify_json = peer(home, "status", "--json"), peer(home, "verify", "--json")
    log = tmp_path / "serve.log"
    Server(home, log=log).stop()
    served = [line for line in log.read_text().splitlines() if line.startswith("peer: warning")]
    untouched = (mode(home), mode(home / "peer.db"))
    for command in [line.split("`")[1] for line in expected]:  # follow the advice given
        subprocess.run(command, shell=True, check=True, timeout=10)
    fixed = peer(home, "status", "--json")

    assert (status.returncode, verify.returncode) == (0, 0)  # a warning, not a failure
    assert status.stderr.splitlines() == said
    assert verify.stderr.splitlines() == said
    assert (status_json.stderr, verify_json.stderr) == ("", "")
    assert json.loads(status_json.stdout)["warnings"] == expected
    assert json.loads(verify_json.stdout)["warnings"] == expected
    assert json.loads(verify_json.stdout)["ok"] is True
    # serve opened the store before it looked: SQLite gave its WAL and shm peer.db's mode
    assert served[:2] == said and all("/peer.db-" in line for line in served[2:])
    assert untouched == (0o755, 0o644)  # opening a home never changes modes
    assert json.loads(fixed.stdout)["warnings"] == [] and fixed.returncode == 0
    report(
        "status, verify (exit 0) and serve warn about a home or file open to other users, "
        "each naming the chmod that fixes it; nothing is chmod-ed behind the user's back",
        f"status, verify and their --json warn on 2 of 2 loosened paths (home 0755, peer.db "
        f"0644), exit 0; serve on {len(served)} (the store's WAL and shm took its mode); "
        f"modes left as they were; after the 2 suggested chmods: "
        f"{len(json.loads(fixed.stdout)['warnings'])} warnings",
        True,
        warned=len(expected),
    )


def test_e1_init_refuses_a_home_of_another_user(tmp_path: Path, report: Report) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    home = tmp_path / "H"
    home.mkdir(mode=0o755)
    os.chown(home, 65534, 65534)  # nobody
    run = peer(home, "init")
    assert run.returncode == 2
    assert run.stderr == (
        f"peer: {home} belongs to another user (uid 65534), who could read or replace its "
        "keys; choose a home directory you own\n"
    )
    assert list(home.iterdir()) == [] and mode(home) == 0o755
    report(
        "init refuses a home directory owned by another user, changing nothing",
        "init into a directory of uid 65534: refused in one line (exit 2), 0 files written, "
        "mode left 0755",
        True,
    )


# -- E7: hostile values are clear one-line errors -----------------------------------------------


def _code(fields: str) -> str:
    return "peer-invite-1:" + base64.urlsafe_b64encode(fields.encode()).decode().rstrip("=")


def test_e7_hostile_values_are_one_line_errors(tmp_path: Path, report: Report) -> None:
    home = tmp_path / "H"
    ok(home, "init")
    node_id = ok(home, "id").strip()
    config = home / "config.toml"
    serve = ("serve", "--listen", "127.0.0.1:0", "--no-sync", "--no-discovery")
    far_code = _code(f'{{"n":"{node_id}","a":"a:1","p":"p:1","s":"AAAA","e":1e400,"r":false}}')
    # (what, config.toml text or None, extra environment, arguments, words the error holds)
    cases: list[tuple[str, str | None, dict[str, str], tuple[str, ...], str]] = [
        ("invite --ttl 99999999999", None, {}, ("invite", "--ttl", "99999999999"), "2592000"),
        ("config 100k nested", "x = " + "[" * 100_000 + "]" * 100_000, {}, serve, "too deeply"),
        ("config keepalive 1e308", "[sync]\nkeepalive = 1e308", {}, serve, "and 3600 (1 hour)"),
        ("config batch 5000 digits", "[sync]\nbatch = " + "9" * 5000, {}, serve, "too many"),
        ("config over 1 MiB", "# " + "x" * (1 << 20), {}, serve, "over 1 MiB"),
        ("PEER_SYNC_KEEPALIVE=1e308", None, {"PEER_SYNC_KEEPALIVE": "1e308"}, serve, "3600"),
        ("PEER_SYNC_BATCH 5000 digits", None, {"PEER_SYNC_BATCH": "9" * 5000}, serve, "100000"),
        ("serve --interval 1e9", None, {}, (*serve, "--interval", "1e9"), "and 86400 (1 day)"),
        ("serve --listen port 99999", None, {}, ("serve", "--listen", "[::1]:99999"), "65535"),
        ("history add --exit 1e20", None, {}, ("history", "add", "--exit", "9" * 20, "ls"), "2147"),
        (
            "history add --duration",
            None,
            {},
            ("history", "add", "--duration", "9" * 20, "ls"),
            "(10 years)",
        ),
        ("history list --limit", None, {}, ("history", "list", "--limit", "9" * 20), "1000000000"),
        ("tail --limit", None, {}, ("tail", "--limit", "9" * 20), "1000000000"),
        ("sync --batch", None, {}, ("sync", "--batch", "9" * 20, "127.0.0.1:1"), "100000"),
        (
            "peers add port 5000 digits",
            None,
            {},
            ("peers", "add", node_id, "h:" + "9" * 5000),
            "65535",
        ),
        ("join code expiring 1e400", None, {}, ("join", far_code), "damaged"),
        (
            "join code nested 20k deep",
            None,
            {},
            ("join", _code("[" * 20_000 + "]" * 20_000)),
            "damaged",
        ),
    ]
    failures: list[str] = []
    for what, text, env, args, bound in cases:
        config.unlink(missing_ok=True)
        if text is not None:
            config.write_text(text + "\n")
        try:
            run = peer(home, *args, env={**cli_env(), **env}, timeout=HOSTILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # taken: the daemon started (and was killed)
            failures.append(f"{what}: accepted, still running after {HOSTILE_TIMEOUT_S:g} s")
            continue
        message = run.stderr.strip()
        words = set(re.findall(r"[A-Za-z_]+", message))
        clear = (
            run.returncode != 0
            and message.startswith("peer: ")
            and "\n" not in message
            and "Traceback" not in message
            and "unexpected" not in message
            and not words & TYPE_NAMES
            and bound in message
            and len(message) < 400
        )
        if not clear:
            failures.append(f"{what}: exit {run.returncode}, {message[:300]!r}")
    config.unlink(missing_ok=True)
    held = json.loads(ok(home, "status", "--json"))
    assert failures == []
    assert held["logs"] == [] and held["views"]["malformed"] == 0  # nothing half-written
    report(
        "a hostile number, nesting or size in a flag, PEER_* variable, config.toml or "
        "invitation code is refused in one line naming the bound, never an unexpected failure",
        f"{len(cases)} hostile values: {len(cases) - len(failures)} clear one-line errors, "
        f"{len(failures)} unexpected failures; 0 records written",
        not failures,
        cases=len(cases),
    )
