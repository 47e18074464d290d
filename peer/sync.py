"""One sync session with a peer: fetch its index, pull what we lack, push what it lacks.

The engine moves ciphertext and never needs the sync key, so a node without the key
(a relay) syncs the same way. Each batch is committed on arrival, so an interrupted
session resumes from the stored heads and never re-sends what the other side stored.
Progress is reported through a callback; printing is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from peer.codec.wire import MAX_RANGES_PER_PULL, PROTOCOL_VERSION, RemoteIndex
from peer.errors import ProtocolError
from peer.inbound import Inbound
from peer.outbound import Outbound
from peer.records import LogKey, Range, Record, diff
from peer.remote import Batch, Remote
from peer.segment import runs_of
from peer.settings import DEFAULT_BATCH
from peer.store import Store

CLAIM_WAIT_S = 30.0  # longest wait for another session's pull of the same records

Progress = Callable[[int, int], None]


@dataclass
class SyncSummary:
    """What one session moved, in total and per log."""

    peer: str
    node_id: str = ""
    pulled: int = 0  # records received (new or held here already)
    pushed: int = 0
    duplicates: int = 0  # of those pulled, the records this node held already
    per_log: dict[LogKey, list[int]] = field(default_factory=dict)  # [pulled, pushed]
    diverged: list[LogKey] = field(default_factory=list)
    remote_heads: dict[LogKey, int] = field(default_factory=dict)  # next_idx held there
    # Logs of this node's own host that the peer holds more of: (ours, theirs) next_idx.
    # Pulled back all the same (they are signed with our key): that is how a restored
    # backup recovers. But it is an alarm: a backup, or a clone of this identity.
    own_log_behind: dict[LogKey, tuple[int, int]] = field(default_factory=dict)
    # The push was stopped (in part) by its caller: the peer was pulling from us itself.
    left_to_peer: bool = False

    def count(self, log: LogKey, pulled: int = 0, pushed: int = 0) -> None:
        entry = self.per_log.setdefault(log, [0, 0])
        entry[0] += pulled
        entry[1] += pushed
        self.pulled += pulled
        self.pushed += pushed
        if pushed:
            self.remote_heads[log] = self.remote_heads.get(log, 0) + pushed


async def sync_with(
    store: Store,
    remote: Remote,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    own_host: bytes | None = None,
) -> SyncSummary:
    """Bring `store` and the peer's store to the union of both, both ways. With
    `own_host` (this node's host id), logs of it held further there are reported."""
    session = await SyncSession.open(
        store, remote, batch=batch, progress=progress, own_host=own_host
    )
    await session.pull()
    await session.push()
    await session.check_served()
    return session.summary


class SyncSession:
    """One session with a peer: its index read once, the plan made from it, then the
    pull and the push, each through the node's one way in and one way out."""

    def __init__(
        self,
        store: Store,
        remote: Remote,
        index: RemoteIndex,
        summary: SyncSummary,
        plan: tuple[list[Range], list[Range]],
        batch: int = DEFAULT_BATCH,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.remote = remote
        self.index = index
        self.summary = summary
        self.pulls, self.pushes = plan
        self.batch = batch
        self.total = sum(len(r) for r in self.pulls) + sum(len(r) for r in self.pushes)
        self._progress = progress or (lambda done, total: None)

    @classmethod
    async def open(
        cls,
        store: Store,
        remote: Remote,
        *,
        batch: int = DEFAULT_BATCH,
        progress: Progress | None = None,
        own_host: bytes | None = None,
    ) -> SyncSession:
        """Read the peer's index and plan the session (nothing moves yet)."""
        index = await remote.get_index()
        if index.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"peer {remote.target} speaks protocol {index.protocol_version}, "
                f"this node speaks {PROTOCOL_VERSION}: upgrade the older one"
            )
        summary = SyncSummary(remote.target, index.node_id)
        summary.remote_heads = {log: head.next_idx for log, head in index.logs.items()}
        plan = await _plan(store, index, summary, own_host)
        return cls(store, remote, index, summary, plan, batch, progress)

    async def pull(self, claims: PullClaims | None = None) -> None:
        """Store each pulled batch; verify the next while the last one is being written.
        `claims`: the node's other sessions' pulls, waited for rather than repeated."""
        if not self.pulls:
            return
        claims = claims or PullClaims()
        inbound = Inbound(self.store, self.index.keys)
        try:
            for start in range(0, len(self.pulls), MAX_RANGES_PER_PULL):  # requests ≤ 4 MiB
                wanted = self.pulls[start : start + MAX_RANGES_PER_PULL]
                async with claims.pulling(wanted, self._still_missing) as ranges:
                    if ranges:
                        async for records, keys in self.remote.pull(ranges, self.batch):
                            self._pulled(await inbound.take(records, keys))
                        self._pulled(await inbound.flush())  # held before the claim ends
            self._pulled(await inbound.flush())
        finally:
            await inbound.close()
            self.summary.duplicates += inbound.duplicates

    async def _still_missing(self, ranges: list[Range]) -> list[Range]:
        """`ranges` less what arrived since the plan (the peer's own push, say, while
        both start a round at once): asked just before each pull request, so a record
        the peer already sent us does not cross again. A fork proof is always asked."""
        index = await self.store.index()
        trimmed = []
        for r in ranges:
            held = index[r.log].next_idx if r.log in index else 0
            if r.log in self.summary.diverged or held <= r.start:
                trimmed.append(r)
            elif held < r.end:
                trimmed.append(Range(r.host, r.tag, held, r.end))
        return trimmed

    async def push(
        self,
        stop: Callable[[], bool] | None = None,
        held: Callable[[], Mapping[LogKey, int]] | None = None,
    ) -> None:
        """Send what the peer lacks. `stop`, asked before each batch, ends the push
        early (a normal end of the stream): the mesh stops it while the peer pulls
        from this node by itself, which stores the same records anyway. `held`, asked
        before each batch too, says how far the peer holds each log meanwhile (what it
        pulled from us since the plan): a batch it holds all of is left out."""
        if not self.pushes:
            return
        if stop is not None and stop():
            self.summary.left_to_peer = True
            return
        await self.remote.push(self._outgoing(stop, held))

    async def check_served(self) -> None:
        """A peer that advertised more than it sent is withholding records (or froze
        the log meanwhile): an error, so that a daemon retries, and a user sees it."""
        if not self.pulls:
            return  # nothing was asked for (a no-op session reads no index again)
        index = await self.store.index()
        held = {r.log: index[r.log].next_idx if r.log in index else 0 for r in self.pulls}
        short = [r for r in self.pulls if held[r.log] < r.end]
        if short:
            first = short[0]
            raise ProtocolError(
                f"peer {self.remote.target} advertised log {first.log} up to idx "
                f"{first.end} but sent it only up to idx {held[first.log]} ({len(short)} "
                "log(s) short): records withheld, or the log was frozen there meanwhile"
            )

    async def _outgoing(
        self,
        stop: Callable[[], bool] | None,
        held: Callable[[], Mapping[LogKey, int]] | None,
    ) -> AsyncIterator[Batch]:
        outbound = Outbound(self.store, self.batch)
        batches = outbound.ranges(self.pushes)
        try:
            async for records, keys in batches:
                if stop is not None and stop():
                    self.summary.left_to_peer = True
                    return
                if held is not None and _all_held(records, held()):
                    self.summary.left_to_peer = True
                    continue
                yield records, keys
                for log, count in _per_log(records).items():
                    self.summary.count(log, pushed=count)
                self._tick()
        finally:
            await batches.aclose()

    def _pulled(self, counts: dict[LogKey, int]) -> None:
        if counts:
            for log, count in counts.items():
                self.summary.count(log, pulled=count)
            self._tick()

    def _tick(self) -> None:
        self._progress(self.summary.pulled + self.summary.pushed, self.total)


class PullClaims:
    """The ranges a node's sessions are pulling right now (the links of a mesh share
    one), so that two do not pull the same records from two peers at once: a node
    that joins or comes back to a mesh would take its backlog once from every
    neighbour. A session whose ranges another is pulling waits for that pull to end
    (at most CLAIM_WAIT_S: a stalled peer does not hold the others up), then pulls
    only what is still missing."""

    def __init__(self) -> None:
        self._pulling: dict[LogKey, list[tuple[int, int, asyncio.Event]]] = {}

    def _overlapping(self, ranges: Sequence[Range]) -> asyncio.Event | None:
        for r in ranges:
            for start, end, done in self._pulling.get(r.log, ()):
                if start < r.end and r.start < end:
                    return done
        return None

    @contextlib.asynccontextmanager
    async def pulling(
        self, ranges: list[Range], still_missing: Callable[[list[Range]], Awaitable[list[Range]]]
    ) -> AsyncIterator[list[Range]]:
        """Of `ranges`, those still missing once no other pull of them is under way
        (`still_missing` trims what arrived meanwhile), claimed until the block ends."""
        ranges = await still_missing(ranges)
        waited = 0.0
        while (busy := self._overlapping(ranges)) is not None and waited < CLAIM_WAIT_S:
            began = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(busy.wait(), CLAIM_WAIT_S - waited)
            waited += time.monotonic() - began
            ranges = await still_missing(ranges)
        done = asyncio.Event()
        claimed = [(r.log, (r.start, r.end, done)) for r in ranges]
        for log, claim in claimed:
            self._pulling.setdefault(log, []).append(claim)
        try:
            yield ranges
        finally:
            for log, claim in claimed:
                claims = self._pulling[log]
                claims.remove(claim)
                if not claims:
                    del self._pulling[log]
            done.set()


async def _plan(
    store: Store, remote: RemoteIndex, summary: SyncSummary, own_host: bytes | None = None
) -> tuple[list[Range], list[Range]]:
    """The ranges to pull and push, leaving out logs frozen on either side."""
    plan = diff(await store.index(), remote.logs)
    summary.own_log_behind = {
        r.log: (r.start, r.end) for r in plan.pull if own_host is not None and r.host == own_host
    }
    frozen = await store.frozen_logs() | remote.frozen
    summary.diverged = [log for log in plan.diverged if log not in frozen]
    pulls = [r for r in plan.pull if r.log not in frozen]
    # Equal lengths, different heads: one side holds a fork. Pull the peer's head record
    # so that the store proves it (keeps the evidence, freezes the log) instead of both
    # nodes diverging silently; last, so that the other logs are stored first.
    for log in summary.diverged:
        head = remote.logs[log]
        pulls.append(Range(log.host, log.tag, head.next_idx - 1, head.next_idx))
    pushes = [r for r in plan.push if r.log not in frozen]
    return pulls, pushes


def _all_held(records: Sequence[Record], held: Mapping[LogKey, int]) -> bool:
    """Whether the peer holds every log of the batch past its last record."""
    return all(end <= held.get(log, 0) for log, (_, end) in runs_of(records).items())


def _per_log(records: Sequence[Record]) -> dict[LogKey, int]:
    return {log: end - first for log, (first, end) in runs_of(records).items()}
