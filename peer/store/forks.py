"""Fork evidence: kept when a host signed two different records at one idx.

The conflicting chain is stored whole (it carries its own proof: links and a
signature), and the log is frozen in the same transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from peer.records import LogKey, Record
from peer.store.rows import RECORD_COLUMNS, from_row, to_row
from peer.store.sqlite import Database


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Two authentic records of one host at one idx: ours, and the conflicting chain."""

    log: LogKey
    idx: int
    held_hash: bytes
    offered: tuple[Record, ...]
    detected_at: int


@dataclass(frozen=True, slots=True)
class Fork:
    """A fork found while applying a batch, before it is kept."""

    log: LogKey
    idx: int
    held_hash: bytes
    offered: list[Record]


def keep_forks(db: sqlite3.Connection, forks: Sequence[Fork]) -> None:
    """Inside a write transaction: store the evidence and freeze the logs."""
    now = time.time_ns()
    for fork in forks:
        cursor = db.execute(
            "INSERT INTO forks (host, tag, idx, held_hash, detected_at) VALUES (?,?,?,?,?)",
            (fork.log.host, fork.log.tag, fork.idx, fork.held_hash, now),
        )
        db.executemany(
            f"INSERT INTO fork_records (fork_id, position, {RECORD_COLUMNS}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(cursor.lastrowid, n, *to_row(r)) for n, r in enumerate(fork.offered)],
        )
        db.execute(
            "UPDATE heads SET frozen = 1 WHERE host = ? AND tag = ?",
            (fork.log.host, fork.log.tag),
        )


async def read_forks(database: Database) -> list[ForkEvidence]:
    """All fork evidence held, oldest first."""
    forks = await database.fetch(
        "SELECT fork_id, host, tag, idx, held_hash, detected_at FROM forks ORDER BY fork_id"
    )
    evidence: list[ForkEvidence] = []
    for fork_id, host, tag, idx, held, when in forks:
        rows = await database.fetch(
            f"SELECT {RECORD_COLUMNS} FROM fork_records WHERE fork_id = ? ORDER BY position",
            (fork_id,),
        )
        offered = tuple(from_row(row) for row in rows)
        evidence.append(ForkEvidence(LogKey(host, tag), idx, held, offered, when))
    return evidence
