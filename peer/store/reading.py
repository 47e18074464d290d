"""The store's reads: heads and the index, ranges of a log, scans in arrival order,
the clock floor. Nothing here writes; `Store` (`peer.store.core`) adds the writes and
their rules on top.
"""

from __future__ import annotations

from peer.errors import IntegrityError, InvalidRecord
from peer.records import MAX_IDX, Head, LogKey, Record, check_tag
from peer.segment import Segment, decode, sizes, take_range
from peer.store.rows import CLOCK_FLOOR, HEAD_OF, head_of_row
from peer.store.segments import (
    ARRIVALS_AFTER,
    ARRIVALS_NEWEST,
    MAX_SQL_INT,
    SEGMENTS_OF,
    Run,
    arrival_back,
    range_params,
    slices,
    wanted_idx,
)
from peer.store.sqlite import Database


class Reads:
    """Reads of one store's database (the base of `Store`)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def stored_head(self, log: LogKey) -> Head:
        """The head of `log` as committed now (a log not held: Head(0))."""
        rows = await self._database.fetch(HEAD_OF, (log.host, log.tag))
        return head_of_row(rows[0] if rows else None)[0]

    # -- clock ------------------------------------------------------------------

    async def clock_floor(self) -> int:
        """The largest timestamp this store has issued or accepted (the HLC state)."""
        return await self._database.read_scalar(CLOCK_FLOOR)

    # -- reads ------------------------------------------------------------------

    async def index(self, after: LogKey | None = None, limit: int = -1) -> dict[LogKey, Head]:
        """Every log held here with its length and head hash (from `heads`, no scan),
        in (host, tag) order; or up to `limit` of them after the log `after`."""
        where, params = "", list[object]()
        if after is not None:
            where, params = "WHERE (host, tag) > (?, ?)", [after.host, after.tag]
        rows = await self._database.fetch(
            f"SELECT host, tag, next_idx, head_hash FROM heads {where} ORDER BY host, tag LIMIT ?",
            (*params, limit),
        )
        return {LogKey(h, t): Head(n, d) for h, t, n, d in rows}

    async def heads_of(self, tag: str) -> dict[bytes, Head]:
        """Every host's log of one tag held here (a scan of the heads, not the records)."""
        rows = await self._database.fetch(
            "SELECT host, next_idx, head_hash FROM heads WHERE tag = ?", (check_tag(tag),)
        )
        return {h: Head(n, d) for h, n, d in rows}

    async def frozen_logs(self) -> set[LogKey]:
        """Logs that hold fork evidence and accept nothing more."""
        rows = await self._database.fetch("SELECT host, tag FROM heads WHERE frozen")
        return {LogKey(h, t) for h, t in rows}

    async def read_range(self, host: bytes, tag: str, start: int, limit: int) -> list[Record]:
        """Up to `limit` records of one log from idx `start`, in idx order."""
        found = await self._pieces(host, tag, start, limit)
        return [record for piece in found for record in decode(piece)]

    async def read_segments(self, host: bytes, tag: str, start: int, limit: int) -> list[Segment]:
        """Up to `limit` records of one log from idx `start`, as stored: segments, the
        first and last sliced to the range (what a pull or push sends as it is)."""
        if not 0 <= start <= MAX_IDX or limit < 0:
            raise InvalidRecord(f"range start {start} / limit {limit} out of bounds")
        rows = await self._database.fetch(SEGMENTS_OF, range_params(host, tag, start, limit))
        return [Segment(host, tag, *found) for found in slices(rows, start, limit)]

    async def _pieces(self, host: bytes, tag: str, start: int, limit: int) -> list[bytes]:
        """The segment bytes of up to `limit` records of one log from idx `start`."""
        return [part.data for part in await self.read_segments(host, tag, start, limit)]

    async def record_sizes(
        self, host: bytes, tag: str, start: int, limit: int
    ) -> list[tuple[int, bool]]:
        """(bytes in a message at most, signed?) of up to `limit` records from idx
        `start`, as `records.message_size`: lets a sender cut batches by size without
        loading the payloads."""
        found = await self._pieces(host, check_tag(tag), start, limit)
        return [size for piece in found for size in sizes(piece)]

    async def scan(
        self, *, tag: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[tuple[int, Record]]:
        """Records in arrival order after sequence number `after`, with their numbers."""
        found: list[tuple[int, Record]] = []
        for arrival, part in await self.scan_segments(tag=tag, after=after, limit=limit):
            found += zip(range(arrival, arrival + part.count), part.records(), strict=True)
        return found

    async def scan_segments(
        self, *, tag: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[tuple[int, Segment]]:
        """What arrived after sequence number `after`, in arrival order, as stored:
        segments (sliced), each with the arrival number of its first record. Nothing
        is decoded (the live feed reads every record a node stores this way).

        Reads the arrival runs, then each log's segments once: within a log, arrival
        order is idx order, so the records a scan wants of a log are one idx range."""
        sql, params = ARRIVALS_AFTER, list[object]([after])
        if tag is not None:
            sql, params = sql + " AND tag = ?2", [*params, check_tag(tag)]
        sql += f" ORDER BY first_arrival LIMIT ?{len(params) + 1}"
        runs: list[Run] = await self._database.fetch(sql, (*params, min(limit, MAX_SQL_INT)))
        parts = wanted_idx(runs, after, limit)
        spans: dict[tuple[bytes, str], tuple[int, int]] = {}
        for _, (_, _, host, run_tag, _), first_idx, take in parts:
            low, high = spans.get((host, run_tag), (first_idx, first_idx))
            spans[host, run_tag] = (min(low, first_idx), max(high, first_idx + take))
        held: dict[tuple[bytes, str], list[Segment]] = {}
        for (host, run_tag), (low, high) in spans.items():
            held[host, run_tag] = await self.read_segments(host, run_tag, low, high - low)
            if sum(part.count for part in held[host, run_tag]) != high - low:
                raise IntegrityError(
                    f"log {LogKey(host, run_tag)}: records {low}..{high - 1} arrived "
                    "but are not all held"
                )
        found: list[tuple[int, Segment]] = []
        for first_arrival, (_, _, host, run_tag, _), first_idx, take in parts:
            arrival = first_arrival
            for part in take_range(held[host, run_tag], first_idx, take):
                found.append((arrival, part))
                arrival += part.count
        return found

    async def last_seq(self, tag: str | None = None, back: int = 0) -> int:
        """The arrival number `back` records before the newest (0 if there are fewer)."""
        sql, params = ARRIVALS_NEWEST, list[object]()
        if tag is not None:
            sql, params = sql + " WHERE tag = ?", [check_tag(tag)]
        sql += " ORDER BY first_arrival DESC LIMIT ?"
        runs = await self._database.fetch(sql, (*params, min(back + 1, MAX_SQL_INT)))
        return arrival_back(runs, back)

    async def segment_rows(self) -> int:
        """How many segment rows hold the records (compaction lowers it)."""
        return await self._database.read_scalar("SELECT count(*) FROM segments")
