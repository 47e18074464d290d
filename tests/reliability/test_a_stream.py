"""A10: kill -9 of the daemon in the middle of a streaming append (issue 19).

A real `peer serve` process; this process is the producer, writing through
`peer.api`'s writer (AppendStream) as fast as the daemon takes it, and the daemon is
killed at a random moment. After each kill: every idx the daemon acknowledged is in
the store, holding the item written at that position; and what the store holds past
the last acknowledgement is exactly the producer's next items, in order (committed,
their acknowledgement lost with the daemon), so the producer learns exactly what is
durable: `writer.acked`, then the log's `next_idx` once the daemon is back.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from peer import api
from peer.crypto import SyncKey
from peer.errors import PeerError
from peer.home import Home
from peer.node import Node
from tests.reliability.conftest import Report, Tier
from tests.reliability.procs import TIMEOUT_S, Daemon, audit, make_home

TAG = "stream"
MAX_ITEMS = 400_000  # per cycle; a kill comes long before


class Produced:
    """What one producer wrote and what the daemon acknowledged."""

    def __init__(self, cycle: int) -> None:
        self.cycle = cycle
        self.acked: list[tuple[int, int]] = []
        self.error = ""

    def item(self, n: int) -> bytes:
        return f"c{self.cycle}-{n}".encode()


async def _produce(home: Path, produced: Produced, batch: int) -> None:
    """Write until the daemon dies; keep what was acknowledged."""
    connection = await api.connect(home)
    writer: api.Writer | None = None
    try:
        async with connection.writer(TAG, batch=batch) as writer:
            for n in range(MAX_ITEMS):
                await writer.write(produced.item(n))
    except PeerError as error:
        produced.error = str(error)
    finally:
        if writer is not None:
            produced.acked = list(writer.acked)
        await connection.close()


async def _held(home: Path, host: bytes, start: int) -> list[bytes | None]:
    """The plaintexts of log TAG from idx `start` (the daemon is down)."""
    node = await Node.open(Home(home))
    try:
        records = await node.store.read_range(host, TAG, start, MAX_ITEMS)
        return [node.decrypt(0, record).data for record in records]
    finally:
        await node.close()


def _next_idx(home: Path, host: bytes) -> int:
    return len(audit(home / "peer.db").logs.get((host, TAG), []))


async def test_a10_kill9_during_append_stream(
    tmp_path: Path, tier: Tier, rng: random.Random, report: Report
) -> None:
    cycles = tier.pick(6, 60)
    home = tmp_path / "w"
    await make_home(home, "w", SyncKey.generate(), {}, 8)
    host = Home(home).load().host
    acked_total = lost = wrong = past_ack = unclean = bad = 0
    problems: list[str] = []
    for cycle in range(cycles):
        base = _next_idx(home, host)
        daemon = Daemon(home)
        produced = Produced(cycle)
        try:
            producing = asyncio.create_task(_produce(home, produced, rng.choice([1, 64, 1000])))
            await asyncio.sleep(rng.uniform(0.1, 0.5))  # the fault's random moment
            daemon.kill()
            await asyncio.wait_for(producing, TIMEOUT_S)
        finally:
            daemon.stop()
        if not produced.error:
            unclean += 1  # the producer never noticed the daemon died
        after = audit(home / "peer.db")
        if not after.ok:
            bad += 1
            problems += after.problems
        held = await _held(home, host, base)
        acked = [idx for first, last in produced.acked for idx in range(first, last + 1)]
        acked_total += len(acked)
        for idx in acked:
            position = idx - base
            if position >= len(held):
                lost += 1
            elif held[position] != produced.item(position):
                wrong += 1
        # past the last ack: exactly the producer's next items, in order
        beyond = held[len(acked) :]
        past_ack += len(beyond)
        expected = [produced.item(n) for n in range(len(acked), len(held))]
        if acked != list(range(base, base + len(acked))) or beyond != expected:
            wrong += 1
            problems.append(f"cycle {cycle}: the log past the last ack is not the next items")
    figure = (
        f"{cycles} kill -9 of the daemon during a streaming append (writer batches 1, 64 "
        f"or 1000): {acked_total} acknowledged records, {lost} lost, {wrong} wrong or out "
        f"of order; {past_ack} records durable past the last ack (committed, the ack lost "
        f"with the daemon), each the producer's next item in order; {unclean} producers "
        f"not told; {bad} stores with integrity failures or gaps"
    )
    passed = lost == wrong == unclean == bad == 0 and acked_total > cycles
    report(
        "every acknowledged idx durable with its item; past the last ack only the next "
        "items in order; the producer told",
        figure,
        passed,
        cycles=cycles,
        acked=acked_total,
        lost=lost,
        wrong=wrong,
        past_ack=past_ack,
    )
    assert passed, problems[:5]
