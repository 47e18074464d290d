"""Duplicates cost nothing: the records of a received batch that this store holds
already are left out by one plain read, before any verification, without a write
transaction.

A record's hash covers its `prev`. So a run of records of one log at held idx, each
linked to the one before it (next idx, `prev` its hash), whose last record hashes to the
hash held at that idx, is the run held, record for record (identical by hash to records
this store authenticated when it stored them; the signature is the one field a hash
leaves out, and nothing of the offered copy is stored). One stored hash per log is read
for that: the head's (in `heads`) when the run reaches the head, the most common case;
else the record held at the run's last idx, re-hashed.

Anything else stays in the batch for the full path, which judges it exactly as before:
a different record at a held idx (a fork, whose evidence is kept), a broken link, a log
frozen here, records past the head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256

from peer.records import HASH_LEN, LogKey
from peer.segment import Segment, Segments, hashes, walk
from peer.store.segments import pieces
from peer.store.sqlite import Database

_CHUNK = 500  # logs per query: 1,500 parameters at most, far under SQLite's limit


@dataclass(frozen=True, slots=True)
class Unheld:
    """A received batch with the records held here left out."""

    records: Segments  # the rest, in the batch's order: to verify and write
    received: dict[LogKey, int]  # records of the batch per log, held or not
    known: dict[LogKey, int]  # records left out per log: held here already

    @property
    def duplicates(self) -> int:
        return sum(self.known.values())


def held_count(first_idx: int, count: int, next_idx: int) -> int:
    """How many leading records of one log's run sit at idx below `next_idx`."""
    return max(0, min(next_idx - first_idx, count))


def same_as_held(parts: Sequence[Segment], count: int, held_hash: bytes) -> bool:
    """Whether the first `count` records of `parts` (one log's run) are the run held
    whose last record hashes to `held_hash`: each links to the one before it, and the
    last one's hash is `held_hash`. No signature is checked: held records were
    authenticated when they were stored. Hashes slices: nothing is decoded."""
    digest = b""
    left = count
    for part in parts:
        if part.first_idx != parts[0].first_idx + count - left:
            return False
        data, view = part.data, memoryview(part.data)
        for start, end, _ in walk(data):
            if not left:
                return digest == held_hash
            if digest and data[end - HASH_LEN : end] != digest:
                return False
            digest = sha256(view[start:end]).digest()
            left -= 1
    return not left and digest == held_hash


async def leave_out_known(database: Database, batch: Segments) -> Unheld:
    """`batch` without the records held here (committed state, one read on the reader)."""
    groups: dict[LogKey, list[Segment]] = {}
    for part in batch.parts:
        groups.setdefault(part.log, []).append(part)
    received = {log: sum(p.count for p in parts) for log, parts in groups.items()}
    held = await _held(database, {log: parts[-1].end - 1 for log, parts in groups.items()})
    known: dict[LogKey, int] = {}
    for log, (next_idx, held_hash) in held.items():
        parts = groups[log]
        count = held_count(parts[0].first_idx, received[log], next_idx)
        if count and same_as_held(parts, count, held_hash):
            known[log] = count
    if not known:
        return Unheld(batch, received, known)
    return Unheld(_without(batch, known), received, known)


def _without(batch: Segments, known: Mapping[LogKey, int]) -> Segments:
    """`batch` minus the first `known[log]` records of each log's run."""
    left = dict(known)
    rest: list[Segment] = []
    for part in batch.parts:
        skip = left.get(part.log, 0)
        if skip >= part.count:
            left[part.log] = skip - part.count
            continue
        if skip:
            left[part.log] = 0
        rest.append(part.skip(skip))
    return Segments(rest)


async def _held(database: Database, last: Mapping[LogKey, int]) -> dict[LogKey, tuple[int, bytes]]:
    """For each log held here and not frozen (a frozen log takes the full path, which
    refuses it): its next idx, and the hash held at the last idx that a run ending at
    `last[log]` shares with it: the head's; or, if the run ends before the head, that
    of the record held at `last[log]`, sliced from its segment (read in the same
    query) and hashed."""
    found: dict[LogKey, tuple[int, bytes]] = {}
    items = list(last.items())
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        rows = await database.fetch(
            "SELECT h.host, h.tag, h.next_idx, h.head_hash, s.first_idx, s.count, s.data "
            f"FROM {_values(len(chunk), 3)} "
            "CROSS JOIN heads AS h ON h.host = w.column1 AND h.tag = w.column2 "
            "LEFT JOIN segments AS s ON s.host = h.host AND s.tag = h.tag "
            "AND w.column3 < h.next_idx - 1 AND s.first_idx = (SELECT first_idx FROM segments "
            "WHERE host = h.host AND tag = h.tag AND first_idx <= w.column3 "
            "ORDER BY first_idx DESC LIMIT 1) "
            "WHERE NOT h.frozen",
            [value for log, idx in chunk for value in (log.host, log.tag, idx)],
        )
        for host, tag, next_idx, head_hash, *segment in rows:
            log = LogKey(host, tag)
            if last[log] >= next_idx - 1:
                found[log] = (next_idx, head_hash)
            elif segment[0] is not None:  # (always: every idx below the head is held)
                (piece,) = pieces([segment], last[log], 1)
                found[log] = (next_idx, hashes(piece)[0])
    return found


def _values(rows: int, columns: int) -> str:
    """A table `w` of `rows` rows of parameters (columns `column1`...). Joined with
    CROSS JOIN, which keeps it first: each row is then one search of the table's
    unique index (a row-value `IN (VALUES ...)` scans the whole table instead)."""
    row = f"({', '.join('?' * columns)})"
    return f"(VALUES {', '.join([row] * rows)}) AS w"
