"""Segments: a run of consecutive records of one log as one byte string.

A segment is the concatenation of its records' entries, each

    entry = u32 len(hash_input) || hash_input || u8 len(sig) || sig

where `hash_input` is exactly the record hash input of docs/protocol.md §3.3
(`records.hash_input`, the one place that builds it). So a record's hash is SHA-256 of a
slice, with no re-encoding, and its `prev` is the slice's last 32 bytes: checking a
chain is a slice compare. The store keeps a log as a few such rows instead of a row per
record (issue 17); signatures are still verified only in `peer.crypto`.

Everything read from a segment is bounds-checked as a record from the wire would be:
a malformed segment raises InvalidRecord saying what is wrong and where.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn, overload

from peer.errors import ForgeryError, IntegrityError, InvalidRecord
from peer.records import (
    HASH_LEN,
    HASH_PREFIX_V1,
    HOST_LEN,
    ID_LEN,
    MAX_IDX,
    MAX_PAYLOAD,
    MAX_TIMESTAMP,
    MAX_WRAPPED_KEY,
    RECORD_FRAMING,
    SIG_LEN,
    ZERO_HASH,
    LogKey,
    Record,
    check_record,
    check_tag,
    group_by_log,
    hash_input,
    valid_version,
)

_U32 = struct.Struct(">I")
_U64X2 = struct.Struct(">QQ")
_PREFIX_LEN = len(HASH_PREFIX_V1)
# hash_input's bytes besides tag, version, payload and wrapped key: the prefix, id,
# host, the two u8 lengths, idx and timestamp, the u32 length, the u8 length and prev
FIXED = _PREFIX_LEN + ID_LEN + HOST_LEN + 1 + 16 + 1 + 4 + 1 + HASH_LEN
MAX_HASH_INPUT = FIXED + 64 + 16 + MAX_PAYLOAD + MAX_WRAPPED_KEY
_LENGTHS = [bytes((n,)) for n in range(256)]
_TAG_AT = _PREFIX_LEN + ID_LEN + HOST_LEN  # offset of the tag's length in hash_input

Span = tuple[int, int, int]  # one entry: where hash_input starts, where it ends, entry end


def encode(records: Iterable[Record]) -> bytes:
    """The segment of `records` (consecutive records of one log, not checked here)."""
    return b"".join(entries(records))


def entries(records: Iterable[Record]) -> list[bytes]:
    """Each record's entry: a segment is their concatenation."""
    return [entry(hash_input(record), record.sig) for record in records]


def entry(digest_input: bytes, sig: bytes) -> bytes:
    """One record's entry, from its `records.hash_input` (which a writer has at hand:
    it hashed it) and its signature: u32 length | hash_input | u8 length | sig."""
    return b"".join((_U32.pack(len(digest_input)), digest_input, _LENGTHS[len(sig)], sig))


def walk(data: bytes) -> Iterator[Span]:
    """Each entry's (hash_input start, hash_input end, entry end), every length
    checked against the bounds of a record and against the bytes left."""
    pos, size = 0, len(data)
    unpack = _U32.unpack_from
    while pos < size:
        if pos + 4 > size:
            raise InvalidRecord(f"segment: the entry at byte {pos} is cut short in its length")
        (length,) = unpack(data, pos)
        if not FIXED <= length <= MAX_HASH_INPUT:
            raise InvalidRecord(
                f"segment: the entry at byte {pos} claims {length} bytes of record, "
                f"outside {FIXED}..{MAX_HASH_INPUT}"
            )
        start = pos + 4
        end = start + length
        if end >= size:
            raise InvalidRecord(f"segment: the entry at byte {pos} runs past the segment's end")
        sig_len = data[end]
        if sig_len not in (0, SIG_LEN):
            raise InvalidRecord(
                f"segment: the entry at byte {pos} has a {sig_len}-byte signature "
                f"(must be 0 or {SIG_LEN})"
            )
        pos = end + 1 + sig_len
        if pos > size:
            raise InvalidRecord(f"segment: the signature at byte {end + 1} runs past the end")
        yield start, end, pos


def spans(data: bytes) -> list[Span]:
    """All of `walk(data)`."""
    return list(walk(data))


def count(data: bytes) -> int:
    """How many entries `data` holds (every length checked)."""
    return sum(1 for _ in walk(data))


def cut(data: bytes, skip: int, take: int) -> bytes:
    """The segment of `take` entries after the first `skip` (no copy for all of it)."""
    if skip < 0 or take < 0:
        raise ValueError(f"cut: skip {skip} and take {take} must not be negative")
    if not take:
        return b""
    begin = end = 0
    for n, (start, _, stop) in enumerate(walk(data)):
        if n == skip:
            begin = start - 4
        if n == skip + take - 1:
            end = stop
            break
    else:
        raise InvalidRecord(f"segment: it holds fewer than {skip + take} records")
    return data if begin == 0 and end == len(data) else data[begin:end]


def first_idx(data: bytes) -> int:
    """The idx of the first record of a non-empty segment, without decoding it."""
    for start, end, _ in walk(data):
        at = start + _TAG_AT
        idx_at = at + 1 + data[at]
        if idx_at + 16 > end:
            raise InvalidRecord("segment: the first record is cut short in its idx")
        return int(_U64X2.unpack_from(data, idx_at)[0])
    raise InvalidRecord("segment: it holds no record")


def decode(data: bytes, start_idx: int | None = None, take: int | None = None) -> list[Record]:
    """The records of a segment (from idx `start_idx`, `take` of them: a slice), each
    bounds-checked, all consecutive records of one log."""
    skip = 0 if start_idx is None else start_idx - first_idx(data)
    if skip < 0:
        raise InvalidRecord(f"segment: idx {start_idx} comes before its first record")
    records: list[Record] = []
    keep = records.append
    stop_at = None if take is None else skip + take
    for n, (start, end, stop) in enumerate(walk(data)):
        if n < skip:
            continue
        if n == stop_at:
            break
        record = _record(data[start:end], data[end + 1 : stop])
        if records:
            before = records[-1]
            if not (
                record.idx == before.idx + 1
                and record.host == before.host
                and record.tag == before.tag
            ):
                raise InvalidRecord(
                    f"segment: record {n} is not the record after #{before.idx} of its log"
                )
        keep(record)
    wanted = 1 if take is None and start_idx is not None else take or 0
    if len(records) < wanted:
        raise InvalidRecord(f"segment: it holds fewer records than asked from idx {start_idx}")
    return records


def _record(digest_input: bytes, sig: bytes) -> Record:
    """A record parsed back from its hash_input, every bound checked (`check_record`)."""
    h = digest_input
    if h[:_PREFIX_LEN] != HASH_PREFIX_V1:
        raise InvalidRecord("segment: a record does not start with the prefix peer.record.v1")
    try:
        p = _TAG_AT
        tag_end = p + 1 + h[p]
        tag = h[p + 1 : tag_end].decode("ascii")
        idx, timestamp = _U64X2.unpack_from(h, tag_end)
        p = tag_end + 16
        version_end = p + 1 + h[p]
        version = h[p + 1 : version_end].decode("ascii")
        (payload_len,) = _U32.unpack_from(h, version_end)
        p = version_end + 4 + payload_len
        payload = h[version_end + 4 : p]
        key_end = p + 1 + h[p]
        wrapped_key = h[p + 1 : key_end]
    except (IndexError, struct.error) as exc:
        raise InvalidRecord("segment: a record's lengths run past its end") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRecord("segment: a record's tag or version is not ASCII") from exc
    if key_end + HASH_LEN != len(h):
        raise InvalidRecord(
            f"segment: a record's lengths add up to {key_end + HASH_LEN} bytes, not {len(h)}"
        )
    return check_record(
        Record(
            h[_PREFIX_LEN : _PREFIX_LEN + ID_LEN],
            h[_PREFIX_LEN + ID_LEN : _TAG_AT],
            tag,
            idx,
            timestamp,
            version,
            payload,
            wrapped_key,
            h[key_end:],
            sig,
        )
    )


def hashes(data: bytes) -> list[bytes]:
    """Each record's hash: SHA-256 of its hash_input, a slice (no decoding)."""
    view = memoryview(data)
    sha256 = hashlib.sha256
    return [sha256(view[start:end]).digest() for start, end, _ in walk(data)]


def message_bytes_at_most(part: Segment) -> int:
    """At most the `records.message_size` total of a segment's records, from its length
    alone (each entry is its hash input and at least 5 bytes more): enough to tell,
    without a walk, that a whole segment fits a message."""
    return len(part.data) + part.count * max(0, RECORD_FRAMING - FIXED - 5)


def layout(data: bytes) -> list[tuple[int, bool, int]]:
    """(`records.message_size`, signed?, the byte offset where the entry ends) of each
    record: what a sender needs to cut a segment into messages, in one walk."""
    framing = RECORD_FRAMING - FIXED
    return [(end - start + framing, stop > end + 1, stop) for start, end, stop in walk(data)]


def sizes(data: bytes) -> list[tuple[int, bool]]:
    """(`records.message_size`, signed?) of each record, from the lengths alone."""
    return [(size, signed) for size, signed, _ in layout(data)]


# -- segments as a unit of transfer -----------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Checked:
    """What `check` proved of a segment's bytes, for the signature rules in `crypto`."""

    hashes: list[bytes]  # each record's hash
    first_prev: bytes  # the first record's `prev`: links it to what comes before
    signed: dict[int, bytes]  # position in the segment -> signature, of signed records
    payloads: list[int]  # each record's payload bytes
    newest: int  # the largest timestamp


def check(segment: Segment) -> Checked:
    """Prove the header against the bytes: every entry's bounds, host, tag, idx (the
    header's, consecutive), and the chain inside (each `prev` the hash before it).
    InvalidRecord or ForgeryError saying where, as for records from the wire.

    The fast path is one test per entry (this runs for every record received, and is
    most of what receiving costs); on a failure, `_explain` walks the segment again,
    field by field, to say what is wrong."""
    claim = _claim(segment)
    data = segment.data
    size, view, sha256 = len(data), memoryview(data), hashlib.sha256
    u32, u64x2 = _U32.unpack_from, _U64X2.unpack_from
    idx_at = _PREFIX_LEN + ID_LEN + len(claim)  # an entry's idx, from its hash input
    claim_at = _PREFIX_LEN + ID_LEN
    hashes: list[bytes] = []
    payloads: list[int] = []
    signed: dict[int, bytes] = {}
    keep_hash, keep_payload = hashes.append, payloads.append
    version = first_prev = digest = b""
    pos = newest = n = 0
    idx = segment.first_idx
    while pos < size:
        start = pos + 4
        try:
            (length,) = u32(data, pos)
            end = start + length
            got, timestamp = u64x2(data, start + idx_at)
            version_at = start + idx_at + 16
            version_end = version_at + 1 + data[version_at]
            (payload_len,) = u32(data, version_end)
            key_at = version_end + 4 + payload_len
            key_len, sig_len = data[key_at], data[end]
        except (struct.error, IndexError):
            _explain(segment)
            raise  # unreachable: _explain raises
        stop = end + 1 + sig_len
        if not (
            FIXED <= length <= MAX_HASH_INPUT
            and stop <= size
            and (sig_len == SIG_LEN or not sig_len)
            and got == idx
            and timestamp <= MAX_TIMESTAMP
            and payload_len <= MAX_PAYLOAD
            and key_len <= MAX_WRAPPED_KEY
            and key_at + 1 + key_len + HASH_LEN == end
            and data.startswith(HASH_PREFIX_V1, start)
            and data.startswith(claim, start + claim_at)
            and (n == 0 or data.startswith(digest, end - HASH_LEN))
        ):
            _explain(segment)
        if data[version_at:version_end] != version:
            version = data[version_at:version_end]
            if not _valid_version_bytes(version[1:]):
                _explain(segment)
        if n == 0:
            first_prev = data[end - HASH_LEN : end]
        digest = sha256(view[start:end]).digest()
        keep_hash(digest)
        keep_payload(payload_len)
        if sig_len:
            signed[n] = data[end + 1 : stop]
        newest = max(newest, timestamp)
        idx += 1
        n += 1
        pos = stop
    if n != segment.count or (segment.first_idx == 0 and first_prev != ZERO_HASH):
        _explain(segment)
    return Checked(hashes, first_prev, signed, payloads, newest)


def _claim(segment: Segment) -> bytes:
    """The header's host and tag as every entry holds them; InvalidRecord if the header
    is out of bounds."""
    tag = check_tag(segment.tag).encode()
    if len(segment.host) != HOST_LEN:
        raise InvalidRecord(f"segment: a host id is {HOST_LEN} bytes, not {len(segment.host)}")
    if not (segment.first_idx >= 0 and segment.count > 0 and segment.end - 1 <= MAX_IDX):
        raise InvalidRecord(
            f"segment: {segment.count} records from idx {segment.first_idx} are out of bounds"
        )
    return segment.host + _LENGTHS[len(tag)] + tag


def _explain(segment: Segment) -> NoReturn:
    """Raise what is wrong with a segment `check` refused: field by field, entry by
    entry (the slow path)."""
    data, log = segment.data, segment.log
    claim = _claim(segment)
    claim_at = _PREFIX_LEN + ID_LEN
    idx_at = claim_at + len(claim)
    digest = version_seen = b""
    n = -1
    idx = segment.first_idx
    for n, (start, end, _) in enumerate(walk(data)):
        where = f"record {log}#{idx}"
        if data[start : start + _PREFIX_LEN] != HASH_PREFIX_V1:
            raise InvalidRecord(f"segment: {where} does not start with the prefix peer.record.v1")
        if data[start + claim_at : start + idx_at] != claim:
            raise InvalidRecord(f"segment: entry {n} is not a record of log {log}")
        got, timestamp = _U64X2.unpack_from(data, start + idx_at)
        if got != idx:
            raise InvalidRecord(
                f"segment: entry {n} is #{got}, not #{idx}: a segment holds consecutive "
                "records of one log"
            )
        if timestamp > MAX_TIMESTAMP:
            raise InvalidRecord(f"{where}: timestamp out of range")
        _, version_seen = _body(data, start + idx_at + 16, end, where, version_seen)
        prev = data[end - HASH_LEN : end]
        if n and prev != digest:
            raise ForgeryError(
                f"{where}: prev is not the hash of record #{idx - 1} (one of the two was altered)"
            )
        if idx == 0 and prev != ZERO_HASH:
            raise InvalidRecord(f"{where}: the first record of a log has a zero prev")
        digest = hashlib.sha256(data[start:end]).digest()
        idx += 1
    if n + 1 != segment.count:
        raise InvalidRecord(f"segment: it holds {n + 1} records, its header says {segment.count}")
    raise InvalidRecord(f"segment: the segment of {log} from idx {segment.first_idx} is malformed")


def _body(data: bytes, at: int, end: int, where: str, version_seen: bytes) -> tuple[int, bytes]:
    """Check an entry's lengths from its version on (`at`) to its `prev` (`end`):
    (its payload's length, its version field: `version_seen` is valid already)."""
    version_end = at + 1 + data[at]
    version = data[at:version_end]
    if version != version_seen and not _valid_version_bytes(version[1:]):
        raise InvalidRecord(f"{where}: invalid version {version[1:]!r}")
    if version_end + 4 > end - HASH_LEN - 1:
        raise InvalidRecord(f"segment: {where}'s lengths run past its end")
    (payload_len,) = _U32.unpack_from(data, version_end)
    key_at = version_end + 4 + payload_len
    if key_at >= end or payload_len > MAX_PAYLOAD or data[key_at] > MAX_WRAPPED_KEY:
        raise InvalidRecord(f"segment: {where}'s payload or wrapped key is out of bounds")
    if key_at + 1 + data[key_at] + HASH_LEN != end:
        raise InvalidRecord(f"segment: {where}'s lengths do not add up to its entry's length")
    return payload_len, version


def _valid_version_bytes(raw: bytes) -> bool:
    try:
        return valid_version(raw.decode("ascii"))
    except UnicodeDecodeError:
        return False
