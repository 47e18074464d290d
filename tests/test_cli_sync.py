"""`peer serve` and `peer sync` as real processes: a line of three nodes, A - B - C."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import Server, ok, peer


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ok(a, "init", "--name", "a")
    key = ok(a, "key", "export").strip()
    ok(b, "init", "--name", "b", "--key", key)
    ok(c, "init", "--name", "c", "--key", key)
    yield a, b, c


def logs(home: Path) -> dict[tuple[str, str], int]:
    status = json.loads(ok(home, "status", "--json"))
    return {(log["host"], log["tag"]): log["next_idx"] for log in status["logs"]}


def test_a_line_of_three_processes_converges_through_the_middle(
    homes: tuple[Path, Path, Path],
) -> None:
    a, b, c = homes
    ok(a, "append", "--tag", "notes", stdin="".join(f"a{n}\n" for n in range(700)))
    ok(b, "append", "--tag", "notes", "from b")
    ok(c, "append", "--tag", "notes", "from c")
    server_a, server_b = Server(a, tls=False), Server(b, tls=False)
    try:
        first = json.loads(ok(b, "sync", "--insecure", server_a.address, "--json"))
        assert first["peers"][0]["pulled"] == 700
        assert first["peers"][0]["pushed"] == 1
        relayed = json.loads(ok(c, "sync", "--insecure", server_b.address, "--json"))
        assert relayed["peers"][0]["pulled"] == 701  # a's records came through b
        ok(b, "sync", "--insecure", server_a.address)  # c's record goes on to a
        assert logs(a) == logs(b) == logs(c)
        again = json.loads(ok(c, "sync", "--insecure", server_b.address, "--json"))
        assert (again["peers"][0]["pulled"], again["peers"][0]["pushed"]) == (0, 0)
        texts = {json.loads(line)["data"] for line in ok(c, "tail", "--tag", "notes").splitlines()}
        assert {"a0", "a699", "from b", "from c"} <= texts
    finally:
        assert server_a.stop() == 0  # SIGTERM: a clean exit
        assert server_b.stop() == 0
    for home in homes:
        ok(home, "verify")


def test_a_write_by_the_cli_beside_a_running_server_is_served_at_once(
    homes: tuple[Path, Path, Path],
) -> None:
    a, b, _ = homes
    server_a = Server(a, tls=False)
    try:
        ok(a, "append", "--tag", "late", "written while serving")
        deadline = time.monotonic() + 10
        summary = json.loads(ok(b, "sync", "--insecure", server_a.address, "--json"))
        while summary["peers"][0]["pulled"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            summary = json.loads(ok(b, "sync", "--insecure", server_a.address, "--json"))
        assert summary["peers"][0]["pulled"] == 1
    finally:
        server_a.stop()


def test_sync_failures_are_one_line_per_peer_and_a_non_zero_exit(tmp_path: Path) -> None:
    home = tmp_path / "n"
    ok(home, "init")
    refused = peer(home, "sync", "--insecure", "127.0.0.1:1")
    assert refused.returncode == 1
    assert "cannot reach 127.0.0.1:1" in refused.stdout
    plaintext_abroad = peer(home, "sync", "--insecure", "192.0.2.1:7417")
    assert plaintext_abroad.returncode == 2
    assert plaintext_abroad.stderr.count("\n") == 1
    assert "loopback" in plaintext_abroad.stderr
    serve_abroad = peer(home, "serve", "--insecure", "--listen", "192.0.2.1:7417")
    assert serve_abroad.returncode == 2
    assert "loopback" in serve_abroad.stderr
    nobody = peer(home, "sync")
    assert nobody.returncode == 2
    assert "peer peers add" in nobody.stderr
    for done in (refused, plaintext_abroad, serve_abroad, nobody):
        assert "Traceback" not in done.stderr + done.stdout
