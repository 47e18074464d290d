"""The record store: the only package that talks to SQLite (through aiosqlite).

`core` holds the log's rules (appends, received batches, forks, reads), `sqlite` the
connections and transactions, `schema` the migrations.
"""

from peer.store.core import (
    DEFAULT_CHUNK,
    RECORD_COLUMNS,
    ForkEvidence,
    InsertResult,
    Prepared,
    Store,
)
from peer.store.peers import TrustedPeer, TrustList

__all__ = [
    "DEFAULT_CHUNK",
    "RECORD_COLUMNS",
    "ForkEvidence",
    "InsertResult",
    "Prepared",
    "Store",
    "TrustList",
    "TrustedPeer",
]
