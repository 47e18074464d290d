"""Helpers for the app tests: hosts writing kv and history records by hand, and the
views of a store as plain data to compare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peer.apps import history, kv
from peer.apps.views import ViewEngine
from peer.crypto import Author, SigningKey, SyncKey, record_hash
from peer.records import Head, Record
from peer.store import HistoryEntry, KvRow, Store


@dataclass
class Host:
    """One author writing its own logs, one record (signed) per write, any timestamp."""

    author: Author
    heads: dict[str, Head] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)

    @classmethod
    def new(cls, sync: SyncKey) -> Host:
        return cls(Author(SigningKey.generate(), sync))

    @property
    def host(self) -> bytes:
        return self.author.host

    @property
    def keys(self) -> dict[bytes, bytes]:
        return {self.author.host: self.author.signing.public_key}

    def write(self, tag: str, timestamp: int, plaintext: bytes) -> Record:
        head = self.heads.get(tag, Head(0))
        (record,) = self.author.write(tag, head, [timestamp], [plaintext])
        self.heads[tag] = Head(record.idx + 1, record_hash(record))
        self.records.append(record)
        return record

    def kv_set(self, key: str, value: bytes, timestamp: int, ns: str = "default") -> Record:
        return self.write(kv.TAG, timestamp, kv.encode_set(ns, key, value))

    def kv_delete(self, key: str, timestamp: int, ns: str = "default") -> Record:
        return self.write(kv.TAG, timestamp, kv.encode_delete(ns, key))

    def history_create(self, entry_id: str, command: str, timestamp: int) -> Record:
        entry = HistoryEntry(entry_id, command, "/", 0, 1, timestamp, "h", "s")
        return self.write(history.TAG, timestamp, history.encode_create(entry))

    def history_delete(self, entry_id: str, timestamp: int) -> Record:
        return self.write(history.TAG, timestamp, history.encode_delete(entry_id))


@dataclass(frozen=True)
class Snapshot:
    """Everything the views hold, tombstones included."""

    kv: list[KvRow]
    history: list[HistoryEntry]
    deleted: list[str]


async def snapshot(store: Store) -> Snapshot:
    return Snapshot(
        await store.views.kv_rows(),
        await store.views.history_list(),
        await store.views.history_deleted(),
    )


async def open_replica(path: Path, sync: SyncKey) -> tuple[Store, ViewEngine]:
    store = await Store.open(path)
    return store, ViewEngine(store, sync)


async def deliver(store: Store, records: Sequence[Record], hosts: Sequence[Host]) -> None:
    """insert_batch, as a sync would, with every host's key on offer."""
    keys = {h.author.host: h.author.signing.public_key for h in hosts}
    await store.insert_batch(records, keys)
