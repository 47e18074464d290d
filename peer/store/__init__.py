"""The record store: the only package that talks to SQLite (through aiosqlite).

`core` holds the log's rules (appends, received batches, forks, reads), `sqlite` the
connections and transactions, `schema` the migrations.
"""

from peer.store.core import DEFAULT_CHUNK, InsertResult, Prepared, Store
from peer.store.forks import ForkEvidence
from peer.store.peers import TrustedPeer, TrustList
from peer.store.rows import RECORD_COLUMNS
from peer.store.sqlite import Faults

__all__ = [
    "DEFAULT_CHUNK",
    "RECORD_COLUMNS",
    "Faults",
    "ForkEvidence",
    "InsertResult",
    "Prepared",
    "Store",
    "TrustList",
    "TrustedPeer",
]
