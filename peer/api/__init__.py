"""The Python API for programs: append to, read from and follow your own node.

A program talks to the running `peer serve` of a home over the home's Unix socket
(mode 0600: the file system, not TLS, decides who may connect). Records arrive
decrypted with the home's sync key; writes are signed and sealed by the daemon.

    import asyncio
    from peer import api

    async def main() -> None:
        async with await api.connect() as node:  # --home: api.connect("/path/to/home")
            await node.append("notes", "hello from a program")
            async for message in node.subscribe(tags=["notes"]):
                print(message.host.hex()[:8], message.idx, message.text)

    asyncio.run(main())

`append` may be called by many tasks at once: calls made while others are under way
are sent together, and the daemon writes them in few transactions (each caller still
gets its own idx). A producer of many records writes through a stream instead:

    async with node.writer("events") as writer:
        for event in events:
            await writer.write(event)  # buffered; waits only when the daemon is behind
        durable = await writer.flush()  # the idx ranges now durable

`subscribe` first delivers what the node already holds (past `since`, per log), then
every record the node stores from then on, in idx order per log. To resume after a
restart, keep `since[message.log] = message.idx + 1` and pass it back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.api.writing import WRITE_BATCH, Appends, Writer, as_bytes
from peer.client import LocalClient
from peer.codec.local import Appended
from peer.crypto import SyncKey, open_or_why
from peer.errors import PeerError, UsageError
from peer.home import Home
from peer.locate import default_home
from peer.records import LogKey, Record

__all__ = ["Appended", "Connection", "Message", "Writer", "connect"]


@dataclass(frozen=True, slots=True)
class Message:
    """One record as a program sees it: metadata, and the plaintext (or why not)."""

    host: bytes
    tag: str
    idx: int
    timestamp: int
    id: bytes
    data: bytes | None
    error: str | None = None

    @property
    def log(self) -> LogKey:
        return LogKey(self.host, self.tag)

    @property
    def text(self) -> str | None:
        """The plaintext as UTF-8 text (with replacement characters if it is not)."""
        return None if self.data is None else self.data.decode("utf-8", "replace")


class Connection:
    """An open connection to a node's daemon; close it (or use `async with`)."""

    def __init__(self, client: LocalClient, sync_key: SyncKey | None, home: Path) -> None:
        self._client = client
        self._sync_key = sync_key
        self._appends = Appends(client)
        self.home = home

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._appends.close()
        await self._client.close()

    async def append(self, tag: str, *items: bytes | str) -> Appended:
        """Append one record per item to this node's log `tag`, in one transaction;
        returns once they are durable. Calls made at once are sent together."""
        if not items:
            raise UsageError("append needs at least one item")
        return await self._appends.append(tag, as_bytes(items))

    @contextlib.asynccontextmanager
    async def writer(self, tag: str, batch: int = WRITE_BATCH) -> AsyncIterator[Writer]:
        """A stream of appends to log `tag` (see `Writer`); at the end of the `async
        with` what was written is flushed, and the stream closed. If the body raises,
        what it had not sent yet is dropped, and `writer.acked` says what is durable."""
        writer = Writer(self._client.append_stream(), tag, batch)
        try:
            yield writer
        except BaseException:
            with contextlib.suppress(PeerError):
                await writer.close(flush=False)
            raise
        await writer.close()

    async def get_index(self) -> dict[LogKey, int]:
        """Every log the node holds, with its next idx (= the records held)."""
        remote = await self._client.get_index()
        return {log: head.next_idx for log, head in remote.logs.items()}

    async def status(self) -> dict[str, Any]:
        """The daemon's live state (the object `peer status --json` prints)."""
        return (await self._client.status()).as_json()

    async def subscribe(
        self,
        tags: Iterable[str] = (),
        hosts: Iterable[bytes] = (),
        since: Mapping[LogKey, int] | None = None,
    ) -> AsyncIterator[Message]:
        """Held records past `since`, then live ones; only `tags`/`hosts` if given."""
        async for records, _ in self._client.subscribe(since, hosts, tags):
            for record in records:
                yield self._open(record)

    def _open(self, record: Record) -> Message:
        data, why = open_or_why(self._sync_key, record)
        return Message(record.host, record.tag, record.idx, record.timestamp, record.id, data, why)


async def connect(home: str | os.PathLike[str] | None = None) -> Connection:
    """Connect to the running daemon of `home` ($PEER_HOME or the default if None)."""
    where = Home(Path(home) if home is not None else default_home(os.environ))
    serving = where.serving()
    if serving is None:
        raise UsageError(f"no `peer serve` runs for {where.root}: start it first")
    return Connection(LocalClient(serving.socket), where.load_sync_key(), where.root)
