"""Counting the records that cross the `Remote` boundary (for tests/sim.py, and for
the daemons of bench/bench_mesh.py).

`FLOWS` says how each method of the Remote protocol moves records: returned to the
caller as a stream of batches (pull, subscribe), or taken from it (push). `flowing`
wraps one method accordingly, so a counter never depends on the mesh behind the calls;
a method the protocol gains (a follow stream, say) is counted by adding one line to
`FLOWS`. `CountingRemote` is the simulation's link: it counts into a `Traffic` and fails
while its `Wire` is down. A method it does not know is still forwarded, and named in
`Traffic.uncounted`, so that a count which misses it cannot pass unseen.
"""

from __future__ import annotations

import asyncio
import functools
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from peer.errors import PeerUnavailable
from peer.records import Record
from peer.remote import Batch, Remote

Log = tuple[bytes, str]  # (host, tag), cheaper than LogKey per record


# -- counting --------------------------------------------------


def batch_records(batch: Batch) -> Sequence[Record]:
    return batch[0]


@dataclass(frozen=True)
class Flow:
    """How one Remote method moves records: `receives`, it returns an async iterator
    of items coming to the caller; `sends`, its argument of that name (or position) is
    an async iterator of items going to the peer; `records`, the records in one item
    (a Batch's first half, unless said otherwise). Items pass through unchanged."""

    receives: bool = False
    sends: str | None = None
    position: int = 0
    records: Callable[[Any], Sequence[Record]] = batch_records


# Every method of the Remote protocol and how it moves records. A new one: one line.
FLOWS: dict[str, Flow] = {
    "get_index": Flow(),
    "pull": Flow(receives=True),
    "subscribe": Flow(receives=True),
    "push": Flow(sends="batches"),
    # a stream of Followed items (records, keys and notes) answering controls
    "follow": Flow(receives=True, records=lambda followed: followed.records),
}


def unlisted() -> set[str]:
    """Members of the Remote protocol that FLOWS does not say how to count."""
    members = {name for name in vars(Remote) if not name.startswith("_")}
    return members - set(FLOWS) - {"target"}


Items = AsyncIterator[Any]
Records = Callable[[Any], Sequence[Record]]
Counting = Callable[[Items, Records], Items]  # wraps a stream, counting each item's records


def flowing(
    method: Callable[..., Any], flow: Flow, sending: Counting, receiving: Counting
) -> Callable[..., Any]:
    """`method` with the items it sends passed through `sending` and those it
    returns through `receiving` (each given the stream and `flow.records`)."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if flow.sends is not None:
            if flow.sends in kwargs:
                kwargs[flow.sends] = sending(kwargs[flow.sends], flow.records)
            else:
                at = flow.position
                args = (*args[:at], sending(args[at], flow.records), *args[at + 1 :])
        result = method(*args, **kwargs)
        return receiving(result, flow.records) if flow.receives else result

    return call


class Wire:
    """The connection between two nodes. Down, calls over it fail as to a peer that
    is not there, and reads waiting on it fail at once (as a broken connection's)."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b
        self.cut = False  # cut on purpose (a partition)
        self.up = True  # not cut, and both ends serving
        self._reads: set[asyncio.Future[Any]] = set()

    def set(self, up: bool) -> None:
        self.up = up
        if not up:
            for read in list(self._reads):
                read.cancel()

    def check(self) -> None:
        if not self.up:
            raise self.unreachable()

    def unreachable(self) -> PeerUnavailable:
        return PeerUnavailable(f"sim nodes {self.a} and {self.b}: the link is down (simulated)")

    async def read(self, stream: Items) -> Any:
        """The next item of `stream`, or PeerUnavailable if the wire goes down first.
        The read runs in a task of its own, so that the wire going down cancels the
        read, never the reader (whose own cancellation stays its own)."""
        self.check()
        read = asyncio.ensure_future(anext(stream))
        self._reads.add(read)
        try:
            return await read
        except asyncio.CancelledError:
            reader = asyncio.current_task()
            if read.cancelled() and not self.up and not (reader and reader.cancelling()):
                raise self.unreachable() from None
            raise
        finally:
            self._reads.discard(read)


class CountingRemote:
    """A Remote (the link from `here` to `there`) that counts what moves through it
    into `traffic` and fails while its wire is down. Everything else is forwarded."""

    def __init__(self, inner: Remote, traffic: Traffic, here: int, there: int, wire: Wire) -> None:
        self._inner = inner
        self._traffic = traffic
        self._here, self._there = here, there
        self._wire = wire

    async def __aenter__(self) -> CountingRemote:
        await self._inner.__aenter__()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        found = getattr(self._inner, name)
        flow = FLOWS.get(name)
        if flow is None:
            if callable(found):
                self._traffic.uncounted.add(name)
            return found
        self._wire.check()
        return flowing(found, flow, self._sending, self._receiving)

    async def _sending(self, items: Items, records: Records) -> Items:
        async for item in items:
            self._wire.check()
            self._traffic.moved(self._here, self._there, records(item))
            yield item

    async def _receiving(self, stream: Items, records: Records) -> Items:
        try:
            while True:
                try:
                    item = await self._wire.read(stream)
                except StopAsyncIteration:
                    return
                self._traffic.moved(self._there, self._here, records(item))
                yield item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


# -- what moved -----------------------------------------------------------------------


class Traffic:
    """Records moved, per directed link and per receiver, and where each first arrived."""

    def __init__(self) -> None:
        self.hosts: dict[int, bytes] = {}  # node -> its author's host
        self.links: Counter[tuple[int, int]] = Counter()  # (sender, receiver) -> records
        self.received: Counter[tuple[int, str]] = Counter()  # (receiver, tag): not its own
        self.echoes: Counter[int] = Counter()  # receiver -> records of its own logs
        self.uncounted: set[str] = set()  # Remote methods used but not in FLOWS
        self._hops: dict[int, dict[Log, array[int]]] = {}  # node -> log -> 1 + hops by idx
        self._reached: Counter[tuple[Log, int]] = Counter()  # record -> nodes it reached
        self.watched: dict[tuple[Log, int], float] = {}  # record -> when written
        self.reached_all: dict[tuple[Log, int], float] = {}  # record -> when all had it
        self.audience = 0  # nodes that should get each record (present, not its author)
        self.last_moved = time.monotonic()  # when records last crossed a link

    def quiet(self, seconds: float) -> bool:
        """No record crossed any link for `seconds` (copies still in flight are done)."""
        return time.monotonic() - self.last_moved >= seconds

    def moved(self, sender: int, receiver: int, records: Sequence[Record]) -> None:
        self.links[sender, receiver] += len(records)
        if records:
            self.last_moved = time.monotonic()
        own = self.hosts[receiver]
        for record in records:
            if record.host == own:
                self.echoes[receiver] += 1
            else:
                self.received[receiver, record.tag] += 1
                self._first(sender, receiver, (record.host, record.tag), record.idx)

    def _first(self, sender: int, receiver: int, log: Log, idx: int) -> None:
        hops = self._hops.setdefault(receiver, {}).setdefault(log, array("H"))
        if len(hops) <= idx:
            hops.frombytes(bytes(hops.itemsize * (idx + 1 - len(hops))))
        if hops[idx]:
            return
        hops[idx] = min(self.hops_at(sender, log, idx) + 1, 65_534) + 1
        key = (log, idx)
        self._reached[key] += 1
        if key in self.watched and self._reached[key] >= self.audience:
            self.reached_all.setdefault(key, time.monotonic())

    def hops_at(self, node: int, log: Log, idx: int) -> int:
        """Links the first copy of a record to reach `node` crossed (0 at its author)."""
        if self.hosts[node] == log[0]:
            return 0
        hops = self._hops.get(node, {}).get(log)
        return hops[idx] - 1 if hops is not None and idx < len(hops) and hops[idx] else 0

    def hops(self) -> list[int]:
        """Every first arrival's hop count."""
        return [h - 1 for logs in self._hops.values() for a in logs.values() for h in a if h]

    def watch(self, records: Iterable[Record], written: float) -> None:
        """Note when each record was written, to know when every node had it."""
        for record in records:
            self.watched[(record.host, record.tag), record.idx] = written
