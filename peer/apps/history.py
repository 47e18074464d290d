"""The shell history app (tag "history"): entries created and deleted by id.

Payload format v1 (record version "v1"), one JSON object:
    {"op": "create", "id": ID, "command": ..., "cwd": ..., "exit": N|null,
     "duration": NS|null, "timestamp": NS, "hostname": ..., "session": ...}
    {"op": "delete", "id": ID}
A deleted id stays deleted whatever order the create and delete arrive in
(`peer.store.views` keeps deleted ids). Imported entries get an id derived from their
content (`import_id`), so importing the same file twice adds nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from peer.apps import payload
from peer.apps.app import App
from peer.apps.payload import Malformed
from peer.crypto import MAX_PLAINTEXT
from peer.errors import NotFound, UsageError
from peer.records import Record
from peer.store import HistoryCreate, HistoryDelete, HistoryEntry

if TYPE_CHECKING:  # the shell hook imports this module: stats are not its business
    from peer.store.stats import Stats

TAG = "history"
MAX_COMMAND = 256 * 1024
IMPORT_CHUNK = 10_000  # entries per transaction (and per view update) of an import
_JSON_GROWTH = 6  # at most 6 bytes of JSON per character of text ("\u001b")
_JSON_FIXED = 1024  # bytes of JSON besides the text fields: keys, numbers
SURELY_FITS = (MAX_PLAINTEXT - _JSON_FIXED) // _JSON_GROWTH  # characters, all text fields


def encode_create(entry: HistoryEntry) -> bytes:
    reason = too_big(entry)
    if reason is not None:
        raise UsageError(reason)
    return payload.dump({"op": "create", **entry.as_json()})


def too_big(entry: HistoryEntry) -> str | None:
    """Why `entry` cannot be one record (None if it can); an import skips such an entry
    rather than fail. Only an entry near the limit is encoded to tell."""
    length = len(entry.command)
    if length > MAX_COMMAND:
        return f"a command of {length:,} characters is over the limit of {MAX_COMMAND:,}"
    e = entry
    text = len(e.id) + len(e.command) + len(e.cwd) + len(e.hostname) + len(e.session)
    if text <= SURELY_FITS:
        return None
    size = len(payload.dump({"op": "create", **entry.as_json()}))
    if size > MAX_PLAINTEXT:
        return f"an entry of {size:,} bytes is over the record limit of {MAX_PLAINTEXT:,}"
    return None


def encode_delete(entry_id: str) -> bytes:
    return payload.dump({"op": "delete", "id": entry_id})


def decide(record: Record, plaintext: bytes) -> HistoryCreate | HistoryDelete:
    """A create (entry and record order) or a delete (the id); Malformed otherwise."""
    body = payload.load(plaintext)
    op = body.get("op")
    entry_id = payload.text(body, "id")
    if op == "delete":
        return HistoryDelete(entry_id)
    if op != "create":
        raise Malformed(f"unknown history op {op!r}")
    entry = HistoryEntry(
        entry_id,
        payload.text(body, "command"),
        payload.text(body, "cwd"),
        payload.integer(body, "exit", optional=True),
        payload.integer(body, "duration", optional=True),
        payload.integer(body, "timestamp") or 0,
        payload.text(body, "hostname"),
        payload.text(body, "session"),
    )
    return HistoryCreate(entry, record.timestamp, record.host, record.idx)


def new_id() -> str:
    """A fresh random id for a command added live."""
    return os.urandom(16).hex()


def import_id(source: Sequence[object]) -> str:
    """A deterministic id from what identifies an imported command (see `imports`)."""
    text = payload.dump_text(list(source))
    return hashlib.sha256(b"peer.history.import.v1\x00" + text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import wrote: entries new to this node, and those already held."""

    added: int
    already: int


class History(App):
    """The shell history of one node: writes append records, reads use the view."""

    async def add(self, entry: HistoryEntry) -> HistoryEntry:
        await self._store.append(self._writer(), TAG, [encode_create(entry)])
        await self._views.catch_up()
        return entry

    async def delete(self, entry_id: str) -> HistoryEntry:
        """Delete an entry this node shows; NotFound if there is none with that id."""
        entry = await self.get(entry_id)
        await self._store.append(self._writer(), TAG, [encode_delete(entry_id)])
        await self._views.catch_up()
        return entry

    async def get(self, entry_id: str) -> HistoryEntry:
        await self._views.catch_up(required=True)
        entry = await self._store.views.history_get(entry_id)
        if entry is None:
            raise NotFound(f"no history entry with id {entry_id}")
        return entry

    async def recent(self, limit: int | None = None) -> list[HistoryEntry]:
        """The newest `limit` entries, oldest first (as a shell's `history` prints)."""
        await self._views.catch_up(required=True)
        return await self._store.views.history_list(limit)

    async def search(self, text: str, limit: int | None = None) -> list[HistoryEntry]:
        """Entries whose command contains `text`, newest first."""
        await self._views.catch_up(required=True)
        return await self._store.views.history_search(text, limit)

    async def stats(self, top: int) -> Stats:
        """How many commands ran and failed: in all, for the `top` most run (by first
        word), and per host."""
        await self._views.catch_up(required=True)
        return await self._store.views.history_stats(top)

    async def import_entries(
        self,
        entries: Sequence[HistoryEntry],
        progress: Callable[[int], None] | None = None,
        view_progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Append the entries this node does not hold yet (by id), in bulk, applying each
        chunk to the view from its plaintexts; `progress`: entries written so far;
        `view_progress`: records a final catch-up had left to apply (usually none)."""
        await self._views.catch_up(required=True)
        unique = list({e.id: e for e in entries}.values())
        known = await self._store.views.history_known([e.id for e in unique])
        fresh = [e for e in unique if e.id not in known]
        for start in range(0, len(fresh), IMPORT_CHUNK):
            plaintexts = [encode_create(e) for e in fresh[start : start + IMPORT_CHUNK]]
            records = await self._store.append(self._writer(), TAG, plaintexts)
            await self._views.apply_written(records, plaintexts)  # no need to decrypt
            if progress is not None:
                progress(start + len(records))
        await self._views.catch_up(progress=view_progress)
        return ImportResult(len(fresh), len(entries) - len(fresh))
