"""The view tables (kv, history) and their per-log cursors: SQL only, no decryption.

What a record *means* is decided above the store (`peer.apps`); this module only
writes decided rows and reads them back. Applying is order-independent, so records
of different logs may arrive in any order and still give one result:
- a kv row is replaced only by a greater `(timestamp, host, idx)`; deletes are
  tombstone rows (value NULL), so a late, older set still loses;
- a history delete keeps its id in `history_deleted` for good, and a create of a
  deleted id is ignored, whichever arrives first.
`apply` moves the log's cursor in the same transaction as the rows, and refuses a
chunk that does not start at the cursor (another process applied it first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peer.records import LogKey
from peer.store.sqlite import Database, scalar

if TYPE_CHECKING:
    from peer.store.stats import Stats

_KV_UPSERT = (
    "INSERT INTO kv (ns, key, value, timestamp, host, idx) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, "
    "timestamp = excluded.timestamp, host = excluded.host, idx = excluded.idx "
    "WHERE (excluded.timestamp, excluded.host, excluded.idx) > (kv.timestamp, kv.host, kv.idx)"
)
_HISTORY_COLUMNS = "id, command, cwd, exit, duration, timestamp, hostname, session"
_HISTORY_CREATE = (
    f"INSERT INTO history ({_HISTORY_COLUMNS}, record_timestamp, host, idx) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 "
    "WHERE NOT EXISTS (SELECT 1 FROM history_deleted WHERE id = ?1) "
    "ON CONFLICT (id) DO UPDATE SET command = excluded.command, cwd = excluded.cwd, "
    "exit = excluded.exit, duration = excluded.duration, timestamp = excluded.timestamp, "
    "hostname = excluded.hostname, session = excluded.session, "
    "record_timestamp = excluded.record_timestamp, host = excluded.host, idx = excluded.idx "
    "WHERE (excluded.record_timestamp, excluded.host, excluded.idx) "
    "> (history.record_timestamp, history.host, history.idx)"
)
_CURSOR_ADVANCE = (
    "INSERT INTO view_cursors (host, tag, next_idx, undecryptable, unknown_version, malformed) "
    "VALUES (?,?,?,?,?,?) ON CONFLICT (host, tag) DO UPDATE SET next_idx = excluded.next_idx, "
    "undecryptable = undecryptable + excluded.undecryptable, "
    "unknown_version = unknown_version + excluded.unknown_version, "
    "malformed = malformed + excluded.malformed"
)
_IN_CHUNK = 500  # ids per `IN (...)` query


@dataclass(frozen=True, slots=True)
class KvItem:
    """The current value of one key, and the record that set it."""

    ns: str
    key: str
    value: bytes
    timestamp: int
    host: bytes


@dataclass(frozen=True, slots=True)
class KvRow:
    """One kv record, decided: a set (value) or a delete (value None)."""

    ns: str
    key: str
    value: bytes | None
    timestamp: int
    host: bytes
    idx: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One shell command as the history view holds it (times in ns since the epoch)."""

    id: str
    command: str
    cwd: str
    exit: int | None
    duration: int | None
    timestamp: int
    hostname: str
    session: str

    def as_json(self) -> dict[str, object]:
        """Its fields as a JSON object, in their order (payloads and `--json` output)."""
        return {
            "id": self.id,
            "command": self.command,
            "cwd": self.cwd,
            "exit": self.exit,
            "duration": self.duration,
            "timestamp": self.timestamp,
            "hostname": self.hostname,
            "session": self.session,
        }


@dataclass(frozen=True, slots=True)
class HistoryCreate:
    """A history create record, decided: the entry and the record's order."""

    entry: HistoryEntry
    timestamp: int
    host: bytes
    idx: int


@dataclass(frozen=True, slots=True)
class HistoryDelete:
    """A history delete record, decided: the id of the entry it deletes."""

    entry_id: str


Decision = KvRow | HistoryCreate | HistoryDelete  # what one app record does to the views


@dataclass(frozen=True, slots=True)
class Skipped:
    """Records the views passed over, by reason."""

    undecryptable: int = 0
    unknown_version: int = 0
    malformed: int = 0

    @property
    def total(self) -> int:
        return self.undecryptable + self.unknown_version + self.malformed

    def __add__(self, other: Skipped) -> Skipped:
        return Skipped(
            self.undecryptable + other.undecryptable,
            self.unknown_version + other.unknown_version,
            self.malformed + other.malformed,
        )


@dataclass(frozen=True, slots=True)
class ViewChunk:
    """Records `start <= idx < end` of one log, decided, ready to apply at once."""

    log: LogKey
    start: int
    end: int
    kv: Sequence[KvRow] = ()
    creates: Sequence[HistoryCreate] = ()
    deletes: Sequence[str] = ()
    skipped: Skipped = field(default_factory=Skipped)

    @classmethod
    def of(
        cls, log: LogKey, start: int, end: int, decisions: Sequence[Decision], skipped: Skipped
    ) -> ViewChunk:
        """A chunk from the decisions of its records, each to the table it changes."""
        kv = [d for d in decisions if isinstance(d, KvRow)]
        creates = [d for d in decisions if isinstance(d, HistoryCreate)]
        deletes = [d.entry_id for d in decisions if isinstance(d, HistoryDelete)]
        return cls(log, start, end, kv, creates, deletes, skipped)


@dataclass(frozen=True, slots=True)
class Pending:
    """A log the views have not caught up with: applied below `applied`, held below `held`."""

    log: LogKey
    applied: int
    held: int


class Views:
    """Read and change the view tables of one store."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def pending(self, tags: Iterable[str]) -> list[Pending]:
        """Logs with these tags holding records past their cursor (from `heads`, no scan)."""
        tags = sorted(tags)
        marks = ",".join("?" * len(tags))
        rows = await self._database.fetch(
            "SELECT h.host, h.tag, coalesce(c.next_idx, 0), h.next_idx FROM heads h "
            "LEFT JOIN view_cursors c ON c.host = h.host AND c.tag = h.tag "
            f"WHERE h.tag IN ({marks}) AND h.next_idx > coalesce(c.next_idx, 0) "
            "ORDER BY h.host, h.tag",
            tags,
        )
        return [Pending(LogKey(host, tag), applied, held) for host, tag, applied, held in rows]

    async def apply(self, chunk: ViewChunk) -> bool:
        """Apply a chunk and move its cursor in one transaction.

        False (nothing written) if the cursor is not at `chunk.start`: another
        process applied these records first.
        """
        log = chunk.log
        async with self._database.write() as db:
            cursor = await scalar(db, CURSOR_OF, (log.host, log.tag))
            if cursor != chunk.start:
                return False
            for sql, rows in apply_statements(chunk):
                await db.executemany(sql, rows)
        return True

    async def clear(self) -> None:
        """Drop every view row and cursor in one transaction (before a full rebuild)."""
        async with self._database.write() as db:
            for table in ("kv", "history", "history_deleted", "view_cursors"):
                await db.execute(f"DELETE FROM {table}")

    async def skipped(self) -> Skipped:
        """Records passed over so far, over all logs."""
        rows = await self._database.fetch(
            "SELECT coalesce(sum(undecryptable), 0), coalesce(sum(unknown_version), 0), "
            "coalesce(sum(malformed), 0) FROM view_cursors"
        )
        return Skipped(*rows[0])

    async def applied(self) -> int:
        """Records applied (or skipped) over all logs: the sum of the cursors."""
        return await self._database.read_scalar(
            "SELECT coalesce(sum(next_idx), 0) FROM view_cursors"
        )

    async def sizes(self) -> tuple[int, int]:
        """(live kv keys, history entries)."""
        keys = await self._database.read_scalar("SELECT count(*) FROM kv WHERE value IS NOT NULL")
        entries = await self._database.read_scalar("SELECT count(*) FROM history")
        return keys, entries

    # -- kv ----------------------------------------------------------------------

    async def kv_get(self, ns: str, key: str) -> bytes | None:
        """The live value of a key, or None if it was never set or is deleted."""
        rows = await self._database.fetch(
            "SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)
        )
        return None if not rows or rows[0][0] is None else bytes(rows[0][0])

    async def kv_list(self, ns: str | None = None) -> list[KvItem]:
        """Live keys (tombstones left out), by namespace and key."""
        where, params = "value IS NOT NULL", list[object]()
        if ns is not None:
            where, params = where + " AND ns = ?", [ns]
        rows = await self._database.fetch(
            f"SELECT ns, key, value, timestamp, host FROM kv WHERE {where} ORDER BY ns, key",
            params,
        )
        return [KvItem(n, k, bytes(v), t, h) for n, k, v, t, h in rows]

    async def kv_rows(self) -> list[KvRow]:
        """Every row, tombstones included (to compare two views exactly)."""
        rows = await self._database.fetch(
            "SELECT ns, key, value, timestamp, host, idx FROM kv ORDER BY ns, key"
        )
        return [KvRow(n, k, None if v is None else bytes(v), t, h, i) for n, k, v, t, h, i in rows]

    # -- history -----------------------------------------------------------------

    async def history_list(self, limit: int | None = None) -> list[HistoryEntry]:
        """The newest `limit` entries (all if None), oldest first."""
        rows = await self._database.fetch(
            f"SELECT {_HISTORY_COLUMNS} FROM history ORDER BY timestamp DESC, id DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [HistoryEntry(*row) for row in reversed(rows)]

    async def history_search(self, text: str, limit: int | None = None) -> list[HistoryEntry]:
        """Entries whose command contains `text` (case-sensitive), newest first."""
        rows = await self._database.fetch(
            f"SELECT {_HISTORY_COLUMNS} FROM history WHERE instr(command, ?) > 0 "
            "ORDER BY timestamp DESC, id DESC LIMIT ?",
            (text, -1 if limit is None else limit),
        )
        return [HistoryEntry(*row) for row in rows]

    async def history_get(self, entry_id: str) -> HistoryEntry | None:
        rows = await self._database.fetch(
            f"SELECT {_HISTORY_COLUMNS} FROM history WHERE id = ?", (entry_id,)
        )
        return HistoryEntry(*rows[0]) if rows else None

    async def history_stats(self, top: int) -> Stats:
        """Totals, the `top` most run commands (by first word), each host."""
        from peer.store.stats import COMMANDS_SQL, HOSTS_SQL, TOTAL_SQL, Count, Stats

        total = Count(*(await self._database.fetch(TOTAL_SQL))[0])
        commands = await self._database.fetch(COMMANDS_SQL, (top,))
        hosts = await self._database.fetch(HOSTS_SQL)
        return Stats(total, [Count(*r) for r in commands], [Count(*r) for r in hosts])

    async def history_known(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the view holds, as entries or as deleted ids."""
        known: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            rows = await self._database.fetch(
                f"SELECT id FROM history WHERE id IN ({marks}) "
                f"UNION SELECT id FROM history_deleted WHERE id IN ({marks})",
                [*part, *part],
            )
            known.update(row[0] for row in rows)
        return known

    async def history_deleted(self) -> list[str]:
        rows = await self._database.fetch("SELECT id FROM history_deleted ORDER BY id")
        return [row[0] for row in rows]


CURSOR_OF = "SELECT next_idx FROM view_cursors WHERE host = ? AND tag = ?"


def apply_statements(chunk: ViewChunk) -> list[tuple[str, list[tuple[object, ...]]]]:
    """What applying `chunk` writes, as (SQL, rows) pairs for `executemany`, the
    cursor's move last: run inside one transaction, once the cursor is read as
    `chunk.start` (`Views.apply`, and `direct` for the shell hook's append)."""
    statements: list[tuple[str, list[tuple[object, ...]]]] = []
    if chunk.kv:
        statements.append((_KV_UPSERT, [_kv_params(row) for row in chunk.kv]))
    if chunk.creates:
        statements.append((_HISTORY_CREATE, [_create_params(c) for c in chunk.creates]))
    if chunk.deletes:
        ids: list[tuple[object, ...]] = [(i,) for i in chunk.deletes]
        statements.append(("INSERT OR IGNORE INTO history_deleted (id) VALUES (?)", ids))
        statements.append(("DELETE FROM history WHERE id = ?", ids))
    s, log = chunk.skipped, chunk.log
    cursor = (log.host, log.tag, chunk.end, s.undecryptable, s.unknown_version, s.malformed)
    statements.append((_CURSOR_ADVANCE, [cursor]))
    return statements


def _kv_params(row: KvRow) -> tuple[object, ...]:
    return (row.ns, row.key, row.value, row.timestamp, row.host, row.idx)


def _create_params(create: HistoryCreate) -> tuple[object, ...]:
    e = create.entry
    return (
        e.id,
        e.command,
        e.cwd,
        e.exit,
        e.duration,
        e.timestamp,
        e.hostname,
        e.session,
        create.timestamp,
        create.host,
        create.idx,
    )
