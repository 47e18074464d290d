"""The merge rule (docs/protocol.md §14.3): `fold` turns any set of roster events into
one state, the same on every device whatever order they arrived in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from peer.roster.events import DEVICE, Add, Card, Event, Revoke, Rotate, card_is_proven


@dataclass(frozen=True, slots=True)
class Device:
    """A node of the roster as `peer devices` shows it."""

    node_id: bytes
    certificate: bytes  # DER
    name: str
    role: str
    added_by: bytes  # node id of the adder (its own for the root)
    added_at: int  # timestamp of the add
    host: bytes = b""  # from its card, once that arrived
    encryption_key: bytes = b""
    address: str = ""
    revoked_by: bytes = b""
    revoked_at: int = 0
    reason: str = ""

    @property
    def revoked(self) -> bool:
        return bool(self.revoked_by)


@dataclass(frozen=True, slots=True)
class Roster:
    """What a set of events says: the devices, who is revoked, the current key."""

    devices: dict[bytes, Device] = field(default_factory=dict)
    current: Event | None = None  # the winning rotation, None: the key from before
    needs_rotation: bool = False
    refused: int = 0  # events by nodes that are not members
    ignored: int = 0  # events of revoked nodes past what their revoker had seen
    cuts: dict[bytes, int] = field(default_factory=dict)  # revoked node -> its log's cut

    @property
    def members(self) -> dict[bytes, Device]:
        return {n: d for n, d in self.devices.items() if n not in self.cuts}

    @property
    def revoked(self) -> frozenset[bytes]:
        return frozenset(self.cuts)

    @property
    def key_id(self) -> bytes | None:
        body = None if self.current is None else self.current.body
        return body.key_id if isinstance(body, Rotate) else None

    def signature(self) -> tuple[object, ...]:
        """Everything that must be equal on two devices that hold the same events."""
        return (
            tuple(sorted((n, n in self.cuts, d.role) for n, d in self.devices.items())),
            tuple(sorted(self.cuts.items())),
            self.current.hash if self.current else None,
            self.needs_rotation,
        )


def fold(events: Iterable[Event], root: bytes) -> Roster:
    """The roster as seen from the node `root` (this device's node id)."""
    ordered = sorted(events, key=lambda e: e.order)
    cards = _cards(ordered)
    node_of = _node_of_host(cards)
    stray: set[bytes] = set()  # authors whose events counted, but who are not reached
    for _ in range(len(ordered) + 1):
        decided = _Decision(ordered, node_of, root, stray).run()
        counting = [e for n, e in enumerate(ordered) if decided[n]]
        reach = _reach(counting, node_of, root)
        new = {node_of[e.host] for e in counting} - reach
        if not new:
            break
        stray |= new  # decide again without them: what they said counts for nothing
    accepted = counting
    cuts: dict[bytes, int] = {}
    for event in accepted:
        if isinstance(event.body, Revoke):
            target, seen = event.body.node_id, event.body.seen
            cuts[target] = min(cuts.get(target, seen), seen)
    return _state(ordered, cards, reach, accepted, cuts)


class _Decision:
    """Which events count (docs/protocol.md §14.3).

    An event counts when its author is reached from the root through adds that count,
    and no revocation of its author that counts had seen less of the author's log than
    the event's position. It does not count when its author cannot be reached through
    adds that might count, or such a revocation counts. What that leaves open (events
    that wait on each other: two devices revoking each other, neither having seen the
    other's) is decided among the undecided revocations that wait only on each other
    (a cycle that waits on nothing else), whose authors might be reached: the earliest
    counts, the revocations of its author that it waits on do not, and the rest follows.
    Earliest: by the later of its timestamp and the first add of its author by another
    node, then (timestamp, hash).
    """

    def __init__(
        self,
        events: list[Event],
        node_of: dict[bytes, bytes],
        root: bytes,
        stray: set[bytes] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.events, self.node_of, self.root = events, node_of, root
        self.status: dict[int, bool] = {}
        self.revokes_of: dict[bytes, list[int]] = {}
        for n, event in enumerate(events):
            if isinstance(event.body, Revoke):
                self.revokes_of.setdefault(event.body.node_id, []).append(n)
            if event.host not in node_of or node_of[event.host] in stray:
                self.status[n] = False  # no proven card (no member wrote it), or stray
        # When a node was first added by another: what it wrote before cannot win a tie
        self.joined: dict[bytes, int] = {}
        for event in events:
            body, author = event.body, node_of.get(event.host)
            if isinstance(body, Add) and author is not None and body.node_id != author:
                self.joined.setdefault(body.node_id, event.timestamp)

    def run(self) -> dict[int, bool]:
        for _ in range(len(self.events) + 1):
            self._settle()
            open_ = [n for n in range(len(self.events)) if n not in self.status]
            if not open_:
                break
            reached = self._reach(only_counting=False)
            pickable = [
                n
                for n in open_
                if isinstance(self.events[n].body, Revoke)
                and self.node_of[self.events[n].host] in reached
            ]
            tied = self._tied(pickable)
            if not tied:
                self.status.update(dict.fromkeys(open_, False))
                break
            pick = min(tied, key=self._effective)
            self.status[pick] = True
            for blocker in self._blockers(pick):  # what it wins over does not count
                self.status.setdefault(blocker, False)
        return self.status

    def _effective(self, n: int) -> tuple[int, int]:
        """When an event took effect: not before another node first added its author."""
        event = self.events[n]
        return (max(event.timestamp, self.joined.get(self.node_of[event.host], 0)), n)

    def _blockers(self, n: int) -> list[int]:
        """The revocations of the event's author that had seen less than its position
        and came before it in (timestamp, hash): it was written after them, unseen."""
        event = self.events[n]
        author = self.node_of[event.host]
        return [
            r
            for r in self.revokes_of.get(author, [])
            if _seen(self.events[r]) <= event.idx and r < n  # events are in (ts, hash) order
        ]

    def _tied(self, revokes: list[int]) -> list[int]:
        """The undecided revocations that wait only on each other: each of them waits
        (through undecided revocations) on nothing that does not wait back on it."""
        undecided = set(revokes)
        waits = {n: [b for b in self._blockers(n) if b in undecided] for n in revokes}

        def closure(n: int) -> set[int]:
            seen, todo = {n}, [n]
            while todo:
                for m in waits.get(todo.pop(), []):
                    if m not in seen:
                        seen.add(m)
                        todo.append(m)
            return seen

        reach = {n: closure(n) for n in revokes}
        return [n for n in revokes if all(n in reach[m] for m in reach[n])]

    def _settle(self) -> None:
        for _ in range(len(self.events) + 1):
            maybe = self._reach(only_counting=False)
            changed = False
            for n, event in enumerate(self.events):
                if n in self.status:
                    continue
                author = self.node_of[event.host]
                blockers = [self.status.get(r) for r in self._blockers(n)]
                if author not in maybe or True in blockers:
                    self.status[n], changed = False, True
                    if isinstance(event.body, Add):  # the nodes it reached may be no more
                        maybe = self._reach(only_counting=False)
                elif all(b is False for b in blockers):
                    self.status[n], changed = True, True
            if not changed:
                return

    def _reach(self, only_counting: bool) -> set[bytes]:
        events = [
            e
            for n, e in enumerate(self.events)
            if self.status.get(n, None if not only_counting else False) is not False
        ]
        return _reach(events, self.node_of, self.root)


def _seen(event: Event) -> int:
    return event.body.seen if isinstance(event.body, Revoke) else 0


def _cards(events: Sequence[Event]) -> dict[bytes, tuple[Event, Card]]:
    """Each node's newest proven card (greatest timestamp, hash)."""
    best: dict[bytes, tuple[Event, Card]] = {}
    for event in events:
        body = event.body
        if isinstance(body, Card) and card_is_proven(body, event.host):
            node = body.node_id
            if node not in best or best[node][0].order < event.order:
                best[node] = (event, body)
    return best


def _node_of_host(cards: dict[bytes, tuple[Event, Card]]) -> dict[bytes, bytes]:
    return {event.host: node for node, (event, _) in sorted(cards.items())}


def _reach(events: Sequence[Event], node_of: dict[bytes, bytes], root: bytes) -> set[bytes]:
    """The nodes reached from the root through pairs of adds among `events`: X and Y
    are linked when each added the other, as both ends of a join do. Links go both
    ways, so every member reaches the same nodes."""
    adds: dict[bytes, set[bytes]] = {}
    for event in events:
        author = node_of.get(event.host)
        if author is not None and isinstance(event.body, Add):
            adds.setdefault(author, set()).add(event.body.node_id)
    reach, todo = {root}, [root]
    while todo:
        node = todo.pop()
        for added in adds.get(node, set()):
            if added not in reach and node in adds.get(added, set()):
                reach.add(added)
                todo.append(added)
    return reach


def _state(
    events: Sequence[Event],
    cards: dict[bytes, tuple[Event, Card]],
    reach: set[bytes],
    accepted: list[Event],
    cuts: dict[bytes, int],
) -> Roster:
    node_of = _node_of_host(cards)
    devices: dict[bytes, Device] = {}
    revokes: dict[bytes, Event] = {}
    for event in accepted:  # in (timestamp, hash) order: the first add names the device
        body, author = event.body, node_of[event.host]
        if isinstance(body, Add) and body.node_id not in devices and body.node_id in reach:
            devices[body.node_id] = Device(
                body.node_id, body.certificate, body.name, body.role, author, event.timestamp
            )
    for event in accepted:  # the first revoke of each, for show
        body = event.body
        if isinstance(body, Revoke) and body.node_id not in revokes:
            revokes[body.node_id] = event
    for node, device in list(devices.items()):
        devices[node] = _with_card(device, cards.get(node), revokes.get(node), node_of)
    current, needs = _current_key(accepted, devices, revokes, node_of)
    refused = sum(1 for e in events if node_of.get(e.host) not in reach)
    ignored = sum(
        1
        for e in events
        if node_of.get(e.host) in reach and e.idx >= cuts.get(node_of[e.host], 2**64)
    )
    return Roster(devices, current, needs, refused, ignored, cuts)


def _with_card(
    device: Device,
    card: tuple[Event, Card] | None,
    revoke: Event | None,
    node_of: dict[bytes, bytes],
) -> Device:
    fields: dict[str, object] = {}
    if card is not None:
        event, body = card
        fields.update(
            host=event.host,
            encryption_key=body.encryption_key,
            address=body.address,
            name=device.name or body.name,
            role=body.role if device.role == DEVICE else device.role,  # a card never upgrades
        )
    if revoke is not None and isinstance(revoke.body, Revoke):
        fields.update(
            revoked_by=node_of[revoke.host], revoked_at=revoke.timestamp, reason=revoke.body.reason
        )
    return dataclasses.replace(device, **fields)  # type: ignore[arg-type]


def _current_key(
    accepted: list[Event],
    devices: dict[bytes, Device],
    revokes: dict[bytes, Event],
    node_of: dict[bytes, bytes],
) -> tuple[Event | None, bool]:
    """The winning rotation and whether a new one is needed (docs/protocol.md §14.3)."""
    revoked = set(revokes)
    last_revoke = max((e.order for e in revokes.values()), default=None)
    current = None
    for event in accepted:
        body = event.body
        author = devices.get(node_of[event.host])
        if not isinstance(body, Rotate) or author is None or author.role != DEVICE:
            continue
        if body.recipients & revoked or (last_revoke is not None and event.order < last_revoke):
            continue
        current = event  # accepted is in (timestamp, hash) order: the last one wins
    holders = set() if current is None else _holders(current, accepted)
    keyed = {
        n for n, d in devices.items() if not d.revoked and d.role == DEVICE and d.encryption_key
    }
    if current is None:
        return None, bool(revoked) and bool(keyed)
    return current, not keyed <= holders


def _holders(current: Event, accepted: list[Event]) -> set[bytes]:
    """Who holds the current key: its recipients, and the nodes handed it at pairing."""
    body = current.body
    assert isinstance(body, Rotate)
    held = set(body.recipients)
    for event in accepted:
        if isinstance(event.body, Add) and event.body.key_id == body.key_id:
            held.add(event.body.node_id)
    return held
