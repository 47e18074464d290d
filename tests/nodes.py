"""In-process nodes for the network tests: a real store on a SQLite file under tmp_path
served by a real grpc.aio server on 127.0.0.1:0, plus the helpers the tests share.

Every wait here is bounded: sessions run under `asyncio.wait_for`, and `eventually`
polls a condition a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from peer.client import PeerClient
from peer.crypto import Author, SyncKey, record_hash
from peer.records import LogKey, Record
from peer.remote import Batch
from peer.service import Limits, RunningServer, start_server
from peer.store import Store
from peer.sync import SyncSummary, sync_with
from tests.conftest import new_author

SESSION_TIMEOUT_S = 20.0
POLL_S = 0.01


@dataclass
class Node:
    """One in-process node: its author (host), its store and, if serving, its server."""

    name: str
    author: Author
    store: Store
    running: RunningServer | None = None
    limits: Limits | None = None
    clients: list[PeerClient] = field(default_factory=list)

    @property
    def host(self) -> bytes:
        return self.author.host

    @property
    def port(self) -> int:
        assert self.running is not None, f"node {self.name} does not serve"
        return self.running.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **options: float) -> PeerClient:
        """A client of this node's server, closed with the node if not closed before."""
        made = PeerClient(self.target, **options)
        self.clients.append(made)
        return made

    def log(self, tag: str) -> LogKey:
        return LogKey(self.host, tag)

    async def append_each(self, tag: str, count: int, size: int = 8) -> list[Record]:
        """`count` single-record appends to this node's own log: every record is signed."""
        written: list[Record] = []
        for _ in range(count):
            payload = f"{self.name}-{tag}-{len(written)}".encode().ljust(size, b".")
            written += await self.store.append(self.author, tag, [payload])
        return written

    async def restart(self) -> None:
        """Stop serving and close the store, then open both again, as a restarted node."""
        serve = self.running is not None
        if self.running is not None:
            await self.running.stop(grace=0.5)
            self.running = None
        await self.store.close()
        self.store = await Store.open(self.store.path)
        if serve:
            self.running = await start_server(
                self.store, f"node-{self.name}", "127.0.0.1:0", limits=self.limits
            )

    async def close(self) -> None:
        for made in self.clients:
            await made.close()
        if self.running is not None:
            await self.running.stop(grace=0.2)
        await self.store.close()


class Nodes:
    """Makes nodes under one directory and closes all of them at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Node] = []

    async def __aenter__(self) -> Nodes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for node in reversed(self.made):
            await node.close()

    async def node(
        self,
        name: str,
        *,
        sync: SyncKey | None = None,
        serve: bool = True,
        limits: Limits | None = None,
    ) -> Node:
        """A node with its own host; `sync` is its author's sync key (a new one if None)."""
        author = new_author(sync)
        store = await Store.open(self.root / f"{name}.db")
        await store.add_host(author.signing.public_key)
        node = Node(name, author, store, limits=limits)
        self.made.append(node)
        if serve:
            node.running = await start_server(store, f"node-{name}", "127.0.0.1:0", limits=limits)
        return node


async def sync(a: Node, b: Node, batch: int = 1000) -> SyncSummary:
    """One session: `a` (client) syncs with `b`'s server, bounded in time (with `a`'s
    host as its own, so that the summary reports what `b` held of it beyond `a`)."""
    async with PeerClient(b.target) as peer:
        session = sync_with(a.store, peer, batch=batch, own_host=a.host)
        return await asyncio.wait_for(session, SESSION_TIMEOUT_S)


async def everything(store: Store) -> dict[LogKey, list[Record]]:
    """Every record of every log the store holds, read back by idx."""
    index = await store.index()
    return {
        log: await store.read_range(log.host, log.tag, 0, head.next_idx + 1)
        for log, head in index.items()
    }


async def assert_converged(*stores: Store) -> dict[LogKey, list[Record]]:
    """Equal indexes, identical records, each log exactly idx 0..n-1 chained to its head."""
    first = await everything(stores[0])
    index = await stores[0].index()
    for other in stores[1:]:
        assert await other.index() == index
        assert await everything(other) == first
    for log, records in first.items():
        assert [r.idx for r in records] == list(range(index[log].next_idx))
        assert record_hash(records[-1]) == index[log].head_hash
    return first


async def batches_of(*items: Batch) -> AsyncIterator[Batch]:
    """The given batches as the async iterator `PeerClient.push` takes."""
    for item in items:
        yield item


def keys_of(*authors: Author) -> dict[bytes, bytes]:
    return {a.host: a.signing.public_key for a in authors}


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    """Poll `condition` until true, at most `timeout` seconds (a bounded loop)."""
    for _ in range(int(timeout / POLL_S) + 1):
        if await condition():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def next_idx(store: Store, log: LogKey) -> int:
    head = (await store.index()).get(log)
    return head.next_idx if head else 0


def ends_signed(records: Sequence[Record]) -> bool:
    """Each log's run within `records` is consecutive and ends on a signed record."""
    last: dict[LogKey, Record] = {}
    for record in records:
        before = last.get(record.log)
        if before is not None and record.idx != before.idx + 1:
            return False
        last[record.log] = record
    return all(record.sig for record in last.values())


@contextlib.asynccontextmanager
async def closing_gen(gen: AsyncIterator[Batch]) -> AsyncIterator[AsyncIterator[Batch]]:
    """Close a client stream generator at the end, whatever happens."""
    try:
        yield gen
    finally:
        await gen.aclose()  # type: ignore[attr-defined]
