"""Read an atuin `history.db` (for `peer history import --format atuin`).

Reading another program's SQLite file is SQLite work, so it lives in the store
package; the rows come back raw and `peer.apps.imports` decides what they mean.
The file is opened read-only: importing never changes atuin's database, and only a
regular file is opened (SQLite would block on a FIFO).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from peer.errors import UsageError
from peer.inputs import check_regular
from peer.store.sqlite import explain

ATUIN_COLUMNS = ("id", "timestamp", "duration", "exit", "command", "cwd", "session", "hostname")
AtuinRow = tuple[object, ...]  # the columns above, then deleted_at


def read_atuin(path: Path) -> list[AtuinRow]:
    """Every row of the `history` table, oldest first; UsageError if it is no atuin file."""
    check_regular(path)
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(history)")}
            missing = [c for c in (*ATUIN_COLUMNS, "deleted_at") if c not in columns]
            if missing:
                raise UsageError(
                    f"{path} is not an atuin history.db: its history table lacks "
                    f"{', '.join(missing)}"
                )
            return db.execute(
                f"SELECT {', '.join(ATUIN_COLUMNS)}, deleted_at FROM history "
                "ORDER BY timestamp, rowid"
            ).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read {path} as an atuin history.db: {explain(exc)}") from exc
