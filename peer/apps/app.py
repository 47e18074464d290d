"""What the KV store and the shell history share: reads go through the node's caught-up
views, writes append records signed by this node's author (a relay has none)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peer.crypto import Author
from peer.relay import CANNOT_WRITE, require_sync_key

if TYPE_CHECKING:
    from peer.apps.views import ViewEngine


class App:
    """One app on one node's store."""

    def __init__(self, views: ViewEngine, author: Author | None) -> None:
        self._views = views
        self._store = views.store
        self._author = author

    def _writer(self) -> Author:
        return require_sync_key(self._author, CANNOT_WRITE)
