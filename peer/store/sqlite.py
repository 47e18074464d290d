"""Connections and transactions: one writer and one reader per store.

Writes go through one connection, one transaction at a time (an asyncio lock: the
daemon appends and receives concurrently). Reads go through a second connection, so
in WAL mode they only ever see committed state: an index is never advertised from a
batch that is still being written and may yet be rolled back.

A new database file is created 0600 before SQLite opens it (SQLite would make it 0644
under the umask), and SQLite gives the files it keeps beside it the database's mode:
the store holds decrypted views, so none of it is readable by other users.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # imported when a store is opened (the shell hook never opens one)
    import aiosqlite

from peer.errors import SchemaTooNew, StoreError, StoreFull
from peer.store.schema import LATEST_VERSION, MIGRATIONS

BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


class Database:
    """The two connections of one store file; open with `await Database.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        faults: Faults | None = None,
    ):
        self.path = path
        self.writer = writer if faults is None else cast(Any, _Faulty(writer, faults))
        self._writer = writer
        self._faults = faults
        self.reader = reader
        import asyncio  # here: a process that only uses `peer.store.direct` never needs it

        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, max_bytes: int | None = None, faults: Faults | None = None
    ) -> Database:
        import aiosqlite

        connections: list[aiosqlite.Connection] = []
        _create_private(path)
        try:
            with translated(f"open the store {path}"):
                for _ in range(2):
                    connections.append(await aiosqlite.connect(path, isolation_level=None))
            database = cls(path, connections[0], connections[1], faults)
            await database._configure(max_bytes)
            await database._migrate()
        except BaseException:
            for connection in connections:
                await connection.close()
            raise
        return database

    async def close(self) -> None:
        async with self._lock:
            await self.reader.close()
            await self.writer.close()

    async def _configure(self, max_bytes: int | None) -> None:
        with translated("configure the store"):
            for connection in (self.writer, self.reader):
                await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                await connection.execute("PRAGMA synchronous = NORMAL")
            await self.writer.execute_fetchall("PRAGMA journal_mode = WAL")  # (its row read)
            if max_bytes is not None:
                page_size = await scalar(self.writer, "PRAGMA page_size")
                limit = max(max_bytes // page_size, 1)
                await self.writer.execute_fetchall(f"PRAGMA max_page_count = {limit}")

    async def _migrate(self) -> None:
        """Apply the migrations this store lacks, each in its own transaction, after
        the resumable step some need first (`peer.store.convert`)."""
        version = await self.transaction(_schema_version)
        if version > LATEST_VERSION:
            raise SchemaTooNew(
                f"the store {self.path} was written by a newer peer (schema {version}); "
                "upgrade peer to open it"
            )
        for target in range(version + 1, LATEST_VERSION + 1):
            from peer.store.convert import BEFORE  # here: only an old store needs it

            step = BEFORE.get(target)
            while step is not None and await self.transaction(step):
                pass
            await self.transaction(partial(_apply_migration, target=target))

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, one at a time; BEGIN IMMEDIATE takes the file lock
        at once, so what is read inside is current (other processes wait)."""
        async with self._lock:
            with translated("write to the store"):
                try:
                    await self.writer.execute("BEGIN IMMEDIATE")
                    yield self.writer
                    await self.writer.commit()
                except BaseException:
                    import asyncio

                    # Queued after whatever the cancelled call left running, and shielded:
                    # a cancelled write must never leave the connection mid-transaction.
                    await asyncio.shield(self.writer.rollback())
                    raise

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` inside one write transaction, all of it in one trip to the writer's
        thread (BEGIN IMMEDIATE, `work`'s statements, COMMIT; ROLLBACK if it raises).
        A small append pays ~0.1 ms per trip, and took seven. Cancelling the caller
        does not stop the transaction: it commits or rolls back whole in the thread."""
        async with self._lock:
            with translated("write to the store"):
                # aiosqlite has no public way to run a function on its thread
                run = cast(Any, self._writer)._execute
                return cast(T, await run(partial(_transact, self._writer_sqlite(), work)))

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the writer's thread, inside the transaction of `write()` that the
        caller holds: many statements in one trip (a row per run, not an await each)."""
        run = cast(Any, self._writer)._execute
        return cast(T, await run(partial(work, self._writer_sqlite())))

    def _writer_sqlite(self) -> sqlite3.Connection:
        raw = cast(sqlite3.Connection, cast(Any, self._writer)._conn)
        return raw if self._faults is None else cast(Any, _FaultySync(raw, self._faults))

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """All rows of a query on the reader (committed state only)."""
        with translated("read the store"):  # one trip to the reader's thread, not three
            return list(await self.reader.execute_fetchall(sql, params))

    async def read_scalar(self, sql: str, params: Sequence[object] = ()) -> int:
        rows = await self.fetch(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _transact(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """On the writer's thread: `work` in one BEGIN IMMEDIATE transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return result


def _schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _apply_migration(db: sqlite3.Connection, target: int) -> None:
    """Migration `target`, unless another process applied it meanwhile."""
    if _schema_version(db) >= target:
        return
    for statement in MIGRATIONS[target]:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {target}")


def _create_private(path: Path) -> None:
    """Make a missing database file, empty and 0600 (under any umask); SQLite takes an
    empty file as a new database."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"could not open the store {path}: {exc.strerror}") from exc


async def scalar(connection: aiosqlite.Connection, sql: str, params: Sequence[object] = ()) -> int:
    rows = list(await connection.execute_fetchall(sql, params))  # one trip to the thread
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn SQLite failures into StoreError (StoreFull for a full disk or database)
    with a message a user can act on."""
    try:
        yield
    except sqlite3.Error as exc:
        full = getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"
        kind = StoreFull if full else StoreError
        raise kind(f"could not {action}: {explain(exc)}") from exc
    except UnicodeDecodeError as exc:  # a damaged TEXT value (e.g. a tag) read back
        raise StoreError(
            f"could not {action}: the database is corrupt (a text value is not UTF-8); "
            "restore it from a backup"
        ) from exc


def explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text:
        return "the disk is full (free some space and retry)"
    if "locked" in text or "busy" in text:
        return "the database is busy (another peer process holds it); retry"
    if "I/O" in text:
        return f"an I/O error ({text}); check the disk"
    return text


class Faults:
    """A test hook, off unless passed to `Store.open`: once armed, the `at`-th write
    statement (BEGIN, each statement, COMMIT) fails as a failing disk does, and with
    `persist` every one after it too (SQLite's I/O-error loop, moved to this store)."""

    def __init__(self) -> None:
        self.at = 0
        self.persist = False
        self.count = 0
        self.fired = 0

    def arm(self, at: int, persist: bool = False) -> None:
        self.at, self.persist, self.count, self.fired = at, persist, 0, 0

    def disarm(self) -> None:
        self.at = 0

    def tick(self) -> None:
        if not self.at:
            return
        self.count += 1
        if self.count == self.at or (self.persist and self.count > self.at):
            self.fired += 1
            raise sqlite3.OperationalError("disk I/O error")


class _Faulty:
    """The writer connection with `Faults` consulted before each statement."""

    def __init__(self, connection: aiosqlite.Connection, faults: Faults) -> None:
        self._connection = connection
        self._faults = faults

    def execute(self, sql: str, parameters: Any = None) -> Any:
        self._faults.tick()
        return self._connection.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any) -> Any:
        self._faults.tick()
        return self._connection.executemany(sql, parameters)

    def execute_fetchall(self, sql: str, parameters: Any = None) -> Any:
        self._faults.tick()
        return self._connection.execute_fetchall(sql, parameters)

    async def commit(self) -> None:
        self._faults.tick()
        await self._connection.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class _FaultySync:
    """The writer's sqlite3 connection, for `Database.transaction`, with `Faults`
    consulted before each statement (as `_Faulty` does for the async connection)."""

    def __init__(self, connection: sqlite3.Connection, faults: Faults) -> None:
        self._connection = connection
        self._faults = faults

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        self._faults.tick()
        return self._connection.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any) -> sqlite3.Cursor:
        self._faults.tick()
        return self._connection.executemany(sql, parameters)

    def commit(self) -> None:
        self._faults.tick()
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()
