"""What the KV store and the shell history share: reads go through the node's caught-up
views, writes append records signed by this node's author (a relay has none).

An app also tells the view engine what its records mean: a `Decide` function, entered
in `peer.apps.views.APPS` under the app's tag. A third app is its own module, one line
there, and its tables in `peer.store.views`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from peer.crypto import Author
from peer.records import Record
from peer.relay import CANNOT_WRITE, require_sync_key
from peer.store.views import Decision

if TYPE_CHECKING:  # the shell hook's lean path imports apps, never the async store
    from peer.store import Store

Decide = Callable[[Record, bytes], Decision]  # Malformed when a payload follows no format


class CaughtUp(Protocol):
    """The views as an app reads them: brought up to date first (`ViewEngine`)."""

    store: Store

    async def catch_up(
        self, required: bool = False, progress: Callable[[int], None] | None = None
    ) -> Any: ...

    async def apply_written(
        self, records: Sequence[Record], plaintexts: Sequence[bytes]
    ) -> None: ...


class App:
    """One app on one node's store."""

    def __init__(self, views: CaughtUp, author: Author | None) -> None:
        self._views = views
        self._store = views.store
        self._author = author

    def _writer(self) -> Author:
        return require_sync_key(self._author, CANNOT_WRITE)
