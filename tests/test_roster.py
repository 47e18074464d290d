"""The roster's merge rule (peer.roster.fold): the same events give the same roster.

A simulation of devices that pair, revoke, rotate and sync in partitions, with an
outsider forging events and a revoked device writing on: after every device holds
every event, every member folds the same roster and key, and what the forger and the
revoked device wrote changes nothing. One concrete example first.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.crypto import (
    Author,
    EncryptionKey,
    SigningKey,
    SyncKey,
    generate_tls_identity,
    open_record,
    record_key_id,
    unwrap_sync_key,
    wrap_sync_key,
)
from peer.errors import DecryptionFailed, ProtocolError, WrongKey
from peer.identity import node_id_of
from peer.records import Head
from peer.roster import (
    DEVICE,
    RELAY,
    Add,
    Card,
    Event,
    Revoke,
    Rotate,
    decode,
    encode,
    fold,
    new_card,
)

WORLD = 6  # five devices and one outsider, made once (TLS keys take a few ms each)
_TLS = [generate_tls_identity() for _ in range(WORLD)]
_HOSTS = [SigningKey.generate() for _ in range(WORLD)]


@dataclass
class Sim:
    """Devices 0..n-1, each with its own roster log and what it holds of the others'."""

    logs: dict[int, list[Event]] = field(default_factory=dict)
    held: dict[int, dict[int, int]] = field(default_factory=dict)  # device -> author -> n
    clock: dict[int, int] = field(default_factory=dict)
    step: int = 0
    written_at: dict[tuple[bytes, int], int] = field(default_factory=dict)  # event -> step
    revokes: list[tuple[int, int, int]] = field(default_factory=list)  # step, by, target
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def node(self, d: int) -> bytes:
        return node_id_of(_TLS[d][1])

    def events_of(self, d: int) -> list[Event]:
        return [e for a, n in self.held.get(d, {}).items() for e in self.logs.get(a, [])[:n]]

    def write(self, d: int, body: Card | Add | Revoke | Rotate) -> None:
        seen = max((e.timestamp for e in self.events_of(d)), default=0)
        wall = self.step * 1000  # a hybrid logical clock: the wall clock, or past it
        self.clock[d] = max(self.clock.get(d, 0), seen, wall) + 1
        log = self.logs.setdefault(d, [])
        digest = hashlib.sha256(b"%d" % next(self.counter)).digest()
        event = Event(_HOSTS[d].host, len(log), self.clock[d], digest, body)
        log.append(event)
        self.held.setdefault(d, {})[d] = len(log)
        self.written_at[event.host, event.idx] = self.step

    def card(self, d: int, role: str = DEVICE) -> Card:
        key, cert = _TLS[d]
        enc = hashlib.sha256(b"enc%d" % d).digest() if role == DEVICE else b""
        return new_card(key, cert, _HOSTS[d].public_key, enc, role, f"d{d}")

    def add_of(self, d: int, role: str = DEVICE) -> Add:
        return Add(_der(_TLS[d][1]), role, f"d{d}")

    def genesis(self, d: int) -> None:
        self.write(d, self.card(d))
        self.write(d, self.add_of(d))

    def join(self, inviter: int, joiner: int, role: str = DEVICE) -> None:
        """Both sides write an add, as `peer join` does; they are in touch."""
        self.write(joiner, self.card(joiner, role))
        self.write(joiner, self.add_of(joiner, role))
        self.write(joiner, self.add_of(inviter))
        self.write(inviter, self.add_of(joiner, role))
        self.sync(inviter, joiner)

    def sync(self, a: int, b: int) -> None:
        """Logs move as prefixes, as sync moves them."""
        ha, hb = self.held.setdefault(a, {}), self.held.setdefault(b, {})
        for author in set(ha) | set(hb):
            ha[author] = hb[author] = max(ha.get(author, 0), hb.get(author, 0))

    def revoke(self, by: int, target: int) -> None:
        seen = self.held.get(by, {}).get(target, 0)
        self.write(by, Revoke(self.node(target), seen, "lost"))
        self.revokes.append((self.step, by, target))

    def late(self, members: set[bytes]) -> set[tuple[bytes, int]]:
        """Events a device wrote after a member revoked it: they must count for nothing."""
        first: dict[int, int] = {}
        for step, by, target in self.revokes:
            if self.node(by) in members:
                first[target] = min(first.get(target, step), step)
        return {
            (host, idx)
            for (host, idx), step in self.written_at.items()
            for target, since in first.items()
            if host == _HOSTS[target].host and step > since
        }

    def rotate(self, by: int) -> None:
        roster = fold(self.events_of(by), self.node(by))
        keyed = [n for n, dev in roster.members.items() if dev.role == DEVICE]
        key_id = hashlib.sha256(b"key%d" % next(self.counter)).digest()[:8]
        self.write(by, Rotate(key_id, bytes(32), tuple((n, bytes(48)) for n in sorted(keyed))))

    def everyone_syncs(self, devices: range) -> None:
        for a, b in itertools.product(devices, repeat=2):
            self.sync(a, b)


def _der(pem: bytes) -> bytes:
    import ssl

    return ssl.PEM_cert_to_DER_cert(pem.decode())


def test_a_concrete_lost_laptop() -> None:
    """Five devices paired in a chain; device 1 revokes device 4 and rotates while
    device 2 is away; once all have synced, all agree: 4 is revoked, one key."""
    sim = Sim()
    sim.genesis(0)
    for joiner in range(1, 5):
        sim.join(joiner - 1, joiner)
    sim.everyone_syncs(range(5))
    sim.revoke(1, 4)
    sim.rotate(1)
    sim.step = 1
    sim.write(4, sim.add_of(5))  # the laptop, revoked, adds an outsider: ignored
    sim.everyone_syncs(range(5))
    rosters = [fold(sim.events_of(d), sim.node(d)) for d in range(4)]
    assert {r.signature() for r in rosters} == {rosters[0].signature()}
    roster = rosters[0]
    assert set(roster.members) == {sim.node(d) for d in range(4)}
    assert roster.revoked == {sim.node(4)}
    assert sim.node(5) not in roster.devices
    assert roster.key_id is not None and not roster.needs_rotation
    assert roster.devices[sim.node(4)].revoked_by == sim.node(1)
    assert roster.ignored == 1


def test_events_round_trip_and_bad_bytes_are_refused() -> None:
    sim = Sim()
    for body in (
        sim.card(0),
        sim.card(1, RELAY),
        sim.add_of(2),
        Revoke(sim.node(3), 7, "lost in a taxi"),
        Rotate(b"k" * 8, b"e" * 32, ((b"n" * 32, b"w" * 48),)),
    ):
        raw = encode(body)
        assert decode(raw) == body
        for cut in (len(raw) - 1, 16):
            with pytest.raises(ProtocolError):
                decode(raw[:cut])
        with pytest.raises(ProtocolError):
            decode(raw + b"\x00")


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["join", "sync", "revoke", "rotate", "forge", "replay", "write"]),  # OPS
        st.integers(0, 4),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=200)
@given(steps=STEPS)
def test_any_order_and_partition_converges_to_one_roster_and_key(
    steps: list[tuple[str, int, int]],
) -> None:
    check_scenario(steps)


OPS = ("join", "sync", "revoke", "rotate", "forge", "replay", "write")


def check_scenario(steps: list[tuple[str, int, int]]) -> int:
    """Play `steps`, let every device hold every event, and check that the members
    agree and that forged, replayed and post-revocation events changed nothing (an
    AssertionError says what did not hold). Returns how many members agreed."""
    sim, joined = Sim(), [0]
    sim.genesis(0)
    for step, (op, x, y) in enumerate(steps, 1):
        sim.step = step
        _play(sim, joined, op, joined[x % len(joined)], y)
    everyone = range(WORLD)
    sim.everyone_syncs(everyone)
    _repair_key(sim, joined)
    devices = [*joined, OUTSIDER]
    rosters = {d: fold(sim.events_of(d), sim.node(d)) for d in devices}
    standing = [d for d in joined if sim.node(d) in rosters[d].members]  # by its own view
    if not standing:  # every device was revoked: nobody is left to agree
        return 0
    roster = rosters[standing[0]]
    members = [d for d in devices if sim.node(d) in roster.members]
    assert len({rosters[d].signature() for d in members}) == 1
    assert {sim.node(d) for d in members} == set(roster.members) & {sim.node(d) for d in devices}
    outsider_in = sim.node(OUTSIDER) in roster.members
    if outsider_in:  # only if a device of the roster added it, never by itself
        assert roster.devices[sim.node(OUTSIDER)].added_by != sim.node(OUTSIDER)
    assert not roster.revoked & set(roster.members)
    assert not roster.needs_rotation
    if roster.current is not None:
        assert isinstance(roster.current.body, Rotate)
        assert not roster.current.body.recipients & roster.revoked
    revoked_by_members = {sim.node(t) for _, by, t in sim.revokes if sim.node(by) in roster.members}
    assert revoked_by_members <= roster.revoked
    # what the outsider and the revoked devices wrote after their revocation: nothing
    late = sim.late(set(roster.members))
    honest = [
        e
        for e in sim.events_of(0)
        if (outsider_in or e.host != _HOSTS[OUTSIDER].host) and (e.host, e.idx) not in late
    ]
    for d in members:
        assert fold(honest, sim.node(d)).signature() == rosters[d].signature()
    return len(members)


OUTSIDER = 5


def _play(sim: Sim, joined: list[int], op: str, a: int, b: int) -> None:
    """One step: `a` is a device that joined, `b` any of the five."""
    outsider = OUTSIDER
    if op == "join" and b not in joined:
        sim.join(a, b, RELAY if b == 3 else DEVICE)
        joined.append(b)
    elif op == "sync" and b in joined:
        sim.sync(a, b)
    elif op == "revoke" and b in joined and a != b:
        sim.revoke(a, b)
    elif op == "rotate" and a != 3:
        sim.rotate(a)
    elif op == "forge":  # an outsider's card, adds and revokes, delivered to a
        if outsider not in sim.logs:
            sim.genesis(outsider)
        sim.write(outsider, sim.add_of(outsider))
        sim.write(outsider, Revoke(sim.node(a), 0, "forged"))
        sim.sync(outsider, a)
    elif op == "replay" and any(t == b for _, _, t in sim.revokes):  # a revoked b, added again
        sim.write(a, sim.add_of(b))
    elif op == "write" and any(t == b for _, _, t in sim.revokes):  # revoked, writes on
        sim.write(b, sim.add_of(outsider))
        sim.write(b, Revoke(sim.node(a), sim.held[b].get(a, 0), "revenge"))


def _repair_key(sim: Sim, joined: list[int]) -> None:
    """A member that sees a key to repair rotates (as the daemon does); all sync."""
    for _ in range(3):
        repairers = [
            d
            for d in joined
            if d != 3
            and (r := fold(sim.events_of(d), sim.node(d))).needs_rotation
            and sim.node(d) in r.members
        ]
        if not repairers:
            return
        for d in repairers:
            sim.rotate(d)
        sim.everyone_syncs(range(WORLD))


def test_a_rotated_key_opens_only_for_its_recipients() -> None:
    keep, lost = EncryptionKey.generate(), EncryptionKey.generate()
    new = SyncKey.generate()
    ephemeral, wrapped = wrap_sync_key(new, {b"k" * 32: keep.public_key})
    assert len(wrapped[b"k" * 32]) == 48
    assert unwrap_sync_key(keep, ephemeral, new.key_id, b"k" * 32, wrapped[b"k" * 32]) == new
    for who, node in ((lost, b"k" * 32), (keep, b"l" * 32)):  # another key, another node
        with pytest.raises(DecryptionFailed):
            unwrap_sync_key(who, ephemeral, new.key_id, node, wrapped[b"k" * 32])
    with pytest.raises(DecryptionFailed):  # a key id that is not the key's
        unwrap_sync_key(keep, ephemeral, b"x" * 8, b"k" * 32, wrapped[b"k" * 32])


def test_the_keyring_opens_records_of_every_key_it_holds() -> None:
    old, new = SyncKey.generate(), SyncKey.generate()
    author = Author(SigningKey.generate(), old)
    (before,) = author.write("notes", Head(0), [1], [b"before"])
    ring = old.rotated_to(new)
    assert ring.key_id == new.key_id and [k.key_id for k in ring.ring] == [new.key_id, old.key_id]
    (after,) = Author(author.signing, ring).write("notes", Head(1), [2], [b"after"])
    assert record_key_id(after) == new.key_id_text
    assert open_record(ring, before) == b"before" and open_record(ring, after) == b"after"
    with pytest.raises(WrongKey):  # what the revoked device holds: the old key only
        open_record(old, after)
