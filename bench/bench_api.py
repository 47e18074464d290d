"""Programs that write (issue 19): `peer.api` appends against a running daemon, next to
the store's own bulk insert of the same records, measured in the same run.

Run with `make bench`, or `.venv/bin/python bench/bench_api.py [--serial N] [--records
N] [--stream N] [--json]`.

One `peer serve --insecure --no-sync --no-discovery` on loopback (a child process, its
own home in a temporary directory); this process is the program, on the daemon's Unix
socket. Items are PAYLOAD_BYTES bytes, each one record. It times:

1. one at a time: `await node.append(tag, item)`, each awaited before the next;
2. 50 / 100 / 200 at once: that many tasks, each appending one item at a time, until
   `--records` records are written (the concurrency held steady);
3. 3,000 and 30,000 at once: one `asyncio.gather` of that many single appends (every
   one must succeed: a failure is reported, never hidden);
4. batched: `node.append(tag, *10_000 items)`, repeated to `--records`;
5. streaming: one producer through `node.writer(tag)`, `--stream` records, to the last
   acknowledgement (`flush`).

Beside the daemon, a bare grpc.aio server (a child process answering each unary call
and each stream message with its request, nothing else) on a Unix socket in the same
directory is called `--serial` times one at a time, both ways: the round trip alone.
The stream's is the floor under "one at a time" (`Connection.append` sends each call
as a message on one open AppendStream: no append can be answered faster than a
message that does nothing); the unary call's is what one awaited `Append` call pays.

Then the daemon is stopped, the streamed records are read back from its store, and
`Store.insert_batch` of them into a fresh store is timed: the store's own rate of
verifying and writing the same records, the yardstick every row is divided by. The
whole run is repeated `--runs` times (3; fresh home and daemon each time) and each
row reports its median: the machine is shared, and a slow spell in one run should not
decide a row. 3,000/30,000 at once and the stream must have no failure in any run.
Progress goes to stderr, the table (or `--json`) to stdout; build/bench_api.json too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import INSERT_BATCH, log, positive, signed_batches
from grpc import aio

from peer import api
from peer.home import Home
from peer.node import Node
from peer.store import Store

PAYLOAD_BYTES = 128
SERIAL_TARGET = 2_000  # records/s, one awaited append at a time
CONCURRENT_TARGET = 20_000  # records/s, single appends at once
BATCH_TARGET = 50_000  # records/s, the SPEC's bulk local append
STREAM_TARGET = 50_000  # records/s, one producer's stream
BATCH = 10_000
BUILD = Path(__file__).resolve().parents[1] / "build"


@dataclass
class Row:
    """One line of the table."""

    what: str
    records: int
    seconds: float
    target: float
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.rate >= self.target


def item(n: int) -> bytes:
    return f"event {n} ".encode().ljust(PAYLOAD_BYTES, b".")


class Serving:
    """`peer serve` of a home as a child process, stopped with SIGTERM."""

    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
        command = [sys.executable, "-m", "peer.cli", "--home", str(home), "serve"]
        flags = ["--insecure", "--listen", "127.0.0.1:0", "--no-sync", "--no-discovery"]
        self.process = subprocess.Popen(
            [*command, *flags, "--json"], stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        if not self.process.stdout.readline():
            raise RuntimeError("peer serve did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def timed(what: str, records: int, target: float, run: Callable[[], Awaitable[int]]) -> Row:
    log(f"    {what}")
    started = time.perf_counter()
    failures = await run()
    return Row(what, records, time.perf_counter() - started, target, failures)


async def one_at_a_time(node: api.Connection, count: int) -> int:
    for n in range(count):
        await node.append("serial", item(n))
    return 0


async def steady(node: api.Connection, tasks: int, total: int) -> int:
    """`tasks` tasks appending one item at a time, `total` records in all."""

    async def worker(start: int) -> None:
        for n in range(start, total, tasks):
            await node.append(f"steady{tasks}", item(n))

    await asyncio.gather(*(worker(start) for start in range(tasks)))
    return 0


async def burst(node: api.Connection, count: int) -> int:
    """`count` single appends in one gather; the number that failed."""
    calls = [node.append(f"burst{count}", item(n)) for n in range(count)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        log(f"    {len(failed)} failed, e.g. {failed[0]}")
    return len(failed)


async def batched(node: api.Connection, total: int) -> int:
    for start in range(0, total, BATCH):
        await node.append("batched", *(item(n) for n in range(start, min(start + BATCH, total))))
    return 0


async def streamed(node: api.Connection, total: int) -> int:
    async with node.writer("streamed") as writer:
        for n in range(total):
            await writer.write(item(n))
        await writer.flush()
    return 0 if writer.durable == total else total - writer.durable


ECHO = "/bench.Echo/Echo"
ECHO_STREAM = "/bench.Echo/EchoStream"


async def echo_server(path: str) -> None:
    """A grpc.aio server that answers each call, and each message of a stream, with its
    request (`--echo PATH`)."""
    import grpc

    async def echo(request: bytes, context: object) -> bytes:
        return request

    async def echo_stream(requests: Any, context: object) -> Any:
        async for request in requests:
            yield request

    server = aio.server()
    service, method = ECHO.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(
        service,
        {
            method: grpc.unary_unary_rpc_method_handler(echo),
            ECHO_STREAM.rsplit("/", 1)[1]: grpc.stream_stream_rpc_method_handler(echo_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def round_trips(path: Path, count: int) -> int:
    """`count` calls of the echo server, each awaited before the next."""
    async with aio.insecure_channel(f"unix:{path}") as channel:
        call = channel.unary_unary(ECHO)
        for _ in range(count):
            await call(b"x" * PAYLOAD_BYTES)
    return 0


async def stream_round_trips(path: Path, count: int) -> int:
    """`count` messages on one echo stream, each answer awaited before the next."""
    async with aio.insecure_channel(f"unix:{path}") as channel:
        call = channel.stream_stream(ECHO_STREAM)()
        for _ in range(count):
            await call.write(b"x" * PAYLOAD_BYTES)
            await call.read()
        await call.done_writing()
    return 0


async def round_trip_floor(tmp: Path, count: int) -> list[Row]:
    path = tmp / "echo.sock"
    server = subprocess.Popen(
        [sys.executable, __file__, "--echo", str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        if not server.stdout.readline():
            raise RuntimeError("the echo server did not start")
        await round_trips(path, 100)  # the connection and its first calls
        await stream_round_trips(path, 100)
        return [
            await timed("grpc unary call alone", count, 0.0, lambda: round_trips(path, count)),
            await timed(
                "grpc stream message alone (floor)",
                count,
                0.0,
                lambda: stream_round_trips(path, count),
            ),
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


async def measure(home: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    rows += await round_trip_floor(home.parent, args.serial)
    async with await api.connect(home) as node:
        await node.append("warm-up", item(0))
        rows.append(
            await timed(
                "one at a time",
                args.serial,
                SERIAL_TARGET,
                lambda: one_at_a_time(node, args.serial),
            )
        )
        for tasks in (50, 100, 200):
            rows.append(
                await timed(
                    f"{tasks} at once",
                    args.records,
                    CONCURRENT_TARGET,
                    lambda tasks=tasks: steady(node, tasks, args.records),  # type: ignore[misc]
                )
            )
        for count in (3_000, 30_000):
            rows.append(
                await timed(
                    f"{count:,} at once (one gather)",
                    count,
                    CONCURRENT_TARGET,
                    lambda count=count: burst(node, count),  # type: ignore[misc]
                )
            )
        rows.append(
            await timed(
                f"append(tag, *{BATCH:,} items)",
                args.records,
                BATCH_TARGET,
                lambda: batched(node, args.records),
            )
        )
        rows.append(
            await timed(
                "streaming writer", args.stream, STREAM_TARGET, lambda: streamed(node, args.stream)
            )
        )
    return rows


async def raw_insert(home: Path, fresh: Path, count: int) -> Row:
    """`Store.insert_batch` of the streamed records into a fresh store (the yardstick)."""
    node = await Node.open(Home(home))
    try:
        host = node.identity.host
        records = []
        while len(records) < count:
            chunk = await node.store.read_range(host, "streamed", len(records), BATCH)
            if not chunk:
                break
            records.extend(chunk)
        keys = {host: node.identity.signing.public_key}
    finally:
        await node.close()
    batches = signed_batches(records, INSERT_BATCH)
    log(f"    store insert_batch of the {len(records):,} streamed records")
    store = await Store.open(fresh)
    try:
        started = time.perf_counter()
        added = 0
        for batch in batches:
            added += (await store.insert_batch(batch, keys=keys)).added
        seconds = time.perf_counter() - started
    finally:
        await store.close()
    return Row("store insert_batch (same records)", added, seconds, 0.0, count - added)


def bench(args: argparse.Namespace) -> tuple[list[Row], Row]:
    """`args.runs` runs, each row (and the yardstick) its median time over them."""
    runs = []
    for run in range(args.runs):
        log(f"run {run + 1} of {args.runs}")
        runs.append(one_run(args))
    rows = [median_row([r[0][i] for r in runs]) for i in range(len(runs[0][0]))]
    return rows, median_row([r[1] for r in runs])


def median_row(rows: Sequence[Row]) -> Row:
    seconds = statistics.median(row.seconds for row in rows)
    first = rows[0]
    return Row(first.what, first.records, seconds, first.target, sum(r.failures for r in rows))


def one_run(args: argparse.Namespace) -> tuple[list[Row], Row]:
    with tempfile.TemporaryDirectory(prefix="peer-bench-api-") as tmp:
        home = Path(tmp) / "home"
        subprocess.run(
            [sys.executable, "-m", "peer.cli", "--home", str(home), "init", "--name", "bench"],
            check=True,
            capture_output=True,
        )
        log("  a daemon on loopback; this process appends through peer.api:")
        serving = Serving(home)
        try:
            rows = asyncio.run(measure(home, args))
        finally:
            serving.stop()
        raw = asyncio.run(raw_insert(home, Path(tmp) / "fresh.db", args.stream))
    return rows, raw


def table(rows: Sequence[Row], raw: Row) -> str:
    lines = [
        f"{'what a program does':<36} {'records':>8} {'records/s':>10} {'target':>9}  "
        f"{'':<4}  x store insert",
    ]
    for row in rows:
        verdict = "" if not row.target else "ok" if row.ok else "MISS"
        target = f"{row.target:,.0f}" if row.target else ""
        failed = f" ({row.failures} failed)" if row.failures else ""
        lines.append(
            f"{row.what:<36} {row.records:>8,} {row.rate:>10,.0f} {target:>9}  "
            f"{verdict:<4}  {row.rate / raw.rate:.2f}{failed}"
        )
    lines.append(f"{raw.what:<36} {raw.records:>8,} {raw.rate:>10,.0f} {'':>9}  {'':<4}  1.00")
    return "\n".join(lines)


def as_json(rows: Sequence[Row], raw: Row) -> dict[str, Any]:
    def entry(row: Row) -> dict[str, Any]:
        return {
            **asdict(row),
            "rate": round(row.rate),
            "ok": row.ok,
            "x_insert": round(row.rate / raw.rate, 3),
        }

    return {
        "payload_bytes": PAYLOAD_BYTES,
        "rows": [entry(r) for r in rows],
        "store_insert": entry(raw),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serial", type=positive, default=2_000, help="one-at-a-time appends")
    parser.add_argument(
        "--records", type=positive, default=20_000, help="per concurrent/batched row"
    )
    parser.add_argument("--stream", type=positive, default=200_000, help="records streamed")
    parser.add_argument("--runs", type=positive, default=3, help="medians over this many runs")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--echo", metavar="PATH", help=argparse.SUPPRESS)  # the floor's server
    args = parser.parse_args(argv)
    if args.echo:
        asyncio.run(echo_server(args.echo))
        return
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    rows, raw = bench(args)
    result = as_json(rows, raw)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "bench_api.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(
        f"peer.api writes to a running daemon ({PAYLOAD_BYTES}-byte items); medians of "
        f"{args.runs} runs, each row and the store's insert_batch in the same run:"
    )
    print(table(rows, raw))


if __name__ == "__main__":
    main()
