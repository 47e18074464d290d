"""Store throughput next to the raw SQLite ceiling, measured side by side.

Run with `make bench`, or `.venv/bin/python bench/bench_store.py [--n N] [--runs R] [--json]`.

Each run uses fresh files in a new temporary directory and times, over the same N records:

1. `Store.append_many`: a local bulk append (seal, chain, sign, write);
2. `Store.insert_batch`: those records arriving from another node (check, verify, write);
3. duplicate batch: the same batches arriving again at that store, which holds them all
   (a mesh delivers each record from several neighbours): a read and a hash per record;
4. stdlib `sqlite3.executemany` of the same rows into the same schema: the row ceiling
   (a row per record, as the store wrote before segments);
5. the physical references of this machine, over the same bytes: SHA-256 of each
   record's canonical encoding (what any receiver hashes), and a raw SQLite insert of
   those bytes as blobs, one blob (a segment) per 1000 records and a commit per blob.

The four are interleaved within every run, not run as separate series, because the
machine is shared and noisy: a slow spell then hits all of them and the ratios stay honest.
Medians over the runs are reported. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer import segment
from peer.crypto import Author, SigningKey, SyncKey
from peer.records import Record, hash_input
from peer.store import RECORD_COLUMNS, Store
from peer.store.schema import MIGRATIONS

TAG = "bench"
PAYLOAD_BYTES = 256
INSERT_BATCH = 1000  # records per insert_batch call (rounded up to the next signed record)
COMMIT_EVERY = 1000  # rows per transaction for the raw SQLite ceiling
READ_CHUNK = 10_000
APPEND_TARGET = 50_000  # records/s

_COLUMNS = RECORD_COLUMNS.split(", ")
_RAW_INSERT = f"INSERT INTO records ({RECORD_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_NAMES = {
    "append": "append_many",
    "insert": "insert_batch",
    "duplicate": "duplicate batch",
    "ceiling": "sqlite3 ceiling",
    "sha256": "sha256 reference",
    "blobs": "sqlite3 blobs",
}


@dataclass(frozen=True, slots=True)
class Timing:
    """One timed measurement: wall and CPU seconds (all threads) for `records` rows."""

    records: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.records / self.wall


class Clock:
    """Wall and process CPU time together: CPU near wall means busy, far below means waiting."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self, records: int) -> Timing:
        return Timing(records, time.perf_counter() - self._wall, time.process_time() - self._cpu)


def log(message: str) -> None:
    """Progress for the person waiting; stderr, so stdout stays the result alone."""
    print(message, file=sys.stderr, flush=True)


def as_row(record: Record) -> tuple[object, ...]:
    """A record as a `records` row, in RECORD_COLUMNS order (what the store writes)."""
    return tuple(getattr(record, column) for column in _COLUMNS)


def signed_batches(records: Sequence[Record], target: int) -> list[list[Record]]:
    """Cut `records` into batches of at least `target` records that each end signed.

    `insert_batch` refuses a batch that does not end on a signature; one is signed every
    SIGN_EVERY idx and the last of every append, so each batch runs on to the first signed
    record at or after `target` records (1024 for a target of 1000).
    """
    batches: list[list[Record]] = []
    current: list[Record] = []
    for record in records:
        current.append(record)
        if len(current) >= target and record.sig:
            batches.append(current)
            current = []
    if current:
        if not current[-1].sig:
            raise RuntimeError("the appended records do not end on a signed record")
        batches.append(current)
    return batches


async def read_all(store: Store, host: bytes, count: int) -> list[Record]:
    """Every record of the bench log, read back in chunks (not timed)."""
    records: list[Record] = []
    while len(records) < count:
        chunk = await store.read_range(host, TAG, len(records), READ_CHUNK)
        if not chunk:
            break
        records.extend(chunk)
    if len(records) != count:
        raise RuntimeError(f"read back {len(records)} records, expected {count}")
    return records


async def bench_append(path: Path, payloads: Sequence[bytes]) -> tuple[Timing, list[Record], bytes]:
    """Time `append_many` into a fresh store; returns the records and the author's key."""
    signing = SigningKey.generate()
    author = Author(signing, SyncKey.generate())
    store = await Store.open(path)
    try:
        await store.add_host(signing.public_key)
        clock = Clock()
        done = 0
        async for first, last in store.append_many(author, TAG, payloads):
            done += last - first + 1
        timing = clock.stop(done)
        records = await read_all(store, author.host, len(payloads))
    finally:
        await store.close()
    if done != len(payloads):
        raise RuntimeError(f"append_many wrote {done} records, expected {len(payloads)}")
    return timing, records, signing.public_key


async def bench_insert(
    path: Path, batches: Sequence[Sequence[Record]], keys: Mapping[bytes, bytes]
) -> Timing:
    """Time `insert_batch` of ready-cut batches into a fresh store that lacks the host."""
    expected = sum(len(batch) for batch in batches)
    store = await Store.open(path)
    try:
        clock = Clock()
        added = 0
        for batch in batches:
            added += (await store.insert_batch(batch, keys=keys)).added
        timing = clock.stop(added)
    finally:
        await store.close()
    if added != expected:
        raise RuntimeError(f"insert_batch added {added} records, expected {expected}")
    return timing


async def bench_duplicate(
    path: Path, batches: Sequence[Sequence[Record]], keys: Mapping[bytes, bytes]
) -> Timing:
    """Time `insert_batch` of the same batches again into the store that holds them."""
    expected = sum(len(batch) for batch in batches)
    store = await Store.open(path)
    try:
        clock = Clock()
        duplicates = added = 0
        for batch in batches:
            result = await store.insert_batch(batch, keys=keys)
            duplicates, added = duplicates + result.duplicates, added + result.added
        timing = clock.stop(duplicates)
    finally:
        await store.close()
    if (added, duplicates) != (0, expected):
        raise RuntimeError(f"{added} added, {duplicates} duplicates; expected 0, {expected}")
    return timing


def bench_ceiling(path: Path, rows: Sequence[tuple[object, ...]]) -> Timing:
    """Time plain `executemany` with the store's schema and pragmas: the most it could do."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        for statement in MIGRATIONS[1]:
            db.execute(statement)
        clock = Clock()
        for start in range(0, len(rows), COMMIT_EVERY):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_RAW_INSERT, rows[start : start + COMMIT_EVERY])
            db.execute("COMMIT")
        timing = clock.stop(len(rows))
    finally:
        db.close()
    return timing


def bench_sha256(records: Sequence[Record]) -> Timing:
    """Time SHA-256 of every record's canonical bytes (built beforehand, not timed)."""
    inputs = [hash_input(record) for record in records]
    sha256 = hashlib.sha256
    clock = Clock()
    for data in inputs:
        sha256(data).digest()
    return clock.stop(len(inputs))


def bench_blobs(path: Path, records: Sequence[Record]) -> Timing:
    """Time a raw SQLite insert of the same bytes as blobs: a segment per COMMIT_EVERY
    records (encoded beforehand, not timed), one transaction each, WAL, NORMAL."""
    blobs = [
        segment.encode(records[start : start + COMMIT_EVERY])
        for start in range(0, len(records), COMMIT_EVERY)
    ]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("CREATE TABLE blobs (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        clock = Clock()
        for blob in blobs:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO blobs (data) VALUES (?)", (blob,))
            db.execute("COMMIT")
        timing = clock.stop(len(records))
    finally:
        db.close()
    return timing


async def run_once(payloads: Sequence[bytes]) -> tuple[dict[str, Timing], list[int]]:
    """One run of all three measurements on fresh files; returns timings and batch sizes."""
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        workdir = Path(tmp)
        append, records, public_key = await bench_append(workdir / "append.db", payloads)
        log(f"  append_many      {append.rate:>10,.0f} rec/s  ({append.wall:.2f} s)")
        batches = signed_batches(records, INSERT_BATCH)
        keys = {records[0].host: public_key}
        insert = await bench_insert(workdir / "insert.db", batches, keys)
        log(f"  insert_batch     {insert.rate:>10,.0f} rec/s  ({insert.wall:.2f} s)")
        duplicate = await bench_duplicate(workdir / "insert.db", batches, keys)
        log(f"  duplicate batch  {duplicate.rate:>10,.0f} rec/s  ({duplicate.wall:.2f} s)")
        ceiling = bench_ceiling(workdir / "ceiling.db", [as_row(r) for r in records])
        log(f"  sqlite3 ceiling  {ceiling.rate:>10,.0f} rec/s  ({ceiling.wall:.2f} s)")
        sha = bench_sha256(records)
        log(f"  sha256 reference {sha.rate:>10,.0f} rec/s  ({sha.wall:.2f} s)")
        blobs = bench_blobs(workdir / "blobs.db", records)
        log(f"  sqlite3 blobs    {blobs.rate:>10,.0f} rec/s  ({blobs.wall:.2f} s)")
    sizes = [len(batch) for batch in batches]
    timings = {
        "append": append,
        "insert": insert,
        "duplicate": duplicate,
        "ceiling": ceiling,
        "sha256": sha,
        "blobs": blobs,
    }
    return timings, sizes


async def bench(n: int, runs: int) -> dict[str, Any]:
    """All runs, summarised as plain data (what `--json` prints)."""
    started = time.perf_counter()
    log(f"generating {n:,} random {PAYLOAD_BYTES}-byte payloads")
    payloads = [os.urandom(PAYLOAD_BYTES) for _ in range(n)]
    results: list[dict[str, Timing]] = []
    sizes: list[int] = []
    for run in range(1, runs + 1):
        log(f"run {run}/{runs}")
        timings, sizes = await run_once(payloads)
        results.append(timings)
    rate = {key: statistics.median(r[key].rate for r in results) for key in _NAMES}
    measurements = {
        key: {
            "median_rate": rate[key],
            "median_wall_s": statistics.median(r[key].wall for r in results),
            "median_cpu_s": statistics.median(r[key].cpu for r in results),
            "rates": [r[key].rate for r in results],
            "wall_s": [r[key].wall for r in results],
        }
        for key in _NAMES
    }
    return {
        "n": n,
        "runs": runs,
        "payload_bytes": PAYLOAD_BYTES,
        "insert_batches": len(sizes),
        "insert_batch_max_size": max(sizes),
        "ceiling_commit_every": COMMIT_EVERY,
        "measurements": measurements,
        "ratios": {
            "append_over_ceiling": rate["append"] / rate["ceiling"],
            "insert_over_ceiling": rate["insert"] / rate["ceiling"],
            "insert_over_blobs": rate["insert"] / rate["blobs"],
            # time per record, a duplicate over a new one (per run, then the median)
            "duplicate_over_insert": statistics.median(
                r["duplicate"].wall / r["insert"].wall for r in results
            ),
        },
        "append_target_rate": APPEND_TARGET,
        "append_target_met": rate["append"] >= APPEND_TARGET,
        "tmpdir": tempfile.gettempdir(),
        "wall_s": time.perf_counter() - started,
    }


def table(summary: Mapping[str, Any]) -> str:
    """The summary as a table a person reads."""
    m = summary["measurements"]
    lines = [
        f"peer store bench: N={summary['n']:,} records x {summary['payload_bytes']} B payload, "
        f"median of {summary['runs']} runs (tmp: {summary['tmpdir']})",
        "",
        f"{'measurement':<18}{'rate rec/s':>12}{'wall s':>9}{'cpu s':>8}  per run rec/s",
    ]
    for key, name in _NAMES.items():
        row = m[key]
        per_run = " ".join(f"{rate:,.0f}" for rate in row["rates"])
        lines.append(
            f"{name:<18}{row['median_rate']:>12,.0f}{row['median_wall_s']:>9.2f}"
            f"{row['median_cpu_s']:>8.2f}  {per_run}"
        )
    ratios = summary["ratios"]
    met = "met" if summary["append_target_met"] else "MISSED"
    lines += [
        "",
        f"insert_batch: {summary['insert_batches']} calls of <= "
        f"{summary['insert_batch_max_size']} records (each ends signed); "
        f"ceiling: one commit per {summary['ceiling_commit_every']} rows",
        f"append_many  / ceiling: {ratios['append_over_ceiling']:.3f}",
        f"insert_batch / ceiling: {ratios['insert_over_ceiling']:.3f}",
        f"insert_batch / sqlite3 blobs (a segment per {summary['ceiling_commit_every']}): "
        f"{ratios['insert_over_blobs']:.3f}",
        f"duplicate batch: {1e6 / m['duplicate']['median_rate']:.2f} µs per record held "
        f"already, {1e6 / m['insert']['median_rate']:.2f} µs per new one: "
        f"{ratios['duplicate_over_insert']:.3f} of the time",
        f"append target >= {summary['append_target_rate']:,} rec/s: {met}",
        f"total wall time: {summary['wall_s']:.1f} s",
    ]
    return "\n".join(lines)


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=positive, default=100_000, help="records per run")
    parser.add_argument("--runs", type=positive, default=3, help="runs (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    summary = asyncio.run(bench(args.n, args.runs))
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(summary))


if __name__ == "__main__":
    main()
