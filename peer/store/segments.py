"""Records as segment rows (`peer.segment`), and their arrival order.

A log is stored as rows of table `segments`, each a run of consecutive records
(`first_idx`, `count`, `data`): a row per write, not per record (issue 17). A run is
cut into segments of about SEGMENT_RECORDS records or SEGMENT_BYTES, each ending on a
signed record; a run that continues a small last segment of its log is merged into
it in the same transaction (single appends and live traffic write one record at a
time), so merging is as crash-safe as any write.

Arrival numbers (`seq`, for tail, --follow and the live feed) live in table
`arrivals`: one row per run as it arrived (`first_arrival`, `count`, log,
`first_idx`), extended in place while the same log keeps arriving. They cannot live
in `segments`: a merged segment holds records that arrived apart, with other logs'
records between them. Within a log, arrival order is idx order, which is what lets a
scan read each log's records once.

Everything here is synchronous on a `sqlite3.Connection` inside a write transaction
or a read: `core` runs it on the writer's thread, `direct` (the shell hook) directly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from peer.records import Record
from peer.segment import Segment, cut, entries, sizes

SEGMENT_RECORDS = 4096  # a segment is cut at the first signed record past this many...
SEGMENT_BYTES = 1 << 20  # ...or past this many bytes
MERGE_BELOW = 4 * 1024  # a last segment under this takes the next run of its log in
# (rewriting it costs: a single append paid 280 us with 4 KiB here, 470 us with 64 KiB)
MAX_SQL_INT = 2**63 - 1

# The segments holding idx ?3 up to (not including) ?4 of log (?1, ?2): the last
# one starting at or before ?3, and those after it (two searches of the unique index)
SEGMENTS_OF = (
    "SELECT first_idx, count, data FROM segments WHERE host = ?1 AND tag = ?2 "
    "AND first_idx >= coalesce((SELECT first_idx FROM segments WHERE host = ?1 AND tag = ?2 "
    "AND first_idx <= ?3 ORDER BY first_idx DESC LIMIT 1), ?3) "
    "AND first_idx < ?4 ORDER BY first_idx"
)
_LAST_SEGMENT = (
    "SELECT seq, first_idx, count, CASE WHEN length(data) < ? THEN data END "
    "FROM segments WHERE host = ? AND tag = ? ORDER BY first_idx DESC LIMIT 1"
)
_GROW_SEGMENT = "UPDATE segments SET count = ?, data = ? WHERE seq = ?"
INSERT_SEGMENT = "INSERT INTO segments (host, tag, first_idx, count, data) VALUES (?,?,?,?,?)"
_LAST_ARRIVAL = (
    "SELECT first_arrival, count, host, tag, first_idx FROM arrivals "
    "ORDER BY first_arrival DESC LIMIT 1"
)
_GROW_ARRIVAL = "UPDATE arrivals SET count = count + ? WHERE first_arrival = ?"
INSERT_ARRIVAL = (
    "INSERT INTO arrivals (first_arrival, count, host, tag, first_idx) VALUES (?,?,?,?,?)"
)
# Runs of arrival numbers from the one holding ?1 + 1 on, oldest first
ARRIVALS_AFTER = (
    "SELECT first_arrival, count, host, tag, first_idx FROM arrivals WHERE first_arrival >= "
    "coalesce((SELECT first_arrival FROM arrivals WHERE first_arrival <= ?1 + 1 "
    "ORDER BY first_arrival DESC LIMIT 1), 0)"
)
ARRIVALS_NEWEST = "SELECT first_arrival, count FROM arrivals"

Run = tuple[int, int, bytes, str, int]  # first_arrival, count, host, tag, first_idx


def range_params(host: bytes, tag: str, start: int, limit: int) -> tuple[object, ...]:
    """SEGMENTS_OF's parameters for `limit` records from idx `start` (kept in range of
    SQLite's integers: callers ask for 'all' with huge limits)."""
    return (host, tag, start, min(start + limit, MAX_SQL_INT))


def pieces(rows: Sequence[Sequence[object]], start: int, limit: int) -> list[bytes]:
    """The parts of SEGMENTS_OF's rows that hold idx `start` up to `start + limit`, in
    order; stops at a gap (there is none in a sound store)."""
    return [data for _, _, data in slices(rows, start, limit)]


def slices(
    rows: Sequence[Sequence[object]], start: int, limit: int
) -> list[tuple[int, int, bytes]]:
    """(first idx, count, segment bytes) of the parts of SEGMENTS_OF's rows that hold
    idx `start` up to `start + limit`, in order; stops at a gap (none in a sound store)."""
    end = start + limit
    found: list[tuple[int, int, bytes]] = []
    expected = start
    for first, count, data in rows:
        assert isinstance(first, int) and isinstance(count, int) and isinstance(data, bytes)
        if first > expected or expected >= end:
            break
        skip, take = expected - first, min(end, first + count) - expected
        if take > 0:
            found.append(
                (expected, take, data if skip == 0 and take == count else cut(data, skip, take))
            )
            expected += take
    return found


def cut_signed(encoded: Sequence[bytes], signed: Sequence[int]) -> list[tuple[int, int]]:
    """Where a run of one log's entries (`encoded`; `signed`: the positions of its
    signed records, ascending) is cut into segments, as (begin, end) positions: each
    ends on a signed record once it holds SEGMENT_RECORDS records or SEGMENT_BYTES
    (the last as it ends). A step per signature, not per record."""
    found: list[tuple[int, int]] = []
    begin = size = counted = 0
    for n in signed:
        size += sum(map(len, encoded[counted : n + 1]))
        counted = n + 1
        if n + 1 - begin >= SEGMENT_RECORDS or size >= SEGMENT_BYTES:
            found.append((begin, n + 1))
            begin, size = n + 1, 0
    if begin < len(encoded):
        found.append((begin, len(encoded)))
    return found


def parts_of(
    host: bytes, tag: str, first_idx: int, encoded: Sequence[bytes], signed: Sequence[int]
) -> list[Segment]:
    """A run of one log's entries from idx `first_idx` as segments (`cut_signed`)."""
    return [
        Segment(host, tag, first_idx + begin, end - begin, b"".join(encoded[begin:end]))
        for begin, end in cut_signed(encoded, signed)
    ]


def as_parts(records: Sequence[Record]) -> list[Segment]:
    """`records` (one log's run) as segments."""
    first = records[0]
    signed = [n for n, record in enumerate(records) if record.sig]
    return parts_of(first.host, first.tag, first.idx, entries(records), signed)


def write_segments(
    db: sqlite3.Connection, parts: Sequence[Segment], *, at_caps: bool = False
) -> int:
    """Inside a write transaction: store `parts` (consecutive segments of one log, each
    ending signed, continuing it) as they are, a part over the caps cut at its signed
    records (unless `at_caps`: `as_parts` cut them so, from the entries' lengths, and
    a second cut would walk every entry again); the first merged into the log's last
    segment while that is small. Gives them arrival numbers; returns the first one."""
    first = parts[0]
    host, tag = first.host, first.tag
    pieces = list(parts) if at_caps else [p for part in parts for p in _within_caps(part)]
    last = db.execute(_LAST_SEGMENT, (MERGE_BELOW, host, tag)).fetchone()
    rows: list[tuple[object, ...]] = []
    head = pieces[0]
    if last is not None and _fits(last, head):
        seq, _, count, held = last
        db.execute(_GROW_SEGMENT, (count + head.count, held + head.data, seq))
    else:
        rows.append((host, tag, head.first_idx, head.count, head.data))
    rows += [(host, tag, p.first_idx, p.count, p.data) for p in pieces[1:]]
    db.executemany(INSERT_SEGMENT, rows)
    return _arrive(db, host, tag, first.first_idx, sum(part.count for part in parts))


def _within_caps(part: Segment) -> list[Segment]:
    """`part` cut, at signed records, into segments of SEGMENT_RECORDS / SEGMENT_BYTES
    (a received segment may be longer: up to a message)."""
    if part.count <= SEGMENT_RECORDS and len(part.data) <= SEGMENT_BYTES:
        return [part]
    found: list[Segment] = []
    begin = size = 0
    for n, (length, signed) in enumerate(sizes(part.data)):
        size += length
        if signed and (n + 1 - begin >= SEGMENT_RECORDS or size >= SEGMENT_BYTES):
            found.append(part.slice(begin, n + 1 - begin))
            begin, size = n + 1, 0
    if begin < part.count:
        found.append(part.slice(begin, part.count - begin))
    return found


def _fits(last: Sequence[object], part: Segment) -> bool:
    """Whether `part` may join the log's last segment: it continues it, that segment
    is small (its data was read) and the two stay within the caps."""
    _, first, count, held = last
    assert isinstance(first, int) and isinstance(count, int)
    return (
        isinstance(held, bytes)
        and first + count == part.first_idx
        and count + part.count <= SEGMENT_RECORDS
        and len(held) + len(part.data) <= SEGMENT_BYTES
    )


def _arrive(db: sqlite3.Connection, host: bytes, tag: str, first_idx: int, count: int) -> int:
    """Arrival numbers for `count` records of a log from `first_idx`: the next ones,
    extending the newest run when it is the same log's, right before these."""
    last = db.execute(_LAST_ARRIVAL).fetchone()
    if last is None:
        arrival = 1  # as the rowid of the table of records before segments began
    else:
        arrival = last[0] + last[1]
        if (last[2], last[3], last[4] + last[1]) == (host, tag, first_idx):
            db.execute(_GROW_ARRIVAL, (count, last[0]))
            return int(arrival)
    db.execute(INSERT_ARRIVAL, (arrival, count, host, tag, first_idx))
    return int(arrival)


def wanted_idx(runs: Sequence[Run], after: int, limit: int) -> list[tuple[int, Run, int, int]]:
    """For the first `limit` records of `runs` that arrived after `after`: (their
    first arrival number, run, first idx, count), a part of each run, oldest first."""
    parts: list[tuple[int, Run, int, int]] = []
    left = limit
    for run in runs:
        first_arrival, count, _, _, first_idx = run
        skip = max(0, after + 1 - first_arrival)
        take = min(count - skip, left)
        if take <= 0:
            continue
        parts.append((first_arrival + skip, run, first_idx + skip, take))
        left -= take
        if not left:
            break
    return parts


def arrival_back(runs: Sequence[tuple[int, int]], back: int) -> int:
    """The arrival number `back` records before the newest, from runs newest first
    (0 if there are fewer records)."""
    for first_arrival, count in runs:
        if back < count:
            return int(first_arrival + count - 1 - back)
        back -= count
    return 0
