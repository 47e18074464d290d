"""Real `peer` processes for the crash tests, and read-only checks of their databases.

Homes are made in-process (`Node.init`, closed at once), then every node that is killed
runs as its own `python -m peer.cli` process. Nothing here forks with SQLite open: the
checks open the database read-only, after the process that wrote it is dead or while it
runs (WAL readers see committed state only).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from peer.crypto import SyncKey
from peer.errors import InvalidRecord
from peer.home import Home
from peer.node import Node
from peer.segment import decode

TIMEOUT_S = 60.0
POLL_S = 0.005
Log = tuple[bytes, str]


def child_env() -> dict[str, str]:
    """The environment of a child node: ours without PEER_* (the suite's own switches
    such as PEER_SOAK are not node settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
    env["GRPC_VERBOSITY"] = "ERROR"
    return env


def peer_command(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "peer.cli", "--home", str(home), *args]


async def make_home(
    root: Path, name: str, sync: SyncKey, logs: dict[str, int], per: int, size: int = 0
) -> None:
    """A home whose own logs `logs` (tag -> count) are written `per` records per append,
    so every `per`-th record is signed (a batch can end there); payloads padded to `size`."""
    node = await Node.init(Home(root), name, sync)
    try:
        for tag, count in logs.items():
            for start in range(0, count, per):
                numbers = range(start, min(start + per, count))
                await node.append(tag, [_payload(name, tag, n, size) for n in numbers])
    finally:
        await node.close()


def _payload(name: str, tag: str, n: int, size: int) -> bytes:
    return f"{name}-{tag}-{n}".encode().ljust(size, b".")


async def new_homes(
    sender: Path, receiver: Path, logs: dict[str, int], per: int, size: int = 0
) -> None:
    """A sender holding `logs`, and an empty receiver with the same sync key."""
    sync = SyncKey.generate()
    await make_home(sender, "s", sync, logs, per, size)
    await make_home(receiver, "r", sync, {}, per)


def make_homes(sender: Path, receiver: Path, logs: dict[str, int], per: int, size: int = 0) -> None:
    """`new_homes` for tests that run no event loop."""
    asyncio.run(new_homes(sender, receiver, logs, per, size))


class Daemon:
    """`peer serve --no-sync --insecure` on an ephemeral loopback port."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home = home
        self.process = subprocess.Popen(
            peer_command(
                home, "serve", "--no-sync", "--insecure", "--listen", "127.0.0.1:0", "--json"
            )
            + list(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bounded: the child exits on failure
        if not line:
            self.process.wait(timeout=TIMEOUT_S)
            raise AssertionError(f"peer serve did not start: {self.stderr()}")
        self.address: str = json.loads(line)["listen"]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=TIMEOUT_S)
        self._close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=TIMEOUT_S)
        self._close()
        return code

    def _close(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_sync(home: Path, address: str, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        peer_command(home, "sync", "--insecure", address, "--batch", str(batch), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def run_peer(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`peer --home HOME ARGS...` as a child node, to completion (bounded)."""
    return subprocess.run(
        peer_command(home, *args),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=child_env(),
        check=False,
    )


def run_sync(home: Path, address: str, batch: int) -> subprocess.CompletedProcess[str]:
    return run_peer(home, "sync", "--insecure", address, "--batch", str(batch), "--json")


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for a child (bounded); its exit code and everything it printed."""
    out, err = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, out + err


def killed_syncs(
    root: Path,
    template: Path,
    address: str,
    *,
    batch: int,
    cycles: int,
    total: int,
    rng: random.Random,
) -> Iterator[Path]:
    """`cycles` receivers killed with SIGKILL mid-sync: each a fresh copy of `template`
    under `root` (r1, r2, ...) syncing from `address` in batches of `batch`, killed once
    it has committed a number of records drawn from `rng` below `total` (or has exited;
    bounded). Yields each receiver's home, and removes it when the caller is done."""
    for cycle in range(cycles):
        home = root / f"r{cycle + 1}"
        shutil.copytree(template, home)
        process = start_sync(home, address, batch)
        wait_held(home / "peer.db", rng.randrange(total), process, TIMEOUT_S)
        process.kill()
        finish(process)
        yield home
        shutil.rmtree(home)


def kill_when_ready(argv: list[str], delay: float) -> str:
    """Start `argv`, wait for the "ready" line it prints, SIGKILL it `delay` s later;
    whatever else it printed."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    with child.stdout:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        return child.stdout.read().strip()


# -- read-only checks of a database -------------------------------------------------------


def connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def held(path: Path) -> int:
    """Records committed to the store at `path` (summed heads), read while it runs."""
    with closing(connect_ro(path)) as db:
        return int(db.execute("SELECT coalesce(sum(next_idx), 0) FROM heads").fetchone()[0])


def wait_held(path: Path, target: int, process: subprocess.Popen[str], timeout: float) -> int:
    """Poll until the store holds `target` records or `process` has exited (bounded)."""
    deadline = time.monotonic() + timeout
    count = held(path)
    while count < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
        count = held(path)
    return count


@dataclass
class Audit:
    """What one database holds, and every invariant it breaks."""

    integrity: str = ""
    logs: dict[Log, list[tuple[int, bytes, str, bool]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self) -> int:
        return sum(len(rows) for rows in self.logs.values())

    def digests(self) -> dict[Log, str]:
        return {log: _digest(rows) for log, rows in self.logs.items()}

    def prefix_of(self, other: Audit) -> bool:
        """Every log here is a prefix of the same log in `other` (same records)."""
        return all(other.logs.get(log, [])[: len(rows)] == rows for log, rows in self.logs.items())


def audit(path: Path) -> Audit:
    """integrity_check; each log exactly idx 0..next_idx-1 (no gap: I1), no duplicate
    (host, tag, idx) or id (I3), and ending on a signed record (no partial batch)."""
    result = Audit()
    with closing(connect_ro(path)) as db:
        result.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        if result.integrity != "ok":
            result.problems.append(f"integrity_check: {result.integrity}")
        heads = {(h, t): n for h, t, n in db.execute("SELECT host, tag, next_idx FROM heads")}
        segments = db.execute("SELECT data FROM segments ORDER BY host, tag, first_idx")
        rows = []
        for (data,) in segments:
            try:
                rows += [(r.host, r.tag, r.idx, r.id, r.payload, r.sig) for r in decode(data)]
            except InvalidRecord as exc:
                result.problems.append(f"a malformed segment: {exc}")
    ids: set[bytes] = set()
    for host, tag, idx, record_id, payload, sig in rows:
        if record_id in ids:
            result.problems.append(f"duplicate id {record_id.hex()}")
        ids.add(record_id)
        entry = (idx, record_id, hashlib.sha256(payload).hexdigest(), bool(sig))
        result.logs.setdefault((host, tag), []).append(entry)
    for log in set(heads) | set(result.logs):
        result.problems += _log_problems(log, heads.get(log, 0), result.logs.get(log, []))
    return result


Row = tuple[int, bytes, str, bool]  # idx, id, sha256(payload), signed


def _log_problems(log: Log, next_idx: int, rows: Sequence[Row]) -> list[str]:
    name = f"{log[0].hex()[:8]}/{log[1]}"
    idxs = [row[0] for row in rows]
    if idxs != list(range(len(idxs))):
        return [f"{name}: idx not exactly 0..{len(idxs) - 1} (gap or duplicate)"]
    if len(idxs) != next_idx:
        return [f"{name}: {len(idxs)} rows but the head says {next_idx}"]
    if rows and not rows[-1][3]:
        return [f"{name}: ends on unsigned idx {idxs[-1]} (a partial batch)"]
    return []


def _digest(rows: Sequence[Row]) -> str:
    chain = hashlib.sha256()
    for idx, record_id, payload_hash, _ in rows:
        chain.update(idx.to_bytes(8, "big") + record_id + bytes.fromhex(payload_hash))
    return chain.hexdigest()


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
