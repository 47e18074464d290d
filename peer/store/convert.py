"""Converting a store of a row per record (schema 6 and before) to segments.

Migration 6 creates `segments` and `arrivals`, migration 7 drops `records`. Between
the two, `convert_chunk` moves the rows of `records` a chunk at a time, each chunk one
transaction that writes its segments and arrival runs and deletes the rows it moved.
So a conversion killed at any point leaves a store that opens (at schema 6) and goes
on where it stopped; a store still at 6 is never written by the shell hook's fast path
(`direct` wants the latest schema), and every record is in exactly one of the tables.

A record keeps its arrival number: the `seq` of its row. A chunk is cut after a signed
record, so every segment ends on one, as the segments written since do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from peer.records import Record
from peer.store.rows import RECORD_COLUMNS, from_row
from peer.store.segments import INSERT_ARRIVAL, INSERT_SEGMENT, as_parts

CHUNK = 20_000  # records per transaction: a few MB written, a fraction of a second
CONVERTING = 6  # the schema version at which `records` and `segments` coexist
_NEXT_ROWS = f"SELECT seq, {RECORD_COLUMNS} FROM records ORDER BY host, tag, idx LIMIT ?"
_DELETE_RUN = "DELETE FROM records WHERE host = ? AND tag = ? AND idx >= ? AND idx <= ?"

Row = tuple[int, Record]  # seq, record


def convert_chunk(db: sqlite3.Connection) -> bool:
    """Inside a write transaction: move the next chunk of `records` rows into segments;
    False when there is nothing left to move (or the store is past the conversion)."""
    if db.execute("PRAGMA user_version").fetchone()[0] != CONVERTING:
        return False
    fetched = db.execute(_NEXT_ROWS, (CHUNK,)).fetchall()
    if not fetched:
        return False
    runs = _runs([(row[0], from_row(row[1:])) for row in fetched])
    if len(fetched) == CHUNK:  # the last log may go on past the chunk: stop at a signature
        runs[-1] = _to_last_signed(runs[-1])
        if not runs[-1][-1][1].sig and len(runs) > 1:
            runs.pop()  # none in what the chunk holds of it: all of it goes in the next
    for run in runs:
        _move(db, run)
    return True


def _runs(rows: Sequence[Row]) -> list[list[Row]]:
    """Rows (in host, tag, idx order) split per log."""
    runs: list[list[Row]] = []
    for row in rows:
        if runs and runs[-1][-1][1].log == row[1].log:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _to_last_signed(run: list[Row]) -> list[Row]:
    """`run` up to its last signed record (all of it if none is)."""
    for end in range(len(run), 0, -1):
        if run[end - 1][1].sig:
            return run[:end]
    return run


def _move(db: sqlite3.Connection, run: Sequence[Row]) -> None:
    """One log's rows as segments and arrival runs, and out of `records`."""
    records = [record for _, record in run]
    first = records[0]
    db.executemany(
        INSERT_SEGMENT,
        [(p.host, p.tag, p.first_idx, p.count, p.data) for p in as_parts(records)],
    )
    db.executemany(INSERT_ARRIVAL, _arrival_runs(run))
    db.execute(_DELETE_RUN, (first.host, first.tag, first.idx, records[-1].idx))


def _arrival_runs(run: Sequence[Row]) -> list[tuple[int, int, bytes, str, int]]:
    """The rows of `arrivals` for one log's rows: consecutive seq and idx make one."""
    arrivals: list[list[int]] = []  # first seq, count, first idx
    for seq, record in run:
        last = arrivals[-1] if arrivals else None
        if last and last[0] + last[1] == seq and last[2] + last[1] == record.idx:
            last[1] += 1
        else:
            arrivals.append([seq, 1, record.idx])
    host, tag = run[0][1].host, run[0][1].tag
    return [(seq, count, host, tag, idx) for seq, count, idx in arrivals]


BEFORE: dict[int, Callable[[sqlite3.Connection], bool]] = {7: convert_chunk}
"""Migration -> the step to run (a chunk per call, until it says False) before it."""
