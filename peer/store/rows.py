"""Records <-> rows of the `records` table (the column order both ways), and the
statements of a local append, shared by `core` (async) and `direct` (the shell hook)."""

from __future__ import annotations

from collections.abc import Sequence

from peer.records import Record

RECORD_COLUMNS = "host, tag, idx, id, timestamp, version, payload, wrapped_key, prev, sig"
INSERT_RECORD = f"INSERT INTO records ({RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
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
