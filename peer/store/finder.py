"""The history search behind ctrl-r: SQL over the history view, no decryption.

A search runs at every keystroke, so it asks SQLite for one screenful (`find`): one
line per distinct command (its latest run), the commands holding every word of the
query as written first, then those holding each word's letters in order with anything
between them (fuzzy: "gco" finds "git checkout"), each group newest first. A word
with a capital letter matches case-sensitively; one without, in any case (ASCII).
`Scope` narrows it to one host, one shell session, one directory.

Two stages keep it fast (`Finder`): the newest WINDOW rows are searched first, and if
their
matches as written fill the screen, that is the answer (no older command can rank
above them). Otherwise one grouped scan of the whole view answers, over the index
`history_by_command` (migration 5), which holds every column it reads.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from peer.store.views import HistoryEntry

COLUMNS = "id, command, cwd, exit, duration, timestamp, hostname, session"
WINDOW = 5000  # the newest rows searched first


@dataclass(frozen=True, slots=True)
class Scope:
    """Which entries a search sees: all (None everywhere), or only those matching."""

    hostname: str | None = None
    session: str | None = None
    cwd: str | None = None

    def where(self) -> tuple[list[str], list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (
            ("hostname", self.hostname),
            ("session", self.session),
            ("cwd", self.cwd),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return clauses, params


def _like(term: str, fuzzy: bool) -> str:
    escaped = [("\\" + c) if c in "\\%_" else c for c in term]
    return "%" + ("%".join(escaped) if fuzzy else "".join(escaped)) + "%"


def _glob(term: str, fuzzy: bool) -> str:
    escaped = [f"[{c}]" if c in "*?[" else c for c in term]
    return "*" + ("*".join(escaped) if fuzzy else "".join(escaped)) + "*"


def matching(text: str, fuzzy: bool) -> tuple[list[str], list[object]]:
    """Clauses (and their parameters) matching every word of `text` in `command`."""
    clauses: list[str] = []
    params: list[object] = []
    for term in text.split():
        if term.lower() != term:  # a capital letter: the user means that case
            clauses.append("command GLOB ?")
            params.append(_glob(term, fuzzy))
        else:
            clauses.append("command LIKE ? ESCAPE '\\'")
            params.append(_like(term, fuzzy))
    return clauses, params


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)} " if clauses else ""


def recent_sql(text: str, scope: Scope) -> tuple[str, list[object]]:
    """Stage one: the newest WINDOW rows, those matching as written, newest first."""
    words, word_params = matching(text, fuzzy=False)
    scoped, scope_params = scope.where()
    window = (  # the WINDOW-th newest time (ties make the window a little wider)
        "timestamp >= coalesce((SELECT timestamp FROM history ORDER BY timestamp DESC "
        f"LIMIT 1 OFFSET {WINDOW - 1}), {-(2**63)})"
    )
    return (
        f"SELECT {COLUMNS} FROM history {_where([window, *words, *scoped])}"
        "ORDER BY timestamp DESC, id DESC",
        [*word_params, *scope_params],
    )


def grouped_sql(text: str, scope: Scope, limit: int) -> tuple[str, list[object]]:
    """Stage two: each matching command once, with its latest run's time; those
    matching as written first (`exact` 1), each group newest first."""
    fuzzy = len(text.replace(" ", "")) >= 2  # one letter: fuzzy would add nothing
    words, word_params = matching(text, fuzzy)
    exact, exact_params = matching(text, fuzzy=False)
    scoped, scope_params = scope.where()
    ranked = f"max({' AND '.join(exact)})" if exact and fuzzy else "1"
    return (
        f"SELECT command, max(timestamp), {ranked} AS exact FROM history "
        f"{_where([*words, *scoped])}GROUP BY command ORDER BY exact DESC, 2 DESC LIMIT ?",
        [*(exact_params if exact and fuzzy else []), *word_params, *scope_params, limit],
    )


class Finder:
    """The searches of one screen, a keystroke at a time, on one connection.

    It remembers a query whose newest rows did not fill the screen: a query typed on
    from it (its text extended) matches fewer rows still, so its first stage is skipped.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._short: tuple[str, Scope, int] | None = None  # the last query stage one missed

    def find(self, text: str, scope: Scope, limit: int) -> list[HistoryEntry]:
        """Up to `limit` entries, one per distinct command (its latest run): those
        matching as written, then the fuzzy ones, each newest first."""
        short = self._short
        typed_on = short is not None and short[1:] == (scope, limit) and text.startswith(short[0])
        if not typed_on:
            found = recent(self._connection, text, scope, limit)
            if found is not None:
                self._short = None
                return found
            self._short = (text, scope, limit)
        return grouped(self._connection, text, scope, limit)


def recent(
    connection: sqlite3.Connection, text: str, scope: Scope, limit: int
) -> list[HistoryEntry] | None:
    """Stage one: the answer if the newest WINDOW rows fill the screen, else None."""
    found: dict[str, HistoryEntry] = {}
    for row in connection.execute(*recent_sql(text, scope)):
        found.setdefault(row[1], HistoryEntry(*row))
        if len(found) >= limit:
            return list(found.values())
    return None


def grouped(
    connection: sqlite3.Connection, text: str, scope: Scope, limit: int
) -> list[HistoryEntry]:
    """Stage two: one grouped scan of the whole view, then each command's latest run."""
    found: dict[str, HistoryEntry] = {}
    scoped, scope_params = scope.where()
    latest = f"SELECT {COLUMNS} FROM history {_where(['command = ?', 'timestamp = ?', *scoped])}"
    for command, timestamp, _ in connection.execute(*grouped_sql(text, scope, limit)).fetchall():
        row = connection.execute(latest + "LIMIT 1", [command, timestamp, *scope_params]).fetchone()
        if row is not None:
            found.setdefault(command, HistoryEntry(*row))
    return list(found.values())
