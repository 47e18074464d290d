"""Pairing with `peer invite` / `peer join`, as real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from peer.pairing import Invitation
from tests.cli import Server, ok, peer


@pytest.fixture
def inviter(tmp_path: Path) -> tuple[Path, Server]:
    home = tmp_path / "laptop"
    ok(home, "init", "--name", "laptop")
    ok(home, "append", "--tag", "notes", "written on the laptop")
    return home, Server(home)


def test_one_command_on_each_device_pairs_them_and_they_sync(
    tmp_path: Path, inviter: tuple[Path, Server]
) -> None:
    laptop, server = inviter
    phone = tmp_path / "phone"
    try:
        code = ok(laptop, "invite").strip()
        joined = json.loads(ok(phone, "join", code, "--name", "phone", "--json"))
        assert joined["sync_key"] is True
        assert ok(phone, "key", "export") == ok(laptop, "key", "export")
        ok(phone, "append", "--tag", "notes", "written on the phone")
        summary = json.loads(ok(phone, "sync", "--json"))["peers"][0]
        # each side's note, and its roster events: its card, its own add, the other's add
        assert (summary["pulled"], summary["pushed"]) == (1 + 3, 1 + 3)
        tail = ok(laptop, "tail", "--tag", "notes").splitlines()
        texts = {json.loads(line)["data"] for line in tail}
        assert texts == {"written on the laptop", "written on the phone"}
        names = {p["name"] for p in json.loads(ok(laptop, "peers", "list", "--json"))["peers"]}
        assert names == {"phone"}
    finally:
        assert server.stop() == 0


def test_a_relay_invitation_gives_no_sync_key(tmp_path: Path, inviter: tuple[Path, Server]) -> None:
    laptop, server = inviter
    relay = tmp_path / "relay"
    try:
        code = ok(laptop, "invite", "--relay").strip()
        joined = json.loads(ok(relay, "join", code, "--json"))
        assert (joined["relay"], joined["sync_key"]) == (True, False)
        ok(relay, "sync")
        (record,) = [json.loads(line) for line in ok(relay, "tail", "--tag", "notes").splitlines()]
        assert "data" not in record
        assert "no sync key" in record["error"]
    finally:
        server.stop()


def test_used_expired_and_wrong_codes_are_refused_alike(
    tmp_path: Path, inviter: tuple[Path, Server]
) -> None:
    laptop, server = inviter
    try:
        code = ok(laptop, "invite").strip()
        ok(tmp_path / "first", "join", code)
        replayed = peer(tmp_path / "second", "join", code)
        short = ok(laptop, "invite", "--ttl", "1").strip()
        invitation = Invitation.from_code(short)
        expired = Invitation(
            invitation.node_id,
            invitation.address,
            invitation.pairing_address,
            invitation.secret,
            invitation.expires_at + 3600,  # the code claims more time than the inviter gave
            invitation.relay,
        )
        wrong = Invitation(
            invitation.node_id,
            invitation.address,
            invitation.pairing_address,
            bytes(16),
            invitation.expires_at + 3600,
            invitation.relay,
        )
        time.sleep(2.0)  # let the short invitation run out on the inviter
        late = peer(tmp_path / "third", "join", expired.to_code())
        guessed = peer(tmp_path / "fourth", "join", wrong.to_code())
        for refused in (replayed, late, guessed):
            assert refused.returncode == 1
            assert "not valid" in refused.stderr
            assert refused.stderr.count("\n") == 1
        for home in ("second", "third", "fourth"):
            assert not (tmp_path / home).exists(), "a failed join leaves no home behind"
        damaged = peer(tmp_path / "fifth", "join", code[:-5])
        assert damaged.returncode == 2
        assert "damaged" in damaged.stderr
    finally:
        server.stop()
