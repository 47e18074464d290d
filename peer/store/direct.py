"""One store file through the standard library's sqlite3, for a process that lives for
one command: the shell hook's append (`peer history add`) and the history search.

Such a process must start fast, so it skips what a long-lived one needs (aiosqlite's
thread, asyncio, the store's caches) and keeps the same rules with the same SQL
(`rows`, `views`): the append allocates its idx, chains, stamps the clock and writes
in one `BEGIN IMMEDIATE` transaction, and applies its own view change in that same
transaction when the view had caught up to it (else the next catch-up applies it, as
for any record). `open` gives None for a store it must not touch: missing, or not at
this peer's schema (the full path creates or migrates it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from peer.records import LogKey, Record, check_tag
from peer.store.rows import append_rows
from peer.store.schema import LATEST_VERSION
from peer.store.sqlite import BUSY_TIMEOUT_MS, translated
from peer.store.views import CURSOR_OF, HistoryEntry, ViewChunk, apply_statements

if TYPE_CHECKING:
    from peer.crypto import Author
    from peer.store.finder import Finder, Scope

SEARCH_CACHE_KIB = 32 * 1024  # a search keeps the history index in memory across keystrokes
ChunkOf = Callable[[Sequence[Record]], ViewChunk]  # the view change of records just written


class Direct:
    """A synchronous connection to one store; `Direct.open(path)`, then `close`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._finder: Finder | None = None

    @classmethod
    def open(cls, path: Path) -> Direct | None:
        """The store at `path`, or None if it is missing or not at this schema."""
        if not path.is_file():
            return None
        with translated(f"open the store {path}"):
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                connection.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                connection.close()
                raise
        if version != LATEST_VERSION:
            connection.close()
            return None
        return cls(connection)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Direct:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self, author: Author, tag: str, plaintexts: Sequence[bytes], chunk_of: ChunkOf
    ) -> list[Record]:
        """Append to the author's own log and apply the view change, in one transaction."""
        check_tag(tag)
        if not plaintexts:
            return []
        log = LogKey(author.host, tag)
        db = self._connection
        with translated("write to the store"):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR IGNORE INTO hosts (host, public_key) VALUES (?, ?)",
                    (author.host, author.signing.public_key),
                )
                sealed, _, _, _ = append_rows(db, author, log, plaintexts)
                records = sealed.records()
                row = db.execute(CURSOR_OF, (log.host, log.tag)).fetchone()
                if (row[0] if row else 0) == sealed.written.first_idx:  # the view had caught up
                    for sql, params in apply_statements(chunk_of(records)):
                        db.executemany(sql, params)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return records

    # -- reads ------------------------------------------------------------------

    def views_behind(self, tags: Sequence[str]) -> bool:
        """Whether a log with one of `tags` holds records its view has not applied."""
        marks = ",".join("?" * len(tags))
        with translated("read the store"):
            row = self._connection.execute(
                "SELECT 1 FROM heads h LEFT JOIN view_cursors c "
                "ON c.host = h.host AND c.tag = h.tag "
                f"WHERE h.tag IN ({marks}) AND h.next_idx > coalesce(c.next_idx, 0) LIMIT 1",
                list(tags),
            ).fetchone()
        return row is not None

    def history_holds(self, entry_id: str) -> bool:
        """Whether the history view holds `entry_id`, as an entry or a deleted id."""
        with translated("read the store"):
            row = self._connection.execute(
                "SELECT 1 FROM history WHERE id = ? "
                "UNION ALL SELECT 1 FROM history_deleted WHERE id = ? LIMIT 1",
                (entry_id, entry_id),
            ).fetchone()
        return row is not None

    def history_find(self, text: str, scope: Scope, limit: int) -> list[HistoryEntry]:
        """The interactive search, a keystroke at a time (`peer.store.finder.Finder`)."""
        from peer.store.finder import Finder

        with translated("read the store"):
            if self._finder is None:
                self._connection.execute(f"PRAGMA cache_size = -{SEARCH_CACHE_KIB}")
                self._finder = Finder(self._connection)
            return self._finder.find(text, scope, limit)
