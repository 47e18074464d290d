"""The `peer` CLI as real processes: one command run to completion (`peer`, `ok`), and
`peer serve` on an ephemeral loopback port (`Server`).

Every run has a deadline and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLI_TIMEOUT_S = 60.0


def cli_env() -> dict[str, str]:
    """Ours, with gRPC's own logging kept to errors."""
    return {**os.environ, "GRPC_VERBOSITY": "ERROR"}


def peer(
    home: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = CLI_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run `peer --home HOME ARGS...` to completion (bounded by `timeout` s); `env` as
    given, else ours."""
    return subprocess.run(
        [sys.executable, "-m", "peer.cli", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def ok(home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """`peer` that must succeed; its stdout."""
    done = peer(home, *args, stdin=stdin, env=env)
    assert done.returncode == 0, f"peer {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


class Server:
    """`peer serve --no-sync --listen 127.0.0.1:0 --json` (mutual TLS, or plaintext
    with `tls=False`), stopped with SIGTERM.

    Its stderr goes to `log` (by default a file in the node's home, so that a scan of
    the home also reads what the server logged)."""

    def __init__(self, home: Path, *, tls: bool = True, log: Path | None = None) -> None:
        mode = [] if tls else ["--insecure"]
        self.log_path = log or home / "serve.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peer.cli",
                "--home",
                str(home),
                "serve",
                "--no-sync",  # these tests sync by hand
                *mode,
                "--listen",
                "127.0.0.1:0",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=cli_env(),
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], CLI_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise AssertionError(f"peer serve printed nothing: {self.log_path.read_text()}")
        self.ready: dict[str, Any] = json.loads(line)
        self.address: str = self.ready["listen"]
        self.node_id: str = self.ready["node_id"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=CLI_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()
        return code


def kill_when(code: str, path: Path, due: Callable[[], bool], timeout: float = 60) -> None:
    """Run `python -c code path` (which prints "ready" once it has begun) and SIGKILL
    it as soon as `due()` holds, polled every 2 ms (or after `timeout` seconds)."""
    with subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + timeout
        while not due() and time.monotonic() < deadline:
            time.sleep(0.002)
        child.kill()
        child.wait(timeout=30)
