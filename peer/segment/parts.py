"""Segments as a unit of transfer and storage: `Segment` (one log's run, with its
header: log, first idx, count), `Segments` (a batch of them that reads as records),
and cutting runs of them by idx.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from peer.errors import IntegrityError, InvalidRecord
from peer.records import (
    RECORD_FRAMING,
    LogKey,
    Record,
    group_by_log,
)
from peer.segment.encoding import FIXED, cut, decode, encode, walk


@dataclass(frozen=True, slots=True)
class Segment:
    """Records `first_idx` .. `first_idx + count - 1` of one log as segment bytes: what
    a store keeps and a peer of protocol 1.2 sends (docs/protocol.md §7.6). The header
    is a claim until `check` proves it against the bytes."""

    host: bytes
    tag: str
    first_idx: int
    count: int
    data: bytes

    @property
    def log(self) -> LogKey:
        return LogKey(self.host, self.tag)

    @property
    def end(self) -> int:
        """The idx after its last record."""
        return self.first_idx + self.count

    @classmethod
    def of(cls, records: Sequence[Record]) -> Segment:
        """The segment of `records`: consecutive records of one log (checked later)."""
        first = records[0]
        return cls(first.host, first.tag, first.idx, len(records), encode(records))

    def records(self) -> list[Record]:
        """Its records, each bounds-checked and matching the header."""
        found = decode(self.data)
        if len(found) != self.count or (
            found and (found[0].log != self.log or found[0].idx != self.first_idx)
        ):
            raise InvalidRecord(
                f"segment: its records are not {self.count} of {self.log} from idx {self.first_idx}"
            )
        return found

    def skip(self, n: int) -> Segment:
        """The same without its first `n` records."""
        return self.slice(n, self.count - n) if n > 0 else self

    def slice(self, skip: int, take: int) -> Segment:
        """`take` of its records after the first `skip` (itself when that is all)."""
        if skip == 0 and take == self.count:
            return self
        data = cut(self.data, skip, take)
        return Segment(self.host, self.tag, self.first_idx + skip, take, data)

    def join(self, after: Segment) -> Segment:
        """This segment followed by `after`, the next records of its log: the bytes
        joined (a segment is the concatenation of its entries)."""
        if after.log != self.log or after.first_idx != self.end:
            raise IntegrityError(
                f"segment: {after.log}#{after.first_idx} does not continue "
                f"{self.log} after #{self.end - 1}"
            )
        count = self.count + after.count
        return Segment(self.host, self.tag, self.first_idx, count, self.data + after.data)

    def signed_count(self) -> int:
        """How many of its records end on its last signed one (0 if none is signed):
        from the lengths alone."""
        signed = 0
        for n, (_, end, stop) in enumerate(walk(self.data), 1):
            if stop > end + 1:
                signed = n
        return signed


class Segments(Sequence[Record]):
    """A batch as segments, read as the records it holds: decoded only if someone
    iterates it (a v1 peer, a test), never on the way from the wire to the store."""

    __slots__ = ("_count", "_records", "parts")

    def __init__(self, parts: Sequence[Segment]) -> None:
        self.parts = list(parts)
        self._count = sum(part.count for part in self.parts)
        self._records: list[Record] | None = None

    @classmethod
    def of(cls, records: Sequence[Record]) -> Segments:
        """`records` as segments: each log's records (they may be interleaved, as in
        a v1 message), a segment per run of consecutive ones."""
        if isinstance(records, Segments):
            return records
        parts: list[Segment] = []
        for run in group_by_log(records).values():
            begin = 0
            for n in range(1, len(run) + 1):
                if n == len(run) or run[n].idx != run[n - 1].idx + 1:
                    parts.append(Segment.of(run[begin:n]))
                    begin = n
        return cls(parts)

    def runs(self) -> dict[LogKey, tuple[int, int]]:
        """(first idx, idx after the last) of each log it holds."""
        found: dict[LogKey, tuple[int, int]] = {}
        for part in self.parts:
            low, high = found.get(part.log, (part.first_idx, part.end))
            found[part.log] = (min(low, part.first_idx), max(high, part.end))
        return found

    def _decoded(self) -> list[Record]:
        if self._records is None:
            self._records = [record for part in self.parts for record in part.records()]
        return self._records

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        """Equal to the same records, as segments or as a list."""
        if isinstance(other, Segments | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Segments({len(self.parts)} segments, {self._count} records)"


def take_range(parts: Sequence[Segment], first_idx: int, count: int) -> list[Segment]:
    """Records `first_idx` .. `first_idx + count - 1` of `parts` (consecutive segments
    of one log), as slices of them."""
    end = first_idx + count
    taken: list[Segment] = []
    for part in parts:
        skip = max(0, first_idx - part.first_idx)
        take = min(part.end, end) - (part.first_idx + skip)
        if take > 0:
            taken.append(part.slice(skip, take))
    return taken


def runs_of(records: Sequence[Record]) -> dict[LogKey, tuple[int, int]]:
    """(first idx, idx after the last) of each log in a batch: from the headers of
    `Segments`, without decoding them; else from each record."""
    if isinstance(records, Segments):
        return records.runs()
    found: dict[LogKey, tuple[int, int]] = {}
    for record in records:
        low, high = found.get(record.log, (record.idx, record.idx + 1))
        found[record.log] = (min(low, record.idx), max(high, record.idx + 1))
    return found


def message_bytes_at_most(part: Segment) -> int:
    """At most the `records.message_size` total of a segment's records, from its length
    alone (each entry is its hash input and at least 5 bytes more): enough to tell,
    without a walk, that a whole segment fits a message."""
    return len(part.data) + part.count * max(0, RECORD_FRAMING - FIXED - 5)
