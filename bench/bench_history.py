"""The shell history as a person meets it: the hook's process, ctrl-r's screen, typing.

Run with `make bench`, or `.venv/bin/python bench/bench_history.py [--n N] [--runs R]
[--json]`. In a fresh home holding N history entries (default 100,000: 3 hosts, 40
sessions, 300 directories, commands drawn from a shell-like vocabulary), it times:

1. `peer history add -- ...` as a whole process (what the shell hook starts after every
   command): median of R runs, target under 60 ms, twice: with no daemon (the hook
   seals, signs and writes the record itself) and with `peer serve` running for the
   home (the hook hands the entry to it and waits for its ack: `peer.handoff`);
2. `peer history search -i` opening: from starting the process on a pseudo-terminal to
   its first screen drawn with results (the status line and the newest entry), median
   of R runs, target under 150 ms;
   (beside it, `python -c pass` in the same environment: the floor under any process);
3. the search per keystroke: the query run for each prefix of a few typed searches
   (words, fuzzy letters, one matching nothing, in narrower modes), as the screen runs
   it (`peer.store.direct`, one screenful): median and worst, target under 30 ms each.

The `peer` processes run with Python's bytecode cache on (as an installed package
has its .pyc files): PYTHONDONTWRITEBYTECODE, if set here, is removed for them, and
each is run once before timing. Progress goes to stderr, the table (or `--json`) to
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import random
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peer.apps.history import import_id
from peer.home import Home
from peer.node import Node
from peer.store import HistoryEntry
from peer.store.direct import Direct
from peer.store.finder import Scope

ADD_TARGET_MS = 60
OPEN_TARGET_MS = 150
KEYSTROKE_TARGET_MS = 30
SCREEN_ROWS = 40
OPEN_TIMEOUT_S = 20
TYPED = ["git commit", "docker run", "gco", "kubectl get pods", "zzqxj", "make test"]
VOCABULARY = [
    "git status", "git commit -m 'fix {w}'", "git checkout {w}", "git push origin {w}",
    "git log --oneline -n {n}", "make {w}", "make test", "ls -la {d}", "cd {d}",
    "docker run --rm -it {w}:{n}", "kubectl get pods -n {w}", "ssh {w}.example.org",
    "python -m pytest tests/test_{w}.py -x", "vim {d}/{w}.py", "grep -rn {w} {d}",
    "cargo build --release", "npm run {w}", "curl -s https://{w}.example.org/{n}",
]  # fmt: skip
WORDS = ["main", "alpha", "beta", "gamma", "delta", "api", "web", "db", "cache", "auth"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peer_command() -> list[str]:
    script = Path(sys.executable).with_name("peer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "peer.cli"]


def child_env() -> dict[str, str]:
    drop = {"PEER_HOME", "PYTHONDONTWRITEBYTECODE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def entries(n: int, rng: random.Random) -> list[HistoryEntry]:
    start = time.time_ns() - n * 10**9
    made = []
    for i in range(n):
        template = rng.choice(VOCABULARY)
        command = template.format(
            w=rng.choice(WORDS), n=rng.randrange(1000), d=f"/src/p{rng.randrange(300)}"
        )
        made.append(
            HistoryEntry(
                import_id(["bench", i]),
                command,
                f"/src/p{rng.randrange(300)}",
                rng.choice((0, 0, 0, 1, 2)),
                rng.randrange(10**10),
                start + i * 10**9,
                rng.choice(("laptop", "desk", "server")),
                f"s{rng.randrange(40)}",
            )
        )
    return made


async def fill(home: Path, n: int) -> None:
    node = await Node.init(Home(home), "bench")
    try:
        await node.history.import_entries(entries(n, random.Random(16)))
    finally:
        await node.close()


def process_ms(home: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [*peer_command(), "--home", str(home), *args],
        capture_output=True,
        env=child_env(),
        check=False,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"peer {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return elapsed * 1000


@contextlib.contextmanager
def daemon(home: Path) -> Iterator[None]:
    """`peer serve` for `home` (no sync, loopback), from its ready line to SIGTERM."""
    command = [*peer_command(), "--home", str(home), "serve", "--no-sync"]
    command += ["--listen", "127.0.0.1:0", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=child_env())
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], OPEN_TIMEOUT_S)
        if not ready or not process.stdout.readline():
            raise RuntimeError(f"`peer serve` was not ready in {OPEN_TIMEOUT_S} s")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(OPEN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(OPEN_TIMEOUT_S)


def python_ms() -> float:
    """This Python doing nothing, as a process: the floor under every `peer` process
    (site and .pth files included: an editable install's import hook costs here)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=child_env(), check=True, timeout=60)
    return (time.perf_counter() - started) * 1000


def open_ms(home: Path, newest: str) -> float:
    """Start `peer history search -i` on a new pseudo-terminal; ms until its first
    screen shows the status line and the newest command; then leave it with esc."""
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal (/dev/tty)
        size = struct.pack("HHHH", SCREEN_ROWS, 120, 0, 0)
        fcntl.ioctl(0, termios.TIOCSWINSZ, size)
        os.environ.clear()
        os.environ.update({**child_env(), "TERM": "xterm-256color", "LINES": str(SCREEN_ROWS)})
        os.execv(
            peer_command()[0], [*peer_command(), "--home", str(home), "history", "search", "-i"]
        )
    seen = b""
    try:
        deadline = started + OPEN_TIMEOUT_S
        while not (b"all hosts]" in seen and newest.encode()[:40] in seen):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the search showed no results in {OPEN_TIMEOUT_S} s")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                seen += os.read(fd, 65536)
        elapsed = time.perf_counter() - started
        os.write(fd, b"\x1b")
        _drain_until_exit(pid, fd)
    finally:
        _reap(pid, fd)
    return elapsed * 1000


def _drain_until_exit(pid: int, fd: int) -> None:
    deadline = time.perf_counter() + OPEN_TIMEOUT_S
    while time.perf_counter() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            with contextlib.suppress(OSError):
                os.read(fd, 65536)
    raise RuntimeError("the search did not leave on esc")


def _reap(pid: int, fd: int) -> None:
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    os.close(fd)


def keystroke_ms(home: Path) -> list[float]:
    """The search of each prefix of each typed text, in each mode, as the screen runs it."""
    direct = Direct.open(Home(home).database)
    assert direct is not None
    scopes = [Scope(), Scope(hostname="laptop"), Scope(hostname="laptop", session="s7")]
    times: list[float] = []
    with direct:
        for scope in scopes:
            for text in TYPED:
                for end in range(1, len(text) + 1):
                    started = time.perf_counter()
                    direct.history_find(text[:end], scope, SCREEN_ROWS - 2)
                    times.append((time.perf_counter() - started) * 1000)
    return times


def bench(n: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="peer-bench-history-") as tmp:
        home = Path(tmp) / "home"
        log(f"filling a home with {n:,} history entries")
        asyncio.run(fill(home, n))
        log(f"timing `python -c pass` and `peer history add` as processes, {runs} runs")
        floor = [python_ms() for _ in range(runs)]
        process_ms(home, "history", "add", "--", "warm", "up")
        add = [process_ms(home, "history", "add", "--", "make", "test") for _ in range(runs)]
        log(f"timing `peer history add` handed to a running daemon, {runs} runs")
        with daemon(home):
            process_ms(home, "history", "add", "--", "warm", "up")
            handed = [process_ms(home, "history", "add", "--", "make", "test") for _ in range(runs)]
        newest = "make test"
        log(f"timing `peer history search -i` opening on a pty, {runs} runs")
        open_ms(home, newest)
        opened = [open_ms(home, newest) for _ in range(runs)]
        log("timing the search per keystroke")
        keys = keystroke_ms(home)
    return {
        "entries": n,
        "runs": runs,
        "history_add_ms": statistics.median(add),
        "history_add_min_ms": min(add),
        "history_add_daemon_ms": statistics.median(handed),
        "history_add_daemon_min_ms": min(handed),
        "python_start_ms": statistics.median(floor),
        "search_open_ms": statistics.median(opened),
        "search_open_min_ms": min(opened),
        "keystroke_p95_ms": statistics.quantiles(keys, n=20)[-1],
        "keystroke_median_ms": statistics.median(keys),
        "keystroke_max_ms": max(keys),
        "keystrokes": len(keys),
    }


def table(r: dict[str, Any]) -> str:
    def verdict(value: float, target: float) -> str:
        return f"ok (< {target} ms)" if value < target else f"MISS (target < {target} ms)"

    n, keys = f"{r['entries']:,}", r["keystrokes"]
    rows = [
        ("peer history add, no daemon (process, median)", r["history_add_ms"], ADD_TARGET_MS),
        ("peer history add, handed off (median)", r["history_add_daemon_ms"], ADD_TARGET_MS),
        (f"search -i opens, {n} entries (median)", r["search_open_ms"], OPEN_TARGET_MS),
        (f"search per keystroke (median of {keys})", r["keystroke_median_ms"], KEYSTROKE_TARGET_MS),
        ("search per keystroke (95th percentile)", r["keystroke_p95_ms"], KEYSTROKE_TARGET_MS),
        ("search per keystroke (worst)", r["keystroke_max_ms"], KEYSTROKE_TARGET_MS),
    ]
    width = max(len(row[0]) for row in rows)
    lines = [f"{'shell history':<{width}}  {'result':>9}  verdict"]
    lines += [f"{name:<{width}}  {value:>6.1f} ms  {verdict(value, t)}" for name, value, t in rows]
    lines.append(
        f"(`python -c pass` here: {r['python_start_ms']:.1f} ms, the floor under any process; "
        f"fastest of {r['runs']}: history add {r['history_add_min_ms']:.1f} ms, "
        f"handed off {r['history_add_daemon_min_ms']:.1f} ms, "
        f"search open {r['search_open_min_ms']:.1f} ms; load average now "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="history entries")
    parser.add_argument("--runs", type=int, default=9, help="process runs per median")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = bench(args.n, args.runs)
    print(json.dumps(results, sort_keys=True) if args.json else table(results))


if __name__ == "__main__":
    main()
