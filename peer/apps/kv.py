"""The KV app (tag "kv"): namespaced keys, last writer wins, deletes are tombstones.

Payload format v1 (record version "v1"), one JSON object:
    {"op": "set", "ns": NS, "key": KEY, "value": TEXT}      (or "value_b64": BASE64)
    {"op": "del", "ns": NS, "key": KEY}
The winner per (ns, key) is the record with the greatest (timestamp, host, idx), so
every node decides the same whatever order records arrive in (`peer.store.views`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from peer.apps import payload
from peer.apps.app import App
from peer.apps.payload import Malformed
from peer.errors import UsageError
from peer.records import Record
from peer.store import KvItem, KvRow

if TYPE_CHECKING:
    pass

TAG = "kv"
DEFAULT_NS = "default"
MAX_NAME = 1024  # characters of a namespace or key
BULK_CHUNK = 10_000  # sets per transaction (and per view update) of `set_many`


def encode_set(ns: str, key: str, value: bytes) -> bytes:
    body: dict[str, object] = {"op": "set", "ns": check_name("namespace", ns)}
    body["key"] = check_name("key", key)
    try:
        body["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        body["value_b64"] = base64.b64encode(value).decode()
    return payload.dump(body)


def encode_delete(ns: str, key: str) -> bytes:
    return payload.dump(
        {"op": "del", "ns": check_name("namespace", ns), "key": check_name("key", key)}
    )


def check_name(what: str, name: str) -> str:
    if not name or len(name) > MAX_NAME:
        raise UsageError(f"a {what} is 1 to {MAX_NAME} characters, got {len(name)}")
    return name


def decide(record: Record, plaintext: bytes) -> KvRow:
    """What a kv record does to the view; Malformed if it follows no known format."""
    body = payload.load(plaintext)
    op = body.get("op")
    ns, key = payload.text(body, "ns"), payload.text(body, "key")
    if op == "del":
        value = None
    elif op == "set":
        value = _value(body)
    else:
        raise Malformed(f"unknown kv op {op!r}")
    return KvRow(ns, key, value, record.timestamp, record.host, record.idx)


def _value(body: dict[str, object]) -> bytes:
    if isinstance(body.get("value"), str):
        return str(body["value"]).encode("utf-8")
    encoded = body.get("value_b64")
    if not isinstance(encoded, str):
        raise Malformed("a kv set has no value")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise Malformed("a kv set has a damaged value_b64") from exc


class Kv(App):
    """The KV store of one node: writes append records, reads use the caught-up view."""

    async def set(self, key: str, value: str | bytes, ns: str = DEFAULT_NS) -> Record:
        """Set `key` to `value` (text is stored as UTF-8)."""
        data = value.encode("utf-8") if isinstance(value, str) else value
        (record,) = await self._store.append(self._writer(), TAG, [encode_set(ns, key, data)])
        await self._views.catch_up()
        return record

    async def set_many(
        self, items: Iterable[tuple[str, bytes]], ns: str = DEFAULT_NS
    ) -> AsyncIterator[int]:
        """Bulk set in large transactions; yields the count written so far."""
        count = 0
        batch: list[bytes] = []
        for key, value in items:
            batch.append(encode_set(ns, key, value))
            if len(batch) >= BULK_CHUNK:
                count += await self._write_bulk(batch)
                batch = []
                yield count
        if batch:
            count += await self._write_bulk(batch)
            yield count
        await self._views.catch_up()

    async def _write_bulk(self, plaintexts: list[bytes]) -> int:
        records = await self._store.append(self._writer(), TAG, plaintexts)
        await self._views.apply_written(records, plaintexts)
        return len(records)

    async def delete(self, key: str, ns: str = DEFAULT_NS) -> bool:
        """Delete `key` (a tombstone, so it stays deleted everywhere); was it set?"""
        existed = await self.get(key, ns) is not None
        await self._store.append(self._writer(), TAG, [encode_delete(ns, key)])
        await self._views.catch_up()
        return existed

    async def get(self, key: str, ns: str = DEFAULT_NS) -> bytes | None:
        await self._views.catch_up(required=True)
        return await self._store.views.kv_get(ns, key)

    async def items(self, ns: str | None = None) -> list[KvItem]:
        """Live keys of one namespace (or all), sorted."""
        await self._views.catch_up(required=True)
        return await self._store.views.kv_list(ns)
