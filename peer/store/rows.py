"""Records <-> rows of the `records` table (the column order both ways)."""

from __future__ import annotations

from collections.abc import Sequence

from peer.records import Record

RECORD_COLUMNS = "host, tag, idx, id, timestamp, version, payload, wrapped_key, prev, sig"


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
