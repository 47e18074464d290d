"""The store's rules: local appends, received batches, fork evidence (its reads are
`peer.store.reading`, the base of `Store`).

The store enforces the log's rules itself, so no caller can break them:
- a local append allocates idx, chains and writes inside one `BEGIN IMMEDIATE`
  transaction, so two processes appending at once never lose or duplicate a record;
- `insert_batch` (records from elsewhere) checks bounds, contiguity from the stored
  head, chain links and signatures, then applies the whole call or nothing;
- an identical record already held is a no-op, found by a plain read before any
  verification or write (`peer.store.known`); a different authentic record at an
  occupied idx is kept as fork evidence and freezes its log;
- `index()` reads the maintained `heads` table, never a scan of the records.

Records are stored as segments, a row per run of a log (`peer.store.segments`), and
reads slice them. SQLite runs in WAL mode with synchronous=NORMAL: a committed
transaction survives a killed process. A batch is written in one trip to the writer's
thread, never one await per row.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from peer import clock
from peer.crypto import Author, Sealed, check_host_key, host_id, verify_segment
from peer.errors import (
    ForgeryError,
    ForkDetected,
    InvalidRecord,
    UnknownHost,
)
from peer.records import (
    Head,
    LogKey,
    Record,
    check_record,
    check_tag,
)
from peer.segment import Segment, Segments
from peer.store.compact import START, Cursor, Step, compact_step
from peer.store.forks import ForkEvidence, read_forks
from peer.store.known import Unheld, leave_out_known
from peer.store.peers import Invitations, TrustList
from peer.store.reading import Reads
from peer.store.receive import Forked, Prepared, apply_batch, keep_evidence, save_keys
from peer.store.rows import append_rows
from peer.store.sqlite import Database, Faults
from peer.store.views import Views

DEFAULT_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What one `insert_batch` call changed."""

    added: int
    duplicates: int


class Store(Reads):
    """One SQLite database of logs; open with `await Store.open(path)`, then close."""

    def __init__(self, database: Database, max_ahead_ns: int) -> None:
        super().__init__(database)
        self.path = database.path
        self.max_ahead_ns = max_ahead_ns
        self._listeners: list[Callable[[], None]] = []
        self._write_listeners: list[Callable[[int, list[Segment]], None]] = []
        self._keys: dict[bytes, bytes] = {}  # host -> public key, mirrors table `hosts`
        self._floor_seen = 0  # a clock floor this store has read or written (it only rises)
        self.last_seq_here = 0  # the newest arrival number this process's commits gave
        self.peers = TrustList(database)
        self.invitations = Invitations(database)
        self.views = Views(database)

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        max_ahead_ns: int = clock.DEFAULT_MAX_AHEAD_NS,
        max_bytes: int | None = None,
        faults: Faults | None = None,
    ) -> Store:
        """Open (creating and migrating if needed) the database at `path`.

        `max_bytes` caps the database size: past it, writes fail as on a full disk.
        `faults` (tests only) makes chosen write statements fail like a failing disk.
        """
        store = cls(await Database.open(Path(path), max_bytes, faults), max_ahead_ns)
        store._keys = await store._read_keys()
        return store

    async def close(self) -> None:
        await self._database.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every commit that adds records; returns an unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_write(self, listener: Callable[[int, list[Segment]], None]) -> Callable[[], None]:
        """Call `listener(first_seq, parts)` for each log's run of records this process
        writes, appended or received, once its transaction commits (before the
        `on_change` listeners): the segments and the arrival number of their first
        record (the others follow it). Returns an unsubscriber."""
        self._write_listeners.append(listener)
        return lambda: self._write_listeners.remove(listener)

    def _written(self, runs: Sequence[tuple[int, list[Segment]]]) -> None:
        for listener in list(self._write_listeners):
            for first_seq, parts in runs:
                listener(first_seq, parts)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to the store."""
        return await self._database.read_scalar("PRAGMA data_version")

    # -- hosts ------------------------------------------------------------------

    async def add_host(self, public_key: bytes) -> bytes:
        """Remember a host's public key (needed to verify its logs); returns its id."""
        check_host_key(public_key)
        host = host_id(public_key)
        await self._database.transaction(partial(save_keys, keys={host: public_key}))
        self._keys[host] = public_key
        return host

    async def host_keys(self, hosts: Iterable[bytes] | None = None) -> dict[bytes, bytes]:
        """Public keys of the given hosts (or of all) that this store knows.

        Served from memory; a miss re-reads the table, since another process (the CLI
        beside a running daemon) may have stored keys since this store was opened.
        """
        wanted = None if hosts is None else set(hosts)
        if wanted is None or not wanted <= self._keys.keys():
            self._keys = await self._read_keys()
        return self.known_keys(wanted)

    def known_keys(self, hosts: Iterable[bytes] | None = None) -> dict[bytes, bytes]:
        """Like `host_keys`, from memory only (for code that must not wait)."""
        if hosts is None:
            return dict(self._keys)
        return {h: self._keys[h] for h in hosts if h in self._keys}

    async def _read_keys(self) -> dict[bytes, bytes]:
        return {h: k for h, k in await self._database.fetch("SELECT host, public_key FROM hosts")}

    # -- local appends ----------------------------------------------------------

    async def append(self, author: Author, tag: str, plaintexts: Sequence[bytes]) -> list[Record]:
        """Append records to the author's own log in one transaction; returns them."""
        if not plaintexts:
            check_tag(tag)
            return []
        return (await self.append_sealed(author, tag, plaintexts)).records()

    async def append_sealed(
        self, author: Author, tag: str, plaintexts: Sequence[bytes], ahead: Sealed | None = None
    ) -> Sealed:
        """`append` (at least one plaintext), returning what it wrote as `Sealed`:
        their idx and timestamps, and their entries. For writers that need no Record
        objects (bulk appends, the daemon's group commit): building them cost a fifth
        of a bulk append. `ahead`: see `append_rows`."""
        log = await self._own_log(author, tag)
        work = partial(append_rows, author=author, log=log, plaintexts=plaintexts, ahead=ahead)
        sealed, parts, floor, last_seq = await self._database.transaction(work)
        self._floor_seen = max(self._floor_seen, floor)
        self.last_seq_here = max(self.last_seq_here, last_seq)
        self._written([(last_seq - sealed.count + 1, parts)])
        self._changed()
        return sealed

    async def append_many(
        self,
        author: Author,
        tag: str,
        plaintexts: Iterable[bytes],
        chunk: int = DEFAULT_CHUNK,
    ) -> AsyncIterator[tuple[int, int]]:
        """Bulk append, one transaction per `chunk` records; yields each (first, last) idx.

        Each chunk is sealed in a worker thread while the one before is written:
        sealing is Python (it holds the GIL), writing is mostly SQLite (which lets it
        go), so the two overlap (a fifth off a bulk append). A chunk is sealed on a
        guess that nothing else writes the log or raises the clock meanwhile; its
        transaction checks the guess and seals it again where it was wrong."""
        log = await self._own_log(author, tag)
        chunks = _chunks(plaintexts, chunk)
        batch = next(chunks, None)
        if batch is None:
            return
        head = await self.stored_head(log)
        sealing = _seal_aside(author, tag, head, await self.clock_floor(), batch)
        try:
            while batch is not None:
                ahead = await sealing
                following = next(chunks, None)
                if following is not None:
                    after = Head(ahead.written.first_idx + ahead.count, ahead.head_hash)
                    floor = ahead.written.timestamps[-1]
                    sealing = _seal_aside(author, tag, after, floor, following)
                sealed = await self.append_sealed(author, tag, batch, ahead)
                yield sealed.written.first_idx, sealed.written.first_idx + sealed.count - 1
                batch = following
        finally:
            # the consumer stopped early: the chunk is not written; cancel() also marks
            # a failure to seal it as seen (nobody's error: it was never asked for)
            sealing.cancel()

    async def _own_log(self, author: Author, tag: str) -> LogKey:
        """The author's log of `tag`; UnknownHost if this store lacks the author."""
        check_tag(tag)
        log = LogKey(author.host, tag)
        if log.host not in await self.host_keys([log.host]):
            raise UnknownHost(f"host {log.host.hex()} is not registered in this store")
        return log

    # -- records from elsewhere -------------------------------------------------

    async def insert_batch(
        self,
        records: Sequence[Record],
        keys: Mapping[bytes, bytes] | None = None,
        *,
        checked: bool = False,
    ) -> InsertResult:
        """Store authenticated records from another node: all of them, or none.

        `records` may be `Segments` (as received from a peer of protocol 1.2);
        `keys` maps host ids to public keys for hosts this store may not know yet;
        `checked`: the records come from `peer.codec`, which bounds-checked each one.
        Raises GapError (with the idx expected), ForgeryError, InvalidRecord,
        UnknownHost, LogFrozen, or ForkDetected (after keeping the evidence).
        """
        batch = as_segments(records, checked=checked)
        unheld = await self.leave_out_known(batch)
        if not unheld.records:
            return InsertResult(0, unheld.duplicates)
        fresh = unheld.records
        await self.host_keys({part.host for part in fresh.parts} - (keys or {}).keys())
        result = await self.apply(self.prepare(fresh, keys))
        return InsertResult(result.added, result.duplicates + unheld.duplicates)

    async def leave_out_known(self, batch: Segments) -> Unheld:
        """`batch` without the records held here already, found by one plain read of
        committed state: no verification, no write transaction (`peer.store.known`).
        What is left goes through `prepare` and `apply`."""
        return await leave_out_known(self._database, batch)

    def prepare(
        self, records: Sequence[Record], keys: Mapping[bytes, bytes] | None = None
    ) -> Prepared:
        """The checks that need no database: each segment's bytes, keys, chains and
        signatures (`crypto.verify_segment`), and the links between the segments of
        one log (records given as such are bounds-checked and encoded first). Pure
        CPU, so a receiver can prepare the next batch while the last is written."""
        groups: dict[LogKey, list[Segment]] = {}
        for part in as_segments(records).parts:
            groups.setdefault(part.log, []).append(part)
        known = self._resolve_keys(groups, keys or {})
        hashes: dict[LogKey, list[bytes]] = {}
        prevs: dict[LogKey, bytes] = {}
        newest = 0
        for log, parts in groups.items():
            found: list[bytes] = []
            for before, part in itertools.pairwise(parts):
                if part.first_idx != before.end:
                    raise InvalidRecord(
                        f"record {log}#{part.first_idx}: a batch must hold consecutive "
                        "records of one log"
                    )
            for part in parts:
                checked = verify_segment(part, known[log.host])
                if found and checked.first_prev != found[-1]:
                    raise ForgeryError(
                        f"record {log}#{part.first_idx}: prev is not the hash of record "
                        f"#{part.first_idx - 1} (one of the two was altered)"
                    )
                if not found:
                    prevs[log] = checked.first_prev
                found += checked.hashes
                newest = max(newest, checked.newest)
            hashes[log] = found
        return Prepared(groups, hashes, prevs, known, [newest])

    async def apply(self, prepared: Prepared) -> InsertResult:
        """Write a prepared batch in one transaction, checked against the stored heads
        (`peer.store.receive`); forks it proves are kept as evidence instead."""
        work = partial(
            apply_batch,
            prepared=prepared,
            unsaved_keys=self._unsaved(prepared.keys),
            floor_seen=self._floor_seen,
            max_ahead_ns=self.max_ahead_ns,
        )
        try:
            applied = await self._database.transaction(work)
        except Forked as found:
            forks = found.forks
            await self._database.transaction(
                partial(keep_evidence, keys=prepared.keys, forks=forks)
            )
            raise ForkDetected(
                f"log {forks[0].log} forked at idx {forks[0].idx}: its host signed two "
                "different records there; evidence kept, log frozen"
            ) from None
        self._keys.update(prepared.keys)
        self._floor_seen = max(self._floor_seen, applied.floor)
        if applied.added:
            self.last_seq_here = max(self.last_seq_here, applied.last_seq)
            self._written(applied.runs)
            self._changed()
        return InsertResult(applied.added, applied.duplicates)

    def _resolve_keys(
        self, groups: Mapping[LogKey, object], offered: Mapping[bytes, bytes]
    ) -> dict[bytes, bytes]:
        hosts = {log.host for log in groups}
        known = self.known_keys(hosts)
        for host in hosts - known.keys():
            public_key = offered.get(host)
            if public_key is None:
                raise UnknownHost(f"no public key known for host {host.hex()}")
            if host_id(public_key) != host:
                raise ForgeryError(f"the public key offered for host {host.hex()} is not its key")
            check_host_key(public_key)  # a small-order key would verify forged signatures
            known[host] = public_key
        return known

    def _unsaved(self, keys: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        return {host: key for host, key in keys.items() if host not in self._keys}

    async def forks(self) -> list[ForkEvidence]:
        """All fork evidence held, oldest first."""
        return await read_forks(self._database)

    # -- compaction -------------------------------------------------------------

    async def compact_step(self, after: Cursor = START) -> Step:
        """One transaction of compaction (`peer.store.compact`): small segments of a
        log merged, from the one after `after`; the step says where the next begins."""
        return await self._database.transaction(partial(compact_step, after=after))

    async def compact(self, pause_s: float = 0.0) -> tuple[int, int]:
        """Compact the whole store, a step per transaction with `pause_s` between them
        (writes queued meanwhile go first); (segment rows merged away, bytes rewritten)."""
        merged = rewritten = 0
        after: Cursor | None = START
        while after is not None:
            step = await self.compact_step(after)
            merged, rewritten, after = merged + step.merged, rewritten + step.rewritten, step.after
            if after is not None and pause_s:
                await asyncio.sleep(pause_s)
        return merged, rewritten


def as_segments(records: Sequence[Record], *, checked: bool = False) -> Segments:
    """A batch as segments: `Segments` as they are, records encoded (each bounds-checked
    first unless `checked`: encoding trusts the lengths it writes)."""
    if isinstance(records, Segments):
        return records
    if not checked:
        for record in records:
            check_record(record)
    return Segments.of(records)


def _chunks(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _seal_aside(
    author: Author, tag: str, head: Head, floor: int, plaintexts: Sequence[bytes]
) -> asyncio.Future[Sealed]:
    """`plaintexts` sealed in a worker thread, continuing `head` above `floor`."""
    stamps = clock.ticks(floor, clock.wall_clock_ns(), len(plaintexts))
    return asyncio.ensure_future(asyncio.to_thread(author.seal, tag, head, stamps, plaintexts))
