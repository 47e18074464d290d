"""`peer history stats`: counts over the history view, as SQL and plain data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Count:
    """How often something ran, and how often it failed (a non-zero exit status)."""

    name: str
    runs: int
    failed: int
    known_exit: int  # runs whose exit status is known (imports may not say)


@dataclass(frozen=True, slots=True)
class Stats:
    """`peer history stats`: totals, the top commands (by first word), per host."""

    total: Count
    commands: list[Count] = field(default_factory=list)
    hosts: list[Count] = field(default_factory=list)


_COUNTS = "count(*), coalesce(sum(exit IS NOT NULL AND exit != 0), 0), count(exit) FROM history"
_FIRST_WORD = "substr(ltrim(command), 1, instr(ltrim(command) || ' ', ' ') - 1)"
TOTAL_SQL = f"SELECT 'all', {_COUNTS}"
COMMANDS_SQL = f"SELECT {_FIRST_WORD} AS word, {_COUNTS} GROUP BY word ORDER BY 2 DESC, 1 LIMIT ?"
HOSTS_SQL = f"SELECT hostname, {_COUNTS} GROUP BY hostname ORDER BY 2 DESC, 1"
