"""One sync session with a peer: fetch its index, pull what we lack, push what it lacks.

The engine moves ciphertext and never needs the sync key, so a node without the key
(a relay) syncs the same way. Each batch is committed on arrival, so an interrupted
session resumes from the stored heads and never re-sends what the other side stored.
Progress is reported through a callback; printing is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from peer.batches import DEFAULT_BATCH, read_batches
from peer.client import Batch, PeerClient
from peer.codec.wire import PROTOCOL_VERSION, RemoteIndex
from peer.errors import ProtocolError
from peer.records import LogKey, Range, Record, diff
from peer.store import InsertResult, Store

Progress = Callable[[int, int], None]


@dataclass
class SyncSummary:
    """What one session moved, in total and per log."""

    peer: str
    node_id: str = ""
    pulled: int = 0
    pushed: int = 0
    per_log: dict[LogKey, list[int]] = field(default_factory=dict)  # [pulled, pushed]
    diverged: list[LogKey] = field(default_factory=list)
    remote_heads: dict[LogKey, int] = field(default_factory=dict)  # next_idx held there
    # Logs of this node's own host that the peer holds more of: (ours, theirs) next_idx.
    # Pulled back all the same (they are signed with our key): that is how a restored
    # backup recovers. But it is an alarm: a backup, or a clone of this identity.
    own_log_behind: dict[LogKey, tuple[int, int]] = field(default_factory=dict)
    # The push was left (in part) to the peer, which was pulling from us by itself.
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
    peer: PeerClient,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    own_host: bytes | None = None,
    peer_takes: Callable[[], bool] | None = None,
) -> SyncSummary:
    """Bring `store` and the peer's store to the union of both, both ways. With
    `own_host` (this node's host id), logs of it held further there are reported.
    `peer_takes`: whether the peer is pulling from us by itself right now (two daemons
    syncing each other); the push stops then, instead of sending the same records
    twice."""
    remote = await peer.get_index()
    if remote.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer {peer.target} speaks protocol {remote.protocol_version}, "
            f"this node speaks {PROTOCOL_VERSION}: upgrade the older one"
        )
    summary = SyncSummary(peer.target, remote.node_id)
    summary.remote_heads = {log: head.next_idx for log, head in remote.logs.items()}
    pulls, pushes = await _plan(store, remote, summary, own_host)
    total = sum(len(r) for r in pulls) + sum(len(r) for r in pushes)
    report = progress or (lambda done, total: None)
    await _pull(store, peer, remote, pulls, batch, summary, lambda: report(_done(summary), total))
    await _push(
        store, peer, pushes, batch, summary, lambda: report(_done(summary), total), peer_takes
    )
    await _check_served(store, peer.target, pulls)
    return summary


async def _check_served(store: Store, target: str, pulls: list[Range]) -> None:
    """A peer that advertised more than it sent is withholding records (or froze the
    log meanwhile): an error, so that a daemon retries, and a user sees it."""
    if not pulls:
        return  # nothing was asked for (a no-op session reads no index again)
    index = await store.index()
    held = {r.log: index[r.log].next_idx if r.log in index else 0 for r in pulls}
    short = [r for r in pulls if held[r.log] < r.end]
    if short:
        first = short[0]
        raise ProtocolError(
            f"peer {target} advertised log {first.log} up to idx {first.end} but sent it "
            f"only up to idx {held[first.log]} ({len(short)} log(s) short): records "
            "withheld, or the log was frozen there meanwhile"
        )


def _done(summary: SyncSummary) -> int:
    return summary.pulled + summary.pushed


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


async def _pull(
    store: Store,
    peer: PeerClient,
    remote: RemoteIndex,
    ranges: list[Range],
    batch: int,
    summary: SyncSummary,
    tick: Callable[[], None],
) -> None:
    """Store each pulled batch; verify the next while the last one is being written."""
    if not ranges:
        return
    keys = dict(remote.keys)
    writing: _Writing | None = None
    try:
        async for records, new_keys in peer.pull(ranges, batch):
            keys.update(new_keys)
            prepared = store.prepare(records, keys, checked=True)
            if writing is not None:
                await writing.settle(summary, tick)
            counts = {log: len(group) for log, group in prepared.groups.items()}
            writing = _Writing(asyncio.ensure_future(store.apply(prepared)), counts)
        if writing is not None:
            await writing.settle(summary, tick)
    finally:
        if writing is not None and not writing.task.done():
            with contextlib.suppress(Exception):  # the first error is already propagating
                await writing.task


@dataclass
class _Writing:
    """A batch being written while the next one is verified."""

    task: asyncio.Future[InsertResult]
    counts: dict[LogKey, int]  # records per log

    async def settle(self, summary: SyncSummary, tick: Callable[[], None]) -> None:
        await self.task
        for log, count in self.counts.items():
            summary.count(log, pulled=count)
        tick()


async def _push(
    store: Store,
    peer: PeerClient,
    ranges: list[Range],
    batch: int,
    summary: SyncSummary,
    tick: Callable[[], None],
    peer_takes: Callable[[], bool] | None = None,
) -> None:
    if not ranges:
        return
    if peer_takes is not None and peer_takes():
        summary.left_to_peer = True
        return
    await peer.push(_outgoing(store, ranges, batch, summary, tick, peer_takes))


async def _outgoing(
    store: Store,
    ranges: list[Range],
    batch: int,
    summary: SyncSummary,
    tick: Callable[[], None],
    peer_takes: Callable[[], bool] | None,
) -> AsyncIterator[Batch]:
    """The push's batches; it ends early (a normal end of the stream) once the peer
    pulls from us by itself: each batch is then stored by the peer's own pull."""
    sent: set[bytes] = set()
    batches = read_batches(store, ranges, batch)
    try:
        async for records in batches:
            if peer_takes is not None and peer_takes():
                summary.left_to_peer = True
                return
            new_hosts = {r.host for r in records} - sent
            sent |= new_hosts
            yield records, await store.host_keys(new_hosts)
            for log, count in _per_log(records).items():
                summary.count(log, pushed=count)
            tick()
    finally:
        await batches.aclose()


def _per_log(records: list[Record]) -> dict[LogKey, int]:
    counts = Counter((r.host, r.tag) for r in records)
    return {LogKey(host, tag): n for (host, tag), n in counts.items()}
