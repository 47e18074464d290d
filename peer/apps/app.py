"""What the KV store and the shell history share: reads go through the node's caught-up
views, writes append records signed by this node's author (a relay has none)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peer.crypto import Author
from peer.errors import UsageError

if TYPE_CHECKING:
    from peer.apps.views import ViewEngine


class App:
    """One app on one node's store."""

    def __init__(self, views: ViewEngine, author: Author | None) -> None:
        self._views = views
        self._store = views.store
        self._author = author

    def _writer(self) -> Author:
        if self._author is None:
            raise UsageError("this node holds no sync key (a relay), so it cannot write")
        return self._author
