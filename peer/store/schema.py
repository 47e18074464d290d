"""The store's SQL schema, as numbered migrations applied by `peer.store`.

`PRAGMA user_version` holds the number of the last migration applied. A migration is
never edited once released: add the next number instead.
"""

from __future__ import annotations

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # seq is the arrival order (tail, --follow); no separate index on id: it costs
        # 1.1-1.5x on insert [limits] and nothing looks records up by id.
        """CREATE TABLE records (
            seq INTEGER PRIMARY KEY,
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            idx INTEGER NOT NULL,
            id BLOB NOT NULL,
            timestamp INTEGER NOT NULL,
            version TEXT NOT NULL,
            payload BLOB NOT NULL,
            wrapped_key BLOB NOT NULL,
            prev BLOB NOT NULL,
            sig BLOB NOT NULL,
            UNIQUE (host, tag, idx)
        )""",
        """CREATE TABLE heads (
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            next_idx INTEGER NOT NULL,
            head_hash BLOB NOT NULL,
            frozen INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (host, tag)
        )""",
        """CREATE TABLE hosts (
            host BLOB PRIMARY KEY,
            public_key BLOB NOT NULL
        )""",
        """CREATE TABLE forks (
            fork_id INTEGER PRIMARY KEY,
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            idx INTEGER NOT NULL,
            held_hash BLOB NOT NULL,
            detected_at INTEGER NOT NULL
        )""",
        """CREATE TABLE fork_records (
            fork_id INTEGER NOT NULL REFERENCES forks (fork_id),
            position INTEGER NOT NULL,
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            idx INTEGER NOT NULL,
            id BLOB NOT NULL,
            timestamp INTEGER NOT NULL,
            version TEXT NOT NULL,
            payload BLOB NOT NULL,
            wrapped_key BLOB NOT NULL,
            prev BLOB NOT NULL,
            sig BLOB NOT NULL,
            PRIMARY KEY (fork_id, position)
        )""",
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value
        )""",
    ),
    2: (
        # The trust list: the nodes this node talks to, pinned by certificate hash.
        """CREATE TABLE peers (
            node_id BLOB PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            certificate BLOB,
            added_at INTEGER NOT NULL
        )""",
    ),
    3: (
        # One-time pairing invitations; only a hash of each secret is kept.
        """CREATE TABLE invitations (
            secret_hash BLOB PRIMARY KEY,
            relay INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at INTEGER
        )""",
    ),
    4: (
        # Views on the kv and history logs (peer.store.views). `view_cursors.next_idx`:
        # every record of the log below it is applied; it moves in the same transaction
        # as the view rows, so a crash never leaves a view stale or applied twice.
        """CREATE TABLE view_cursors (
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            next_idx INTEGER NOT NULL,
            undecryptable INTEGER NOT NULL DEFAULT 0,
            unknown_version INTEGER NOT NULL DEFAULT 0,
            malformed INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (host, tag)
        )""",
        # One row per (namespace, key): the winner so far; value NULL is a tombstone,
        # kept so that an older set arriving later still loses.
        """CREATE TABLE kv (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB,
            timestamp INTEGER NOT NULL,
            host BLOB NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (ns, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE history (
            id TEXT PRIMARY KEY,
            command TEXT NOT NULL,
            cwd TEXT NOT NULL,
            exit INTEGER,
            duration INTEGER,
            timestamp INTEGER NOT NULL,
            hostname TEXT NOT NULL,
            session TEXT NOT NULL,
            record_timestamp INTEGER NOT NULL,
            host BLOB NOT NULL,
            idx INTEGER NOT NULL
        )""",
        "CREATE INDEX history_by_time ON history (timestamp, id)",
        # Deleted entry ids, kept even for ids not created yet (the delete may arrive first).
        "CREATE TABLE history_deleted (id TEXT PRIMARY KEY) WITHOUT ROWID",
    ),
    5: (
        # The history search (peer.store.finder) groups by command over the whole view
        # when the newest rows do not fill a screen: this index covers that scan (every
        # column it reads, in command order), twice as fast as reading the table.
        "CREATE INDEX history_by_command ON history (command, timestamp, hostname, session, cwd)",
    ),
    6: (
        # Segments (issue 17): a row per run of consecutive records of one log, `data`
        # the concatenation of their entries (peer.segment), last in the row so that
        # reading the other columns never touches its overflow pages.
        """CREATE TABLE segments (
            seq INTEGER PRIMARY KEY,
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            first_idx INTEGER NOT NULL,
            count INTEGER NOT NULL,
            data BLOB NOT NULL,
            UNIQUE (host, tag, first_idx)
        )""",
        # The arrival order (tail, --follow, the live feed): a row per run of one log as
        # it arrived, records first_arrival .. first_arrival + count - 1 at idx
        # first_idx on. Continues the seq numbers of the table `records`.
        """CREATE TABLE arrivals (
            first_arrival INTEGER PRIMARY KEY,
            count INTEGER NOT NULL,
            host BLOB NOT NULL,
            tag TEXT NOT NULL,
            first_idx INTEGER NOT NULL
        )""",
    ),
    # Between 6 and 7, `peer.store.convert` moves the rows of `records` into segments,
    # a chunk per transaction (resumable: a killed conversion goes on at the next open).
    7: ("DROP TABLE records",),
}
LATEST_VERSION = max(MIGRATIONS)
