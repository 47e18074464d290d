"""Per-caller policy: request rate, and strikes that cut off a peer sending invalid data."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.client import ClientTls, PeerClient
from peer.crypto import Author, generate_tls_identity
from peer.errors import ForgeryError, LimitExceeded, ProtocolError, StoreError
from peer.identity import node_id_of
from peer.policy import CallerPolicy
from peer.records import Head, Record
from peer.service import start_server
from peer.store import TrustedPeer
from peer.trust import Credentials
from tests.conftest import new_author, open_store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_strikes_within_the_window_cut_a_caller_off_for_a_while() -> None:
    clock = FakeClock()
    policy = CallerPolicy(strikes_to_ban=3, window_s=10, ban_s=60, clock=clock)
    for _ in range(2):
        policy.note("mallory", ForgeryError("forged"))
    policy.admit("mallory")  # two strikes: still served
    policy.note("mallory", ForgeryError("forged"))
    with pytest.raises(LimitExceeded, match="invalid requests"):
        policy.admit("mallory")
    policy.admit("alice")  # others are not affected
    clock.now += 61
    policy.admit("mallory")  # the ban ends


def test_a_repeat_offender_is_cut_off_twice_as_long_each_time() -> None:
    clock = FakeClock()
    policy = CallerPolicy(strikes_to_ban=1, window_s=10, ban_s=60, clock=clock)
    for seconds in (60, 120, 240):
        policy.note("mallory", ForgeryError("forged"))
        clock.now += seconds - 1
        with pytest.raises(LimitExceeded, match="invalid requests"):
            policy.admit("mallory")
        clock.now += 2
        policy.admit("mallory")  # this ban has ended
    assert policy.bans == 3


def test_old_strikes_expire_and_honest_failures_are_not_offences() -> None:
    clock = FakeClock()
    policy = CallerPolicy(strikes_to_ban=3, window_s=10, clock=clock)
    for _ in range(2):
        policy.note("bob", ProtocolError("malformed"))
    clock.now += 11
    policy.note("bob", ProtocolError("malformed"))
    policy.note("bob", StoreError("disk full"))  # our failure, not theirs
    assert policy.strikes("bob") == 1
    assert not policy.banned("bob")


def test_the_request_rate_is_capped_per_caller() -> None:
    clock = FakeClock()
    policy = CallerPolicy(rate=10, burst=5, clock=clock)
    for _ in range(5):
        policy.admit("eager")
    with pytest.raises(LimitExceeded, match="per second"):
        policy.admit("eager")
    clock.now += 0.5
    policy.admit("eager")


def test_a_caller_that_keeps_calling_over_the_rate_is_cut_off() -> None:
    clock = FakeClock()
    policy = CallerPolicy(rate=10, burst=5, flood_to_ban=20, ban_s=60, clock=clock)
    for _ in range(5):
        policy.admit("flooder")
    for _ in range(19):
        with pytest.raises(LimitExceeded, match="per second"):
            policy.admit("flooder")
    assert not policy.banned("flooder")
    with pytest.raises(LimitExceeded, match="per second"):
        policy.admit("flooder")  # the 20th refusal in the window: cut off
    assert policy.banned("flooder") and policy.bans == 1
    clock.now += 1  # tokens again, but the ban holds
    with pytest.raises(LimitExceeded, match="over the rate limit from you: refused for"):
        policy.admit("flooder")
    policy.admit("honest")
    clock.now += 60
    policy.admit("flooder")


async def test_a_pinned_peer_that_keeps_sending_forgeries_is_cut_off(tmp_path: Path) -> None:
    server_key, server_cert = generate_tls_identity()
    client_key, client_cert = generate_tls_identity()
    store = await open_store(tmp_path / "server.db")
    await store.peers.add(TrustedPeer(node_id_of(client_cert), "mallory", "", client_cert))
    running = await start_server(
        store, "server", "127.0.0.1:0", credentials=Credentials(server_key, server_cert)
    )
    author = new_author()
    (good,) = author.write("t", Head(0), [1], [b"x"])
    forged = dataclasses.replace(good, payload=b"tampered")
    tls = ClientTls(Credentials(client_key, client_cert), server_cert)
    refusals = 0
    try:
        async with PeerClient(f"127.0.0.1:{running.port}", tls=tls) as peer:
            for attempt in range(8):
                try:
                    await peer.push(_one(forged, author))
                except ForgeryError:
                    pass
                except ProtocolError:
                    pass
                except LimitExceeded:
                    refusals += 1
                    assert attempt >= 5
            with pytest.raises(LimitExceeded, match="invalid requests"):
                await peer.get_index()  # even honest calls, for a while
        print(f"forged pushes before the cut-off: 5; refused afterwards: {refusals}")
        assert refusals == 3
        assert await store.index() == {}
    finally:
        await running.stop()
        await store.close()


async def _one(
    record: Record, author: Author
) -> AsyncIterator[tuple[list[Record], dict[bytes, bytes]]]:
    yield [record], {record.host: author.signing.public_key}
