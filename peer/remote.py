"""What the sync engine needs of a peer: the `Remote` protocol.

The grpc client (`peer.client.PeerClient`) is one implementation; an in-memory one
that calls a servicer through the same codec (`peer.service.memory.MemoryRemote`) is another,
for tests and simulations. The engine (`peer.sync`, `peer.mesh`) talks to this only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol

from peer.codec.wire import FollowControl, Followed, RemoteIndex
from peer.records import LogKey, Range, Record

# records (`Segments` from a peer of protocol 1.2), and host keys new to the stream
Batch = tuple[Sequence[Record], dict[bytes, bytes]]


class Remote(Protocol):
    """A peer's SyncService, as the sync engine uses it."""

    @property
    def target(self) -> str:
        """Who this is, for messages (an address)."""
        ...

    async def get_index(self) -> RemoteIndex:
        """Its node id, protocol version and index."""
        ...

    def pull(self, ranges: Iterable[Range], max_batch: int = 0) -> AsyncIterator[Batch]:
        """The records of `ranges`, batch by batch."""
        ...

    async def push(self, batches: AsyncIterator[Batch]) -> tuple[int, int]:
        """Send batches for it to store; (added, duplicates)."""
        ...

    def subscribe(
        self,
        since: Mapping[LogKey, int] | None = None,
        hosts: Iterable[bytes] = (),
        tags: Iterable[str] = (),
    ) -> AsyncIterator[Batch]:
        """Records from `since` on (per log), then live as it stores them."""
        ...

    def follow(self, controls: AsyncIterator[FollowControl]) -> AsyncIterator[Followed]:
        """Since 1.1: the records of the logs it feeds us (its own and those grafted),
        and notes of the other logs' heads, while `controls` says what we hold and
        grafts and prunes. A v1 peer raises Unsupported."""
        ...
