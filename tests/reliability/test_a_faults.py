"""A4: SQLite's I/O-error loop, moved to our store (`peer.store.Faults`).

The k-th write statement (BEGIN, each statement, COMMIT) of an operation fails with
`disk I/O error`, for k = 1, 2, ... until the operation completes untouched; once
(only statement k fails) and persistently (k and every later one). The operations: a
received batch (`apply`, through a real PushRecords stream into a served node) and a
local `append`. After each k: integrity, no gap, no duplicate, no partial batch, Health
SERVING, no exception text in the status, and the next sync completes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from peer import codec
from peer.client import PeerClient
from peer.crypto import Author, record_hash
from peer.errors import StoreError
from peer.records import Head, LogKey, Record
from peer.service import start_server
from peer.store import Faults, Store
from peer.sync import sync_with
from peer.v1 import sync_pb2 as pb
from tests.conftest import new_author, signed_chain
from tests.nodes import keys_of
from tests.reliability.conftest import Report, Tier
from tests.reliability.procs import audit

MAX_K = 200  # bound of each loop; an operation here is a few dozen statements
LEAKS = ("Traceback", "sqlite3", "OperationalError", 'File "', "Error:")
BATCH = 4


async def _push(target: str, batches: Sequence[tuple[list[Record], dict[bytes, bytes]]]) -> str:
    """One PushRecords stream; its status code, and the details if they leak internals."""
    async with aio.insecure_channel(target) as channel:
        call = channel.stream_unary(
            f"/{codec.SERVICE_NAME}/PushRecords",
            request_serializer=None,
            response_deserializer=None,
        )

        async def requests() -> AsyncIterator[bytes]:
            for records, keys in batches:
                yield codec.encode_batch(pb.PushRecordsRequest, records, keys)

        try:
            await call(requests(), timeout=20)
        except aio.AioRpcError as exc:
            details = exc.details() or ""
            leaked = [word for word in LEAKS if word in details]
            return exc.code().name + (f" LEAK {details!r}" if leaked else "")
        return "OK"


async def _serving(target: str) -> bool:
    async with aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _batches(
    records: list[Record], author: Author
) -> list[tuple[list[Record], dict[bytes, bytes]]]:
    return [(records[i : i + BATCH], keys_of(author)) for i in range(0, len(records), BATCH)]


class Loop:
    """The tallies of every injection point."""

    def __init__(self) -> None:
        self.points: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.violations: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.violations.append(what)


async def _apply_loop(
    loop: Loop, faults: Faults, store: Store, target: str, persist: bool, sent: list[Record]
) -> None:
    author = new_author()
    for k in range(1, MAX_K + 1):
        start = Head(len(sent), record_hash(sent[-1])) if sent else None
        fresh = signed_chain(author, "t", 3 * BATCH, start)
        faults.arm(k, persist)
        status = await _push(target, _batches(fresh, author))
        fired = faults.fired
        faults.disarm()
        loop.statuses[status.split()[0]] += 1
        where = f"apply k={k} persist={persist}"
        loop.check(status in ("OK", "UNAVAILABLE"), f"{where}: status {status}")
        state = audit(store.path)
        loop.check(state.ok, f"{where}: {state.problems}")
        loop.check(await _serving(target), f"{where}: not SERVING")
        sent += fresh
        again = await _push(target, _batches(sent, author))  # the next sync completes
        head = (await store.index()).get(LogKey(author.host, "t"))
        complete = head is not None and head.next_idx == len(sent)
        loop.check(again == "OK" and complete, f"{where}: the next push did not complete")
        if not fired:
            return
        loop.points[f"apply/{'persist' if persist else 'once'}"] += 1
    loop.violations.append(f"apply persist={persist}: still failing at k={MAX_K}")


async def _append_loop(
    loop: Loop, faults: Faults, store: Store, author: Author, target: str, persist: bool
) -> None:
    tag = f"own-{'persist' if persist else 'once'}"
    acked: list[Record] = []
    replica = await Store.open(store.path.with_name(f"replica-{tag}.db"))
    try:
        for k in range(1, MAX_K + 1):
            faults.arm(k, persist)
            with contextlib.suppress(StoreError):  # unacknowledged: must leave nothing
                acked += await store.append(author, tag, [b"a", b"b", b"c"])
            fired = faults.fired
            faults.disarm()
            where = f"append k={k} persist={persist}"
            state = audit(store.path)
            held = state.logs.get((author.host, tag), [])
            loop.check(state.ok, f"{where}: {state.problems}")
            loop.check(len(held) == len(acked), f"{where}: {len(held)} held, {len(acked)} acked")
            loop.check(await _serving(target), f"{where}: not SERVING")
            async with PeerClient(target) as peer:
                await sync_with(replica, peer)  # the next sync completes
            log = LogKey(author.host, tag)
            loop.check(
                (await replica.index()).get(log) == (await store.index()).get(log),
                f"{where}: the replica did not catch up",
            )
            if not fired:
                return
            loop.points[f"append/{'persist' if persist else 'once'}"] += 1
        loop.violations.append(f"append persist={persist}: still failing at k={MAX_K}")
    finally:
        await replica.close()


async def test_a4_store_ioerr_loop(tmp_path: Path, tier: Tier, report: Report) -> None:
    faults = Faults()
    author = new_author()
    store = await Store.open(tmp_path / "n.db", faults=faults)
    await store.add_host(author.signing.public_key)
    running = await start_server(store, "node-n", "127.0.0.1:0")
    target = f"127.0.0.1:{running.port}"
    loop = Loop()
    try:
        for persist in (False, True):
            await _apply_loop(loop, faults, store, target, persist, [])
            await _append_loop(loop, faults, store, author, target, persist)
    finally:
        await running.stop(grace=0.2)
        await store.close()
    points = sum(loop.points.values())
    shown = ", ".join(f"{name} {n}" for name, n in sorted(loop.points.items()))
    figure = (
        f"{points} injection points ({shown}; rebuild: no derived views yet, see A8), "
        f"{len(loop.violations)} invariant violations; statuses "
        + ", ".join(f"{code} {n}" for code, n in sorted(loop.statuses.items()))
    )
    passed = not loop.violations and all(loop.points.values()) and len(loop.points) == 4
    report(
        "after every k: integrity ok, I1-I3 hold, SERVING, clean status, next sync completes",
        figure,
        passed,
        points=points,
        violations=len(loop.violations),
    )
    assert passed, loop.violations[:5]
