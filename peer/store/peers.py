"""The trust list, kept in the store so a running daemon sees changes without a restart."""

from __future__ import annotations

import time
from dataclasses import dataclass

from peer.names import clean_name
from peer.store.sqlite import Database


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    """A pinned node: its id (certificate hash), and what we know to reach it."""

    node_id: bytes
    name: str = ""
    address: str = ""
    certificate: bytes | None = None


class TrustList:
    """Read and change the `peers` table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def add(self, peer: TrustedPeer) -> None:
        """Pin a node, or update its name, address or certificate (kept if not given).
        The name is stored cleaned (`clean_name`): it may come from the node itself."""
        async with self._database.write() as db:
            await db.execute(
                "INSERT INTO peers (node_id, name, address, certificate, added_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END, "
                "address = CASE WHEN excluded.address != '' THEN excluded.address "
                "ELSE address END, "
                "certificate = coalesce(excluded.certificate, certificate)",
                (
                    peer.node_id,
                    clean_name(peer.name),
                    peer.address,
                    peer.certificate,
                    time.time_ns(),
                ),
            )

    async def remove(self, node_id: bytes) -> bool:
        """Unpin a node; False if it was not pinned."""
        async with self._database.write() as db:
            cursor = await db.execute("DELETE FROM peers WHERE node_id = ?", (node_id,))
            return cursor.rowcount > 0

    async def all(self) -> list[TrustedPeer]:
        rows = await self._database.fetch(
            "SELECT node_id, name, address, certificate FROM peers ORDER BY added_at"
        )
        return [TrustedPeer(*row) for row in rows]


class Invitations:
    """One-time pairing invitations (`peer invite`), redeemed by the serving node."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(self, secret_hash: bytes, relay: bool, expires_at: int) -> None:
        async with self._database.write() as db:
            await db.execute(
                "INSERT INTO invitations (secret_hash, relay, expires_at) VALUES (?, ?, ?)",
                (secret_hash, int(relay), expires_at),
            )

    async def live(self, secret_hash: bytes, now: int) -> bool | None:
        """The relay flag of an unused, unexpired invitation; None if there is none."""
        rows = await self._database.fetch(
            "SELECT relay FROM invitations WHERE secret_hash = ? AND used_at IS NULL "
            "AND expires_at > ?",
            (secret_hash, now),
        )
        return None if not rows else bool(rows[0][0])

    async def redeem(self, secret_hash: bytes, now: int, joiner: TrustedPeer) -> bool:
        """Spend an invitation and pin its joiner, in one transaction; False if it was
        used or expired meanwhile. A node already pinned keeps its name and address
        (a join never renames a pin); one pinned by id alone gets the certificate."""
        async with self._database.write() as db:
            cursor = await db.execute(
                "UPDATE invitations SET used_at = ? WHERE secret_hash = ? AND used_at IS NULL "
                "AND expires_at > ? RETURNING relay",
                (now, secret_hash, now),
            )
            if await cursor.fetchone() is None:
                return False
            await db.execute(
                "INSERT INTO peers (node_id, name, address, certificate, added_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "certificate = coalesce(certificate, excluded.certificate)",
                (joiner.node_id, joiner.name, joiner.address, joiner.certificate, now),
            )
        return True
