"""Writing a received batch that passed every check needing no database: judged
against the stored heads and written in one transaction, all on the writer's thread.

One trip to SQLite's thread for the whole batch (BEGIN IMMEDIATE, each log's head,
the records it holds already, the segments, heads, keys and clock floor, COMMIT), not
an await per statement: a receiver pays each trip twice over (a thread switch each
way), and a batch took eight of them.

A batch whose records conflict with records held (a fork: another authentic record
at an occupied idx, or a chain that does not continue the head) writes nothing:
`apply_batch` raises Forked, the transaction rolls back, and the caller keeps the
evidence in a second transaction (`keep_evidence`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peer import clock
from peer.errors import GapError
from peer.records import Head, LogKey, Record
from peer.segment import Segment, hashes, take_range
from peer.store.forks import Fork, keep_forks
from peer.store.rows import CLOCK_FLOOR, RAISE_CLOCK_FLOOR, UPSERT_HEAD, unfrozen_head
from peer.store.segments import SEGMENTS_OF, pieces, range_params, write_segments

SAVE_KEY = "INSERT OR IGNORE INTO hosts (host, public_key) VALUES (?, ?)"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch that passed every check needing no database, ready for `apply`."""

    groups: dict[LogKey, list[Segment]]  # each log's consecutive segments
    hashes: dict[LogKey, list[bytes]]  # each log's records' hashes
    prevs: dict[LogKey, bytes]  # each log's first record's `prev`
    keys: dict[bytes, bytes]
    timestamps: list[int]


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply_batch` wrote."""

    added: int
    duplicates: int  # records of the batch held already
    last_seq: int  # the arrival number of the last record written (0: none)
    floor: int  # the clock floor the transaction read or raised (0: neither)
    runs: list[tuple[int, list[Segment]]]  # each log's segments written, by first seq


class Forked(Exception):
    """Internal: the batch proves forks; its transaction must roll back."""

    def __init__(self, forks: list[Fork]) -> None:
        super().__init__(f"{len(forks)} forks")
        self.forks = forks


def apply_batch(
    db: sqlite3.Connection,
    prepared: Prepared,
    unsaved_keys: Mapping[bytes, bytes],
    floor_seen: int,
    max_ahead_ns: int,
) -> Applied:
    """Inside a write transaction: write the records of `prepared` not held yet,
    each log continuing its stored head; save the hosts' keys this store lacks and
    raise the clock floor to the batch's timestamps (unless `floor_seen`, a floor
    already read, is as high). Raises GapError, LogFrozen or Forked."""
    duplicates = added = 0
    runs: list[list[Segment]] = []
    forks: list[Fork] = []
    for log, parts in prepared.groups.items():
        head = unfrozen_head(db, log)
        found = prepared.hashes[log]
        fresh, fork = _unheld(db, log, head, parts, found, prepared.prevs[log])
        if fork:
            forks.append(fork)
            continue
        count = sum(part.count for part in fresh)
        duplicates += len(found) - count
        if fresh:
            runs.append(fresh)
            added += count
            db.execute(UPSERT_HEAD, (log.host, log.tag, fresh[-1].end, found[-1]))
    if forks:
        raise Forked(forks)
    last_seq = 0
    written: list[tuple[int, list[Segment]]] = []
    for run in runs:
        first_seq = write_segments(db, run)
        written.append((first_seq, run))
        last_seq = first_seq + sum(part.count for part in run) - 1
    save_keys(db, unsaved_keys)
    floor = _observe(db, prepared.timestamps, floor_seen, max_ahead_ns)
    return Applied(added, duplicates, last_seq, floor, written)


def keep_evidence(db: sqlite3.Connection, keys: Mapping[bytes, bytes], forks: list[Fork]) -> None:
    """Inside a write transaction: the forks' evidence, their logs frozen, and the
    keys that prove them."""
    save_keys(db, keys)
    keep_forks(db, forks)


def save_keys(db: sqlite3.Connection, keys: Mapping[bytes, bytes]) -> None:
    if keys:
        db.executemany(SAVE_KEY, list(keys.items()))


def _unheld(
    db: sqlite3.Connection,
    log: LogKey,
    head: Head,
    parts: list[Segment],
    found: list[bytes],
    prev: bytes,
) -> tuple[list[Segment], Fork | None]:
    """The segments of `parts` (cut) not yet held, or the fork they prove."""
    first = parts[0].first_idx
    if first > head.next_idx:
        raise GapError(
            f"log {log}: batch starts at idx {first} but this node expects idx {head.next_idx}",
            expected_idx=head.next_idx,
        )
    held = head.next_idx - first
    if held > 0:
        for offset, digest in enumerate(_stored_hashes(db, log, first, min(held, len(found)))):
            if digest != found[offset]:
                return [], Fork(log, first + offset, digest, _records(parts)[offset:])
        total = sum(part.count for part in parts)
        return take_range(parts, first + held, total - held), None
    if prev != head.head_hash:
        return [], Fork(log, first - 1, head.head_hash, _records(parts))
    return parts, None


def _stored_hashes(db: sqlite3.Connection, log: LogKey, start: int, count: int) -> list[bytes]:
    """Hashes of records already held (to spot forks)."""
    rows = db.execute(SEGMENTS_OF, range_params(log.host, log.tag, start, count)).fetchall()
    return [digest for piece in pieces(rows, start, count) for digest in hashes(piece)]


def _observe(db: sqlite3.Connection, stamps: Sequence[int], floor_seen: int, ahead: int) -> int:
    """Raise the clock floor to the timestamps seen (those not too far ahead); the
    floor read, or 0 when `floor_seen` is already as high (nothing read)."""
    if max(stamps, default=0) <= floor_seen:
        return 0  # the floor only rises, and it is already at least this high
    row = db.execute(CLOCK_FLOOR).fetchone()
    floor = int(row[0]) if row and row[0] is not None else 0
    new_floor = clock.observe(floor, stamps, clock.wall_clock_ns(), ahead)
    if new_floor != floor:
        db.execute(RAISE_CLOCK_FLOOR, (new_floor,))
    return new_floor


def _records(parts: Sequence[Segment]) -> list[Record]:
    """The records of `parts`, decoded (fork evidence is kept as records)."""
    return [record for part in parts for record in part.records()]
