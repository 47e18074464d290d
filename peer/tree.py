"""One upstream per log: which neighbour feeds this node each log, so that a record
crosses each node about once (epidemic broadcast trees, as in Plumtree and SSB).

Receiver-driven: over `Follow` (docs/protocol.md §7.5) a node sends a follower its own
logs' records and, for every other log, only notes of its heads. The follower decides
the rest, here:

- a note ahead of what it holds, for a log nobody feeds it: **graft** that log from the
  neighbour that noted it (it sends the records from what we hold, live from then on);
- records that were all duplicates, from a neighbour that is not this log's upstream:
  **prune** it for that log (notes only from then on). The author's own node is the
  best feeder of its logs, so a duplicate from it prunes the other feeder instead;
- a log whose noted heads stay ahead of what it holds for the graft wait (its upstream is
  slow, partitioned or gone without a word): graft it from the neighbour noting most.
  The wait is `sync.graft_after` (1 s): long enough for a feeder that is only a hop
  behind the noter, since each switch costs a copy of what the old feeder has in
  flight;
- a neighbour's link going down: its logs are grafted from whoever noted them.

The tree only decides; the mesh sends what it returns. Periodic sync rounds stay the
safety net for anything a lost note would leave behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from peer.records import LogKey

GRAFT_AFTER_S = 1.0  # a fed log noted ahead of us this long is grafted (the default)


@dataclass(frozen=True, slots=True)
class Graft:
    """Ask `peer` to feed `log` from idx `have` on."""

    peer: bytes
    log: LogKey
    have: int


@dataclass(frozen=True, slots=True)
class Prune:
    """Ask `peer` for notes only of `log`."""

    peer: bytes
    log: LogKey


Action = Graft | Prune


@dataclass
class _Neighbour:
    host: bytes = b""  # its host id: it feeds us that host's logs by default
    noted: dict[LogKey, int] = field(default_factory=dict)  # its latest head per log
    grafted: set[LogKey] = field(default_factory=set)  # logs we asked it to feed


class Tree:
    """The upstream of each log and what each neighbour noted; decisions, no I/O."""

    def __init__(
        self,
        held: Mapping[LogKey, int],
        own_host: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        graft_after_s: float = GRAFT_AFTER_S,
    ) -> None:
        self.held = dict(held)  # next_idx of each log this node holds
        self.own_host = own_host
        self.clock = clock
        self.graft_after_s = graft_after_s  # how long a log may lag a note (`sync.graft_after`)
        self.upstream: dict[LogKey, bytes] = {}
        self._neighbours: dict[bytes, _Neighbour] = {}
        self._behind: dict[LogKey, float] = {}  # since when a noted head is ahead of us

    # -- what happened ------------------------------------------------------------------

    def up(self, peer: bytes) -> None:
        """A Follow stream to `peer` opened: it feeds us its own logs by default."""
        self._neighbours[peer] = _Neighbour()

    def met(self, peer: bytes, host: bytes) -> None:
        """`peer` is the node of `host`: it feeds us that host's logs unasked."""
        neighbour = self._neighbours.get(peer)
        if neighbour is not None:
            neighbour.host = host

    def down(self, peer: bytes) -> list[Action]:
        """The stream to `peer` ended: graft its logs from whoever noted them."""
        gone = self._neighbours.pop(peer, None)
        orphans = [log for log, feeder in self.upstream.items() if feeder == peer]
        for log in orphans:
            del self.upstream[log]
        if gone is None:
            return []
        return [a for log in orphans for a in self._graft_best(log, exclude=peer)]

    def advanced(self, heads: Mapping[LogKey, int]) -> None:
        """This node now holds `heads` (next_idx per log), by any route."""
        held = self.held
        for log, next_idx in heads.items():
            if next_idx > held.get(log, 0):
                held[log] = next_idx

    def received(self, peer: bytes, log: LogKey, added: int, duplicates: int) -> list[Action]:
        """Records of `log` arrived from `peer`: `added` new, `duplicates` held already."""
        neighbour = self._neighbours.get(peer)
        if neighbour is None:
            return []
        fed_by_author = neighbour.host == log.host
        current = self.upstream.get(log)
        if added:
            self._behind.pop(log, None)
        if current is None or current == peer or not (added or duplicates):
            self.upstream[log] = peer
            return []
        if fed_by_author:  # the author's node feeds its logs best: the other one goes
            self.upstream[log] = peer
            return self._prune(current, log)
        if added:  # `peer` was first this time; the upstream's copies will prune it
            self.upstream[log] = peer
            return []
        return self._prune(peer, log)

    def noted(self, peer: bytes, heads: Mapping[LogKey, int]) -> list[Action]:
        """`peer` holds `heads`: graft each log it is ahead on that nobody feeds us."""
        neighbour = self._neighbours.get(peer)
        if neighbour is None:
            return []
        actions: list[Action] = []
        now = self.clock()
        for log, next_idx in heads.items():
            if next_idx > neighbour.noted.get(log, 0):
                neighbour.noted[log] = next_idx
            if next_idx <= self.held.get(log, 0) or log.host == self.own_host:
                continue
            if log not in self.upstream:
                author = self._author(log.host)
                if author is None or author == peer:
                    actions += self._graft(peer, log)
                    continue
                self.upstream[log] = author  # it sends its own logs anyway: give it time
            self._behind.setdefault(log, now)
        return actions

    def tick(self) -> list[Action]:
        """Graft logs whose upstream has left us behind a noted head for the graft wait."""
        now = self.clock()
        actions: list[Action] = []
        for log, since in list(self._behind.items()):
            if self.held.get(log, 0) >= self._best_noted(log)[1]:
                del self._behind[log]
            elif now - since >= self.graft_after_s:
                del self._behind[log]
                current = self.upstream.pop(log, None)
                if current is not None:
                    actions += self._prune(current, log)
                actions += self._graft_best(log, exclude=current)
        return actions

    # -- what to ask --------------------------------------------------------------------

    def feeders(self) -> dict[bytes, list[LogKey]]:
        """The logs each neighbour feeds us (for `peer status`)."""
        fed: dict[bytes, list[LogKey]] = {}
        for log, peer in self.upstream.items():
            fed.setdefault(peer, []).append(log)
        return fed

    def _author(self, host: bytes) -> bytes | None:
        """The neighbour that is `host`'s own node, if one is connected."""
        return next((p for p, n in self._neighbours.items() if n.host == host), None)

    def _graft(self, peer: bytes, log: LogKey) -> list[Action]:
        self.upstream[log] = peer
        self._neighbours[peer].grafted.add(log)
        return [Graft(peer, log, self.held.get(log, 0))]

    def _prune(self, peer: bytes, log: LogKey) -> list[Action]:
        neighbour = self._neighbours.get(peer)
        if neighbour is not None:
            neighbour.grafted.discard(log)
        return [Prune(peer, log)]

    def _graft_best(self, log: LogKey, exclude: bytes | None) -> list[Action]:
        peer, head = self._best_noted(log, exclude)
        if peer is None or head <= self.held.get(log, 0):
            return []
        return self._graft(peer, log)

    def _best_noted(self, log: LogKey, exclude: bytes | None = None) -> tuple[bytes | None, int]:
        best: tuple[bytes | None, int] = (None, 0)
        for peer, neighbour in self._neighbours.items():
            head = neighbour.noted.get(log, 0)
            if peer != exclude and head > best[1]:
                best = (peer, head)
        return best


def heads_of(stored: Iterable[tuple[LogKey, int]]) -> dict[LogKey, int]:
    """next_idx per log from (log, idx) pairs of stored records."""
    heads: dict[LogKey, int] = {}
    for log, idx in stored:
        if idx + 1 > heads.get(log, 0):
            heads[log] = idx + 1
    return heads
