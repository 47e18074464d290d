"""`peer status` as typed values: the local API carries them as messages that decode to
the same values, and the JSON document is the one `peer status --json` has always had."""

from __future__ import annotations

import dataclasses
import time

from peer.cli.render import status_lines
from peer.codec.local import decode_status_response, encode_status_response
from peer.records import LogKey
from peer.status import (
    DaemonStatus,
    Discovered,
    ForkStatus,
    LinkState,
    LogStatus,
    NodeStatus,
    PeerStatus,
    ViewsStatus,
)

LOG = LogKey(bytes(range(16)), "kv")
OWN = LogKey(bytes(16), "history")


def a_status(live: bool) -> NodeStatus:
    link = LinkState(
        b"p" * 32,
        "laptop",
        "127.0.0.1:7417",
        connected=True,
        live=True,
        last_sync=1_700_000_000.5,
        last_error=None,
        failures=2,
        retry_at=time.time() + 30,
        pulled=10,
        pushed=3,
        received_live=7,
        pushes_left_to_peer=1,
        remote_heads={LOG: 12},
        own_log_alarms=1,
        own_log_behind={OWN: (5, 9)},
    )
    daemon = DaemonStatus(
        4242,
        "127.0.0.1:7417",
        True,
        True,
        "on",
        (Discovered(b"d" * 32, "10.0.0.2:7417", "nas", False),),
        12.5,
    )
    return NodeStatus(
        b"n" * 32,
        bytes(16),
        "desk",
        None,
        (LogStatus(LOG, 12, b"h" * 32), LogStatus(OWN, 9, b"o" * 32, frozen=True)),
        (PeerStatus(b"p" * 32, "laptop", "127.0.0.1:7417", True, link if live else None),),
        ViewsStatus(21, 1, 2, 3),
        (ForkStatus(OWN, 4, b"f" * 32, 2, 1_700_000_000_000_000_000),),
        daemon if live else None,
    )


def test_a_daemon_status_crosses_the_local_api_unchanged() -> None:
    status = a_status(live=True)
    assert decode_status_response(encode_status_response(status)) == status


def test_a_store_status_crosses_it_too() -> None:
    status = a_status(live=False)
    assert decode_status_response(encode_status_response(status)) == status


def test_the_json_document_keeps_its_shape() -> None:
    stored = a_status(live=False).as_json()
    assert stored["daemon"] is None and stored["key_id"] is None
    assert "link" not in stored["peers"][0] and "peers" not in stored["logs"][0]
    assert stored["logs"][1] == {
        "host": OWN.host.hex(),
        "tag": "history",
        "next_idx": 9,
        "head": (b"o" * 32).hex(),
        "frozen": True,
    }
    live = a_status(live=True).as_json()
    peer_id = live["peers"][0]["node_id"]
    assert live["logs"][0]["peers"] == {peer_id: 12}
    link = live["peers"][0]["link"]
    assert 0 < link["retry_in"] <= 30
    assert link["own_log_behind"] == [
        {"host": OWN.host.hex(), "tag": "history", "ours": 5, "theirs": 9}
    ]
    assert "restored from a backup" in link["own_log_warning"]
    assert live["daemon"]["discovered"][0]["pinned"] is False


def test_a_link_counts_the_copies_it_received_and_how_many_were_held() -> None:
    link = LinkState(b"p" * 32, "laptop", "127.0.0.1:7417", connected=True)
    assert "copies" not in peer_line(link)  # nothing received yet: nothing said
    link.took(received=10, duplicates=0)  # a round pulled 10 new records
    link.took(received=5, duplicates=4)  # a live message of 5, 4 held already
    shown = link.as_json()
    assert (shown["received"], shown["duplicates"]) == (15, 4)
    assert peer_line(link).endswith(": connected; never synced; copies received 15, duplicates 4")


def peer_line(link: LinkState) -> str:
    """The line `peer status` prints for the one peer of a daemon with this link."""
    peer = PeerStatus(link.node_id, link.name, link.address, True, link)
    status = dataclasses.replace(a_status(live=True), peers=(peer,))
    (line,) = [text for text in status_lines(status.as_json()) if link.name in text]
    return line
