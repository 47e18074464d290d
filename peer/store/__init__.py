"""The record store: the only package that talks to SQLite (through aiosqlite).

`core` holds the log's rules (appends, received batches, forks, reads), `known` finds
the records of a received batch held already (by a plain read), `sqlite` the
connections and transactions, `schema` the migrations, `compact` the background
merge of small segments, `views` the kv and history
tables, `atuin` the reader of an atuin `history.db` (for imports), `direct` one
short-lived process's synchronous access (the shell hook's append, the history search).

The names below load their module on first use (PEP 562), and nothing here imports
asyncio or aiosqlite at import time: so the shell hook and the search, which go through
`direct`, start without them (tests/test_history_hook.py checks what they import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peer.store.core import DEFAULT_CHUNK, InsertResult, Store, as_segments
    from peer.store.forks import ForkEvidence
    from peer.store.known import Unheld
    from peer.store.peers import Invitations, TrustedPeer, TrustList
    from peer.store.receive import Prepared
    from peer.store.rows import RECORD_COLUMNS
    from peer.store.sqlite import Faults
    from peer.store.views import (
        Decision,
        HistoryCreate,
        HistoryDelete,
        HistoryEntry,
        KvItem,
        KvRow,
        Pending,
        Skipped,
        ViewChunk,
        Views,
    )

_MODULES = {
    "core": ("DEFAULT_CHUNK", "InsertResult", "Store", "as_segments"),
    "forks": ("ForkEvidence",),
    "known": ("Unheld",),
    "peers": ("Invitations", "TrustList", "TrustedPeer"),
    "receive": ("Prepared",),
    "rows": ("RECORD_COLUMNS",),
    "sqlite": ("Faults",),
    "views": (
        "Decision",
        "HistoryCreate",
        "HistoryDelete",
        "HistoryEntry",
        "KvItem",
        "KvRow",
        "Pending",
        "Skipped",
        "ViewChunk",
        "Views",
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [  # every name is bound on first use, by `__getattr__`
    "DEFAULT_CHUNK",
    "RECORD_COLUMNS",
    "Decision",
    "Faults",
    "ForkEvidence",
    "HistoryCreate",
    "HistoryDelete",
    "HistoryEntry",
    "InsertResult",
    "Invitations",
    "KvItem",
    "KvRow",
    "Pending",
    "Prepared",
    "Skipped",
    "Store",
    "TrustList",
    "TrustedPeer",
    "Unheld",
    "ViewChunk",
    "Views",
    "as_segments",
]


def __getattr__(name: str) -> Any:
    """Load a name's module on first use (then it is a plain attribute)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'peer.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"peer.store.{module}"), name)
    globals()[name] = value
    return value
