"""Two daemons on a LAN that know each other only by node id: discovery supplies the
addresses, the pins still decide who is trusted, and they sync by themselves.

Each daemon runs in its own network namespace (the `lan` fixture: a veth pair with
198.18.0.1 and 198.18.0.2), so multicast DNS really crosses a link. The homes are on
the shared file system, so `peer status` from the host reads each daemon's local socket.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cli import ok
from tests.daemons import cli_status

TIMEOUT_S = 60.0


def serve_in(namespace: str, home: Path, listen: str) -> subprocess.Popen[str]:
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "peer.cli"]
    command += ["--home", str(home), "serve", "--listen", listen, "--interval", "2", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    return process


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_pinned_daemons_find_each_other_on_the_lan_and_sync(
    lan: tuple[str, str], tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ok(a, "init", "--name", "alpha")
    ok(b, "init", "--name", "beta", "--key", ok(a, "key", "export").strip())
    ok(a, "peers", "add", ok(b, "id").strip())  # by id only: no address
    ok(b, "peers", "add", ok(a, "id").strip())
    ok(a, "append", "--tag", "notes", "found you")
    started = time.monotonic()
    daemons = [serve_in(lan[0], a, "198.18.0.1:7001"), serve_in(lan[1], b, "198.18.0.2:7002")]
    try:
        deadline = started + TIMEOUT_S
        held: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            held = cli_status(b)["logs"]
            if held:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - started
        print(f"discovered and synced in {seconds:.1f} s")
        assert [log["next_idx"] for log in held] == [1]
        link = cli_status(a)["peers"][0]["link"]
        assert link["address"] == "198.18.0.2:7002"
        assert cli_status(a)["daemon"]["discovery"] == "on"
        discovered = {d["node_id"] for d in cli_status(a)["daemon"]["discovered"]}
        assert discovered == {cli_status(b)["node_id"]}
    finally:
        codes = [stop(process) for process in daemons]
    assert codes == [0, 0]
