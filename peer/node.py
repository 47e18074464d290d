"""A local node: one home's identity and store, and what a user does with them.

This is the library face of the CLI's local commands (init, append, tail, status,
verify, and the kv and history apps); each method is one thing a user asks for,
returning plain data to print.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from peer.apps.history import History
from peer.apps.kv import Kv
from peer.apps.views import APP_TAGS, ViewEngine
from peer.config import config_template
from peer.crypto import (
    ROSTER_KEY,
    Author,
    ChainCheck,
    Sealed,
    SyncKey,
    open_or_why,
    record_key_id,
)
from peer.errors import CryptoError, IntegrityError, InvalidRecord, UsageError
from peer.home import Home, Identity, write_private
from peer.names import check_name
from peer.records import LogKey, Record, Written, check_record
from peer.relay import CANNOT_WRITE, require_sync_key
from peer.status import ForkStatus, LogStatus, NodeStatus, PeerStatus, ViewsStatus
from peer.store import Invitations, Store, TrustList
from peer.trust import Credentials

VERIFY_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Entry:
    """A record as a user reads it: the plaintext, or why it cannot be read."""

    seq: int
    record: Record
    data: bytes | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Records a node with a sync key could not open: how many of how many shown, and
    the ids of the other keys they were sealed with (none: they were altered)."""

    count: int
    shown: int
    other_keys: list[str]


@dataclass(slots=True)
class VerifyReport:
    """What `peer verify` found: counts, and every problem in words."""

    logs: int = 0
    records: int = 0
    decrypted: int = 0
    problems: list[str] = field(default_factory=list)
    forks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.forks


class Node:
    """A home's identity with its open store; use `await Node.open(home)`, then close."""

    def __init__(self, home: Home, identity: Identity, store: Store) -> None:
        self.home = home
        self.identity = identity
        self.store = store

    @classmethod
    async def init(
        cls, home: Home, name: str = "", sync: SyncKey | None = None, relay: bool = False
    ) -> Node:
        """Create identity, sync key (a new one unless given) and store in `home`.

        A relay gets no sync key: it stores, verifies and forwards records it cannot read.
        """
        check_name(name)
        if relay and sync is not None:
            raise UsageError("a relay holds no sync key: drop --key or --relay")
        key = None if relay else sync if sync is not None else SyncKey.generate()
        identity = home.create(name, key)
        if not home.config_file.exists():  # every setting, commented, to edit later
            write_private(home.config_file, config_template().encode())
        store = await Store.open(home.database)
        await store.add_host(identity.signing.public_key)
        return cls(home, identity, store)

    @classmethod
    async def open(cls, home: Home) -> Node:
        identity = home.load()
        store = await Store.open(home.database)
        await store.add_host(identity.signing.public_key)
        return cls(home, identity, store)

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def credentials(self) -> Credentials:
        """This node's TLS key and certificate: what it proves itself with."""
        return Credentials(self.identity.tls_key, self.identity.tls_certificate)

    @property
    def trust(self) -> TrustList:
        """The pinned peers (the store's trust list), followed live by a daemon."""
        return self.store.peers

    @property
    def invitations(self) -> Invitations:
        """The pairing invitations this node made, honoured by its running daemon."""
        return self.store.invitations

    @property
    def author(self) -> Author:
        sync = require_sync_key(self.identity.sync, CANNOT_WRITE)
        return Author(self.identity.signing, sync)

    async def append(self, tag: str, items: Sequence[bytes]) -> list[Record]:
        """Append records to this host's log `tag` in one transaction."""
        if not items:
            return await self.store.append(self.author, tag, items)
        return (await self._append_sealed(tag, items)).records()

    async def append_written(self, tag: str, items: Sequence[bytes]) -> Written:
        """`append` (at least one item) for writers that need only where the records
        went, not Record objects (the daemon's group commit)."""
        return (await self._append_sealed(tag, items)).written

    async def _append_sealed(self, tag: str, items: Sequence[bytes]) -> Sealed:
        sealed = await self.store.append_sealed(self.author, tag, items)
        if tag in APP_TAGS:
            await self.views.catch_up()
        return sealed

    @property
    def views(self) -> ViewEngine:
        """The kv and history views (catch up after syncing: `await node.views.catch_up()`)."""
        return ViewEngine(self.store, self.identity.sync)

    @property
    def kv(self) -> Kv:
        return Kv(self.views, self._writer())

    @property
    def history(self) -> History:
        return History(self.views, self._writer())

    def _writer(self) -> Author | None:
        sync = self.identity.sync
        return None if sync is None else Author(self.identity.signing, sync)

    def append_many(self, tag: str, items: Iterable[bytes]) -> AsyncIterator[tuple[int, int]]:
        """Bulk append in large transactions; yields the (first, last) idx of each."""
        return self.store.append_many(self.author, tag, items)

    async def check_sync_key(self, sync: SyncKey) -> None:
        """UsageError if records this node sealed with its current key exist: switching
        keys would make them unreadable to the user's other devices."""
        current = self.identity.sync
        if current is None or current.key_id == sync.key_id:
            return
        own = [n for log, n in (await self._own_logs()).items() if n]
        if own:
            raise UsageError(
                f"this node already wrote {sum(own)} records with key {current.key_id_text}; "
                "importing another key would make them unreadable to your other devices. "
                "Start a fresh home with `peer init --key KEY` instead"
            )

    async def import_sync_key(self, sync: SyncKey) -> None:
        """Switch to another sync key, unless records sealed with the current one exist."""
        await self.check_sync_key(sync)
        current = self.identity.sync
        if current is not None and current.key_id == sync.key_id:
            return
        self.use_sync_key(sync if current is None else current.rotated_to(sync))

    def use_sync_key(self, sync: SyncKey) -> None:
        """Make `sync` (with the older keys it holds) this node's key, on disk and here."""
        self.home.replace_sync_key(sync)
        self.identity = dataclasses.replace(self.identity, sync=self.home.load_sync_key())

    async def _own_logs(self) -> dict[LogKey, int]:
        index = await self.store.index()
        return {log: h.next_idx for log, h in index.items() if log.host == self.identity.host}

    async def tail(self, tag: str | None = None, limit: int | None = None) -> list[Entry]:
        """Records in arrival order (the last `limit` of them), decrypted."""
        after = 0 if limit is None else await self.store.last_seq(tag, back=limit)
        rows = await self.store.scan(tag=tag, after=after, limit=limit or 2**62)
        return [self.decrypt(seq, record) for seq, record in rows]

    async def follow(self, tag: str | None, after: int) -> list[Entry]:
        """Records that arrived after sequence number `after` (for `tail --follow`)."""
        return [self.decrypt(s, r) for s, r in await self.store.scan(tag=tag, after=after)]

    async def newest(self, tag: str | None = None) -> int:
        """The arrival number of the newest record (of `tag`): where following starts."""
        return await self.store.last_seq(tag)

    def unreadable(self, entries: Sequence[Entry]) -> Unreadable | None:
        """What of `entries` this node should have been able to open and could not
        (None on a relay, which opens nothing by design): their count and key ids."""
        sync = self.identity.sync
        failed = [entry.record for entry in entries if entry.data is None]
        if sync is None or not failed:
            return None
        keys = set()
        for record in failed:
            with contextlib.suppress(CryptoError):
                keys.add(record_key_id(record))
        return Unreadable(len(failed), len(entries), sorted(keys - {sync.key_id.hex()}))

    def decrypt(self, seq: int, record: Record) -> Entry:
        data, why = open_or_why(self.identity.sync, record)
        return Entry(seq, record, data, why)

    async def status(self) -> NodeStatus:
        """The node's identity, every log it holds, its peers and fork evidence."""
        frozen = await self.store.frozen_logs()
        skipped = await self.store.views.skipped()
        sync = self.identity.sync
        return NodeStatus(
            self.identity.node_id,
            self.identity.host,
            self.identity.name,
            sync.key_id_text if sync else None,
            tuple(
                LogStatus(log, head.next_idx, head.head_hash, log in frozen)
                for log, head in (await self.store.index()).items()
            ),
            tuple(
                PeerStatus(p.node_id, p.name, p.address, p.certificate is not None)
                for p in await self.trust.all()
            ),
            ViewsStatus(
                await self.store.views.applied(),
                skipped.undecryptable,
                skipped.unknown_version,
                skipped.malformed,
            ),
            tuple(
                ForkStatus(f.log, f.idx, f.held_hash, len(f.offered), f.detected_at)
                for f in await self.store.forks()
            ),
            keyring=0 if sync is None else sum(k.key_id != ROSTER_KEY.key_id for k in sync.older),
        )

    async def verify(self) -> VerifyReport:
        """Re-check every stored chain, signature and head, and decrypt every record."""
        report = VerifyReport(forks=len(await self.store.forks()))
        keys = await self.store.host_keys()
        for log, head in (await self.store.index()).items():
            report.logs += 1
            public_key = keys.get(log.host)
            if public_key is None:
                report.problems.append(f"log {log}: no public key for its host")
                continue
            await self._verify_log(log, head.next_idx, head.head_hash, public_key, report)
        return report

    async def _verify_log(
        self, log: LogKey, length: int, head: bytes, public_key: bytes, report: VerifyReport
    ) -> None:
        check = ChainCheck(public_key)
        start = 0
        try:
            while start < length:
                chunk = await self.store.read_range(log.host, log.tag, start, VERIFY_CHUNK)
                if not chunk or chunk[0].idx != start:
                    raise IntegrityError(f"log {log}: record idx {start} is missing")
                for record in chunk:
                    check_record(record)
                self._decrypt_all(chunk, report)
                check.feed(chunk)
                report.records += len(chunk)
                start += len(chunk)
            check.finish()
            if length and check.last_hash != head:
                raise IntegrityError(f"log {log}: the stored head hash does not match its records")
        except (IntegrityError, InvalidRecord) as exc:
            report.problems.append(str(exc))

    def _decrypt_all(self, records: Sequence[Record], report: VerifyReport) -> None:
        """Count what opens, report why the rest does not (a relay opens nothing, and
        that is no problem)."""
        if self.identity.sync is None:
            return
        for record in records:
            _, why = open_or_why(self.identity.sync, record)
            if why is None:
                report.decrypted += 1
            else:
                report.problems.append(why)
