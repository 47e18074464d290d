"""The history search and statistics: SQL over the history view, no decryption.

A search is typed a key at a time, so it runs in SQLite and reads only as many rows as
a screen shows (`find`): newest first, one line per distinct command, in two passes:
every word of the query as it stands in the command, then (to fill the screen) every
word as letters in order with anything between them (fuzzy: "gco" finds "git
checkout"). A word with a capital letter matches case-sensitively; one without, in
any case (ASCII). `Scope` narrows it to one host, one shell session, one directory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from peer.store.views import HistoryEntry

COLUMNS = "id, command, cwd, exit, duration, timestamp, hostname, session"
_FETCH = 256  # rows per fetch while reading a pass


@dataclass(frozen=True, slots=True)
class Scope:
    """Which entries a search sees: all (None everywhere), or only those matching."""

    hostname: str | None = None
    session: str | None = None
    cwd: str | None = None


def _like(term: str, fuzzy: bool) -> str:
    escaped = [("\\" + c) if c in "\\%_" else c for c in term]
    return "%" + ("%".join(escaped) if fuzzy else "".join(escaped)) + "%"


def _glob(term: str, fuzzy: bool) -> str:
    escaped = [f"[{c}]" if c in "*?[" else c for c in term]
    return "*" + ("*".join(escaped) if fuzzy else "".join(escaped)) + "*"


def search_sql(text: str, scope: Scope, fuzzy: bool) -> tuple[str, list[object]]:
    """The query of one pass: entries matching every word of `text`, newest first."""
    clauses: list[str] = []
    params: list[object] = []
    for term in text.split():
        if term.lower() != term:  # a capital letter: the user means that case
            clauses.append("command GLOB ?")
            params.append(_glob(term, fuzzy))
        else:
            clauses.append("command LIKE ? ESCAPE '\\'")
            params.append(_like(term, fuzzy))
    for column, value in (
        ("hostname", scope.hostname),
        ("session", scope.session),
        ("cwd", scope.cwd),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    return f"SELECT {COLUMNS} FROM history {where}ORDER BY timestamp DESC, id DESC", params


def find(connection: sqlite3.Connection, text: str, scope: Scope, limit: int) -> list[HistoryEntry]:
    """Up to `limit` entries, one per distinct command (its latest run), newest first:
    the exact matches, then the fuzzy ones (none with no words, or one letter)."""
    found: dict[str, HistoryEntry] = {}
    passes = [False] if len(text.replace(" ", "")) < 2 else [False, True]
    for fuzzy in passes:
        for entry in _rows(connection, *search_sql(text, scope, fuzzy)):
            found.setdefault(entry.command, entry)
            if len(found) >= limit:
                return list(found.values())
    return list(found.values())


def _rows(connection: sqlite3.Connection, sql: str, params: list[object]) -> Iterator[HistoryEntry]:
    cursor = connection.execute(sql, params)
    try:
        while rows := cursor.fetchmany(_FETCH):
            for row in rows:
                yield HistoryEntry(*row)
    finally:
        cursor.close()
