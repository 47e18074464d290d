"""Records <-> rows of a record per row (fork evidence, and the `records` table of
stores before segments), and the statements of a local append, shared by `core`
(async) and `direct` (the shell hook)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from peer import clock
from peer.errors import InvalidRecord, LogFrozen
from peer.records import MAX_IDX, Head, LogKey, Record
from peer.segment import Segment
from peer.store.segments import parts_of, write_segments

if TYPE_CHECKING:
    from peer.crypto import Author, Sealed

RECORD_COLUMNS = "host, tag, idx, id, timestamp, version, payload, wrapped_key, prev, sig"
HEAD_OF = "SELECT next_idx, head_hash, frozen FROM heads WHERE host = ? AND tag = ?"
UPSERT_HEAD = (
    "INSERT INTO heads (host, tag, next_idx, head_hash) VALUES (?,?,?,?) "
    "ON CONFLICT (host, tag) DO UPDATE SET next_idx = excluded.next_idx, "
    "head_hash = excluded.head_hash"
)
CLOCK_FLOOR = "SELECT value FROM meta WHERE key = 'clock'"  # the clock's state (peer.clock)
RAISE_CLOCK_FLOOR = (
    "INSERT INTO meta (key, value) VALUES ('clock', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
)


def to_row(record: Record) -> tuple[object, ...]:
    return (
        record.host,
        record.tag,
        record.idx,
        record.id,
        record.timestamp,
        record.version,
        record.payload,
        record.wrapped_key,
        record.prev,
        record.sig,
    )


def from_row(row: Sequence[object]) -> Record:
    host, tag, idx, rid, timestamp, version, payload, wrapped_key, prev, sig = row
    return Record(rid, host, tag, idx, timestamp, version, payload, wrapped_key, prev, sig)  # type: ignore[arg-type]


def append_rows(
    db: sqlite3.Connection,
    author: Author,
    log: LogKey,
    plaintexts: Sequence[bytes],
    ahead: Sealed | None = None,
) -> tuple[Sealed, list[Segment], int, int]:
    """Inside a write transaction: seal, chain and write records continuing `log`
    (the author's own), and raise the clock floor; returns them as sealed and as the
    segments stored, the new floor and the arrival number (seq) of the last (theirs
    are consecutive: the transaction holds the write lock). Synchronous: a whole
    append is one trip to SQLite's thread.

    `ahead`: the same plaintexts sealed before the transaction, on a guess of the
    log's head and the clock floor (a bulk append seals a chunk while the one before
    is written); written as they are when the guess holds, else sealed again here."""
    head = _writable_head(db, log, len(plaintexts))
    row = db.execute(CLOCK_FLOOR).fetchone()
    floor = int(row[0]) if row and row[0] is not None else 0
    if ahead is not None and ahead.after == head and ahead.written.timestamps[0] > floor:
        sealed = ahead
    else:
        stamps = clock.ticks(floor, clock.wall_clock_ns(), len(plaintexts))
        sealed = author.seal(log.tag, head, stamps, plaintexts)
    floor = sealed.written.timestamps[-1]
    db.execute(RAISE_CLOCK_FLOOR, (floor,))
    parts = parts_of(log.host, log.tag, head.next_idx, sealed.entries, sealed.signed)
    last_seq = write_segments(db, parts, at_caps=True) + sealed.count - 1
    db.execute(UPSERT_HEAD, (log.host, log.tag, head.next_idx + sealed.count, sealed.head_hash))
    return sealed, parts, floor, last_seq


def _writable_head(db: sqlite3.Connection, log: LogKey, count: int) -> Head:
    """The stored head of `log`, which must take `count` more records."""
    head = unfrozen_head(db, log)
    if head.next_idx + count - 1 > MAX_IDX:
        raise InvalidRecord(f"log {log} is full: idx would pass {MAX_IDX}")
    return head


def unfrozen_head(db: sqlite3.Connection, log: LogKey) -> Head:
    """The stored head of `log`; LogFrozen if it holds fork evidence."""
    head, frozen = head_of_row(db.execute(HEAD_OF, (log.host, log.tag)).fetchone())
    if frozen:
        raise LogFrozen(f"log {log} holds fork evidence; it accepts no more records")
    return head


def head_of_row(row: Sequence[object] | None) -> tuple[Head, bool]:
    """A row of HEAD_OF as (head, frozen); no row: a log not held yet."""
    if row is None:
        return Head(0), False
    next_idx, head_hash, frozen = row
    assert isinstance(next_idx, int) and isinstance(head_hash, bytes)
    return Head(next_idx, head_hash), bool(frozen)
