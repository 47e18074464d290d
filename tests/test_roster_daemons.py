"""The roster with real daemons (issue 15): pair once, revoke once, rotate the key.

Devices join through `peer invite` / `peer join` on any device of the roster, as a user
would, and every other device pins them within a sync round. The lost laptop is
revoked on one device: every other device unpins it (the time it takes is printed),
its calls are refused, and what is written after the rotation is unreadable with
everything it holds, while every other device reads every record, old and new.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cli import ok, peer
from tests.daemons import Daemons, Home, aok, joined_home, until

pytestmark = pytest.mark.asyncio


async def pins(daemons: Daemons, home: Home) -> set[str]:
    return {p["node_id"] for p in (await daemons.status(home))["peers"]}


async def first_device(daemons: Daemons) -> Home:
    (first,) = daemons.homes("a")
    daemons.start(first)
    return first


async def test_pair_once_then_revoke_once(daemons: Daemons) -> None:
    """c joins through b; a, which never saw c, pins it within a round. a revokes c:
    b unpins it, and the key is rotated on a and b."""
    a = await first_device(daemons)
    b = await joined_home(daemons, a, "b")
    c = await joined_home(daemons, b, "c")

    async def a_pins_c() -> bool:
        return c.node_id in await pins(daemons, a)

    await until(a_pins_c, "a to pin c (who joined through b)", timeout=20)
    listed = json.loads(await aok(a.root, "devices", "--json"))
    assert {d["name"] for d in listed["devices"]} == {"a", "b", "c"}

    await aok(a.root, "append", "--tag", "notes", "before the rotation")
    before = json.loads(await aok(b.root, "status", "--json"))["key_id"]
    revoked = json.loads(await aok(a.root, "devices", "revoke", "c", "--json"))
    assert revoked["revoked"]["node_id"] == c.node_id and revoked["key_id"]
    start = time.monotonic()

    async def b_dropped_c() -> bool:
        return c.node_id not in await pins(daemons, b)

    await until(b_dropped_c, "b to unpin c", timeout=20)
    print(f"b unpinned the revoked c {time.monotonic() - start:.3f} s after the revocation")

    async def b_rotated() -> bool:
        return (await daemons.status(b))["key_id"] == revoked["key_id"]

    await until(b_rotated, "b to take the rotated key", timeout=20)
    assert before != revoked["key_id"]
    status = await daemons.status(b)
    assert (status["keyring"], status["roster"]) == (1, {"devices": 2, "revoked": 1})

    # a device that joins after the rotation gets the keyring too: it reads the old note
    d = await joined_home(daemons, b, "d")
    assert (await daemons.status(d))["key_id"] == revoked["key_id"]

    async def d_reads_the_old_note() -> bool:
        tail = (await aok(d.root, "tail", "--tag", "notes", "--json")).splitlines()
        return [json.loads(line).get("data") for line in tail] == ["before the rotation"]

    await until(d_reads_the_old_note, "d to read the note sealed before the rotation", 20)


async def test_key_rotate_keeps_every_record_readable(tmp_path: Path) -> None:
    """`peer key rotate` alone: new records use the new key, the old ones still open
    from the keyring, `peer verify` passes, `peer status` counts the keyring."""
    home = tmp_path / "solo"
    ok(home, "init", "--name", "solo")
    ok(home, "append", "--tag", "notes", "before")
    first = json.loads(ok(home, "status", "--json"))["key_id"]
    listed = json.loads(ok(home, "devices", "--json"))
    assert [(d["name"], d["role"], d["revoked"]) for d in listed["devices"]] == [
        ("solo", "device", False)
    ]
    assert (listed["refused_events"], listed["ignored_events"]) == (0, 0)
    for expected_ring in (1, 2):
        rotated = json.loads(ok(home, "key", "rotate", "--json"))
        assert rotated["keyring"] == expected_ring
    ok(home, "append", "--tag", "notes", "after")
    status = json.loads(ok(home, "status", "--json"))
    assert status["key_id"] == rotated["key_id"] != first
    assert (status["keyring"], status["roster"]) == (2, {"devices": 1, "revoked": 0})
    tail = [json.loads(line) for line in ok(home, "tail", "--tag", "notes").splitlines()]
    assert [entry["data"] for entry in tail] == ["before", "after"]
    assert "solo" in ok(home, "devices") and "keyring: 2 older key(s)" in ok(home, "status")
    ok(home, "verify")
    refused = peer(home, "devices", "revoke", "nobody")
    assert refused.returncode != 0 and "not a device of this roster" in refused.stderr
