"""The record store: the only package that talks to SQLite (through aiosqlite).

`core` holds the log's rules (appends, received batches, forks, reads), `known` finds
the records of a received batch held already (by a plain read), `sqlite` the
connections and transactions, `schema` the migrations, `views` the kv and history
tables, `atuin` the reader of an atuin `history.db` (for imports).
"""

from peer.store.core import DEFAULT_CHUNK, InsertResult, Prepared, Store
from peer.store.forks import ForkEvidence
from peer.store.known import Unheld
from peer.store.peers import Invitations, TrustedPeer, TrustList
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

__all__ = [
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
]
