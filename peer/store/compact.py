"""Merging a log's small segments into larger ones, in the background (issue 17).

Single appends and live traffic write a row per write: `segments.write_segments` merges
a run into its log's last segment only while that is under MERGE_BELOW (rewriting more
would make every single append slower), so a log written a record at a time is left in
rows of a few KiB. `compact_step` merges runs of consecutive small segments of one log
(each under SMALL_BYTES) into one row, up to the caps of a segment, a bounded amount per
transaction. The bytes are joined as they are: a segment is the concatenation of its
entries and ends on a signed record, so two consecutive segments joined are one;
nothing is decoded, re-hashed or re-signed.

A merge is one transaction (the first row takes the data of the group, the others are
deleted), so compaction killed at any point leaves every record in exactly one row;
arrival numbers live in `arrivals` and do not move. Synchronous on the writer's thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from peer.store.segments import SEGMENT_BYTES, SEGMENT_RECORDS

SMALL_BYTES = 64 << 10  # a segment under this is merged with its small neighbours
STEP_ROWS = 2048  # segment rows looked at per transaction
STEP_BYTES = 8 << 20  # at most this much data rewritten per transaction (tens of ms)

Cursor = tuple[bytes, str, int]  # (host, tag, first_idx): the last segment row decided
START: Cursor = (b"", "", -1)

_NEXT_ROWS = (
    "SELECT seq, host, tag, first_idx, count, length(data) FROM segments "
    "WHERE (host, tag, first_idx) > (?, ?, ?) ORDER BY host, tag, first_idx LIMIT ?"
)
_MERGE = "UPDATE segments SET count = ?, data = ? WHERE seq = ?"

Row = tuple[int, bytes, str, int, int, int]  # seq, host, tag, first_idx, count, bytes


@dataclass(frozen=True, slots=True)
class Step:
    """What one transaction of compaction did, and where the next one starts
    (`after` None: the whole store was looked at)."""

    merged: int  # segment rows merged into others (the store has that many fewer)
    rewritten: int  # bytes of data written again
    after: Cursor | None


def compact_step(db: sqlite3.Connection, after: Cursor = START) -> Step:
    """Inside a write transaction: merge the runs of small segments found in the next
    STEP_ROWS rows after `after` (at most about STEP_BYTES of them)."""
    rows: list[Row] = db.execute(_NEXT_ROWS, (*after, STEP_ROWS)).fetchall()
    groups, cursor = _groups(rows, more=len(rows) == STEP_ROWS)
    merged = rewritten = 0
    for group in groups:
        rewritten += _merge(db, group)
        merged += len(group) - 1
        if rewritten >= STEP_BYTES:
            last = group[-1]
            cursor = (last[1], last[2], last[3])
            break
    return Step(merged, rewritten, cursor)


def _groups(rows: Sequence[Row], *, more: bool) -> tuple[list[list[Row]], Cursor | None]:
    """Runs of two or more consecutive small segments of one log, within the caps of
    one segment; and the cursor after what was decided. When more rows may follow,
    the run still open at the end waits for the next step (which sees all of it);
    if it is all this step saw, it is merged as it stands first (each step merges
    something, or moves on)."""
    groups: list[list[Row]] = []
    group: list[Row] = []
    records = size = 0  # of `group`
    for row in rows:
        if group and _joins(group[-1], row, records, size):
            group.append(row)
            records, size = records + row[4], size + row[5]
            continue
        if len(group) > 1:
            groups.append(group)
        group, records, size = ([row], row[4], row[5]) if row[5] < SMALL_BYTES else ([], 0, 0)
    if not more:
        if len(group) > 1:
            groups.append(group)
        return groups, None
    if not rows:
        return groups, None
    if len(group) < 2 and (not group or group[0] is rows[0]):
        last = rows[-1]
        return groups, (last[1], last[2], last[3])
    if group[0] is rows[0]:
        groups.append(group)  # merged now, and seen again by the next step, to go on
    first = group[0]
    return groups, (first[1], first[2], first[3] - 1)  # the next step starts at the run


def _joins(last: Row, row: Row, records: int, size: int) -> bool:
    """Whether `row` continues a run ending with `last` (`records` and `size` so far):
    the same log, the next idx, small, and the whole within the caps of a segment."""
    return (
        row[1] == last[1]
        and row[2] == last[2]
        and row[3] == last[3] + last[4]
        and row[5] < SMALL_BYTES
        and records + row[4] <= SEGMENT_RECORDS
        and size + row[5] <= SEGMENT_BYTES
    )


def _merge(db: sqlite3.Connection, group: Sequence[Row]) -> int:
    """One row holding the records of `group` (consecutive segments of one log); the
    bytes written."""
    seqs = [row[0] for row in group]
    marks = ",".join("?" * len(seqs))
    parts = db.execute(
        f"SELECT data FROM segments WHERE seq IN ({marks}) ORDER BY first_idx", seqs
    ).fetchall()
    data = b"".join(part[0] for part in parts)
    db.execute(_MERGE, (sum(row[4] for row in group), data, seqs[0]))
    db.execute(f"DELETE FROM segments WHERE seq IN ({','.join('?' * (len(seqs) - 1))})", seqs[1:])
    return len(data)
