"""Pin by id, anywhere (issue 15): a node that pinned an id whose certificate it never
saw admits that node at its first call, with no address, no LAN and no pairing code.
The caller introduces itself on the pairing port (docs/protocol.md §1.2); anything but
a certificate whose SHA-256 is an id pinned without one gets the one fixed refusal.
"""

from __future__ import annotations

import json
import time

import pytest

from peer.client import PairingClient
from peer.errors import PeerRefused
from peer.identity import fetch_certificate
from peer.introduce import pairing_address_of
from tests.cli import peer
from tests.daemons import Daemons, aok, pin, until

pytestmark = pytest.mark.asyncio


async def test_a_pins_b_by_id_alone_then_b_syncs_to_a(daemons: Daemons) -> None:
    """A: `peers add B-ID`; B: `peers add A-ID ADDR`; B: `peer sync`. A has no address
    for B, and loopback means no discovery: B's introduction is what lets it in."""
    a, b = daemons.homes("a", "b")
    daemons.start(a)
    await aok(a.root, "peers", "add", b.node_id, "--name", "b")
    await aok(a.root, "append", "--tag", "notes", "from a")
    await aok(b.root, "append", "--tag", "notes", "from b")
    added = json.loads(await aok(b.root, "peers", "add", a.node_id, a.address, "--json"))
    assert added["certificate"] and added["introduced"]
    summary = json.loads(await aok(b.root, "sync", "--json"))["peers"][0]
    assert summary["error"] is None and (summary["pulled"], summary["pushed"]) == (1, 1)
    pins = json.loads(await aok(a.root, "peers", "list", "--json"))["peers"]
    assert [(p["name"], p["address"], p["certificate"]) for p in pins] == [("b", "", True)]


async def test_the_sync_introduces_when_the_pin_came_after(daemons: Daemons) -> None:
    """B pinned A first (its introduction was refused: A did not know B yet); A pins B
    by id later; B's next `peer sync` is refused at the handshake, introduces B and
    succeeds."""
    a, b = daemons.homes("a", "b")
    daemons.start(a)
    added = json.loads(await aok(b.root, "peers", "add", a.node_id, a.address, "--json"))
    assert added["certificate"] and not added["introduced"]
    refused = peer(b.root, "sync", "--json")
    assert refused.returncode != 0
    await aok(a.root, "peers", "add", b.node_id)
    summary = json.loads(await aok(b.root, "sync", "--json"))["peers"][0]
    assert summary["error"] is None, summary


async def test_anything_else_gets_the_one_fixed_refusal(daemons: Daemons) -> None:
    a, b, c = daemons.homes("a", "b", "c")
    daemons.start(a)
    await aok(a.root, "peers", "add", b.node_id)
    served = await fetch_certificate(a.address, a.node_id_bytes)
    offers = {
        "c (not pinned)": (c.root / "tls.crt").read_bytes(),
        "not a certificate": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "a's own": served,
    }
    answers = {}
    async with PairingClient(pairing_address_of(a.address), served) as pairing:
        for what, certificate in offers.items():
            with pytest.raises(PeerRefused) as refused:
                await pairing.introduce(certificate)
            answers[what] = str(refused.value)
        await pairing.introduce((b.root / "tls.crt").read_bytes())  # anyone may carry it
        await pairing.introduce((b.root / "tls.crt").read_bytes())  # and again: the same
    fixed = f"{pairing_address_of(a.address)}: this node does not wait for that certificate"
    assert set(answers.values()) == {fixed}, answers
    pins = json.loads(await aok(a.root, "peers", "list", "--json"))["peers"]
    assert [(p["node_id"], p["certificate"]) for p in pins] == [(b.node_id, True)]


async def test_a_daemon_whose_link_is_refused_introduces_itself(daemons: Daemons) -> None:
    """b's daemon pins a with its address (written to the store, so no command
    introduced b); a pins b by id alone. b's link is refused at the handshake, so the
    daemon introduces b after that failure, and the link goes live with no one acting."""
    a, b = daemons.homes("a", "b")
    await aok(a.root, "peers", "add", b.node_id)
    pin(b, a, certificates=True)
    daemons.start(a, b)
    start = time.monotonic()
    await until(lambda: daemons.linked(b, a), "b's link to a to go live", 30)
    print(
        f"b's refused link introduced b and went live {time.monotonic() - start:.2f} s after start"
    )
    pins = json.loads(await aok(a.root, "peers", "list", "--json"))["peers"]
    assert [(p["node_id"], p["certificate"]) for p in pins] == [(b.node_id, True)]
