"""Records, logs and indexes as plain data, with their canonical byte encodings.

Everything here is pure: no I/O, no crypto library. The canonical encodings are
fixed byte layouts (not protobuf) because signatures and AEAD tags are computed over
them. DO NOT CHANGE THEM: `tests/test_records.py` freezes them with a known vector,
and a change is a new version (a new prefix), never an edit.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from peer.errors import InvalidRecord

ID_LEN = 16
HOST_LEN = 16
HASH_LEN = 32
SIG_LEN = 64
ZERO_HASH = bytes(HASH_LEN)
MAX_IDX = 2**63 - 2  # next_idx = idx + 1 must still fit SQLite's signed 64-bit integer
MAX_TIMESTAMP = 2**63 - 1
MAX_PAYLOAD = 1 << 20
MAX_WRAPPED_KEY = 128
TAG_RE = re.compile(r"[a-z0-9._-]{1,64}")
VERSION_RE = re.compile(r"[a-z0-9._-]{1,16}")
# What a record adds to a message besides its payload, wrapped key, tag and version: the
# fixed fields (id, host, prev, sig), the two integers at their longest, each field's key
# and length prefix, and the record's own prefix in the repeated field (§10 of the doc).
RECORD_FRAMING = 171

AAD_PREFIX_V1 = b"peer.aad.v1\x00"
HASH_PREFIX_V1 = b"peer.record.v1\x00"
_U64 = struct.Struct(">Q")
_U64X2 = struct.Struct(">QQ")
_U32 = struct.Struct(">I")
_LENGTHS = [bytes((n,)) for n in range(256)]
_VERSION_7 = [bytes((0x70 | (n & 0x0F),)) for n in range(256)]
_VARIANT_10 = [bytes((0x80 | (n & 0x3F),)) for n in range(256)]


@dataclass(frozen=True, slots=True, order=True)
class LogKey:
    """One log: all records of one author host under one tag."""

    host: bytes
    tag: str

    def __str__(self) -> str:
        return f"{self.host.hex()}/{self.tag}"


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a log, as stored and sent: metadata in clear, payload sealed."""

    id: bytes
    host: bytes
    tag: str
    idx: int
    timestamp: int
    version: str
    payload: bytes
    wrapped_key: bytes
    prev: bytes
    sig: bytes = b""

    @property
    def log(self) -> LogKey:
        return LogKey(self.host, self.tag)


def _fast_record_init() -> None:
    """Give Record an `__init__` that sets its slots through their descriptors.

    A frozen dataclass's generated `__init__` assigns each field through
    `object.__setattr__` (about 3 µs for Record's ten fields); a record is built for every
    record received, read or written, so that was a fifth of a sync's CPU. The
    descriptors' own setters do the same assignment in about 0.6 µs, and the instance
    stays frozen (attribute assignment still raises FrozenInstanceError).
    """
    names = ("id", "host", "tag", "idx", "timestamp", "version")
    set_id, set_host, set_tag, set_idx, set_timestamp, set_version = (
        Record.__dict__[name].__set__ for name in names
    )
    set_payload, set_wrapped_key, set_prev, set_sig = (
        Record.__dict__[name].__set__ for name in ("payload", "wrapped_key", "prev", "sig")
    )

    def __init__(  # noqa: N807 - it is Record's __init__
        self: Record,
        id: bytes,
        host: bytes,
        tag: str,
        idx: int,
        timestamp: int,
        version: str,
        payload: bytes,
        wrapped_key: bytes,
        prev: bytes,
        sig: bytes = b"",
    ) -> None:
        set_id(self, id)
        set_host(self, host)
        set_tag(self, tag)
        set_idx(self, idx)
        set_timestamp(self, timestamp)
        set_version(self, version)
        set_payload(self, payload)
        set_wrapped_key(self, wrapped_key)
        set_prev(self, prev)
        set_sig(self, sig)

    __init__.__qualname__ = "Record.__init__"
    setattr(Record, "__init__", __init__)  # noqa: B010 - mypy forbids assigning a method


_fast_record_init()


@dataclass(frozen=True, slots=True)
class Head:
    """What a node holds of one log: the count of records and the hash of the last."""

    next_idx: int
    head_hash: bytes = ZERO_HASH


Index = Mapping[LogKey, Head]


@dataclass(frozen=True, slots=True)
class Written:
    """Where a local append put its records: their log, the idx of the first (the
    others follow it) and each one's timestamp."""

    log: LogKey
    first_idx: int
    timestamps: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.timestamps)

    def part(self, start: int, end: int) -> Written:
        """The records from position `start` up to `end` of these."""
        return Written(self.log, self.first_idx + start, self.timestamps[start:end])


@dataclass(frozen=True, slots=True, order=True)
class Range:
    """Records `start <= idx < end` of one log."""

    host: bytes
    tag: str
    start: int
    end: int

    @property
    def log(self) -> LogKey:
        return LogKey(self.host, self.tag)

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What one side must pull and push to equal the other, and logs that disagree."""

    pull: tuple[Range, ...] = ()
    push: tuple[Range, ...] = ()
    diverged: tuple[LogKey, ...] = field(default=())


def diff(local: Index, remote: Index) -> SyncPlan:
    """Ranges the local side lacks (pull) and the remote side lacks (push).

    Logs of equal length with different head hashes are reported as diverged: one of
    the two holds a fork, which only the records themselves can prove.
    """
    pull: list[Range] = []
    push: list[Range] = []
    diverged: list[LogKey] = []
    for log in sorted(set(local) | set(remote)):
        mine = local.get(log, Head(0))
        theirs = remote.get(log, Head(0))
        if mine.next_idx < theirs.next_idx:
            pull.append(Range(log.host, log.tag, mine.next_idx, theirs.next_idx))
        elif mine.next_idx > theirs.next_idx:
            push.append(Range(log.host, log.tag, theirs.next_idx, mine.next_idx))
        elif mine.head_hash != theirs.head_hash:
            diverged.append(log)
    return SyncPlan(tuple(pull), tuple(push), tuple(diverged))


def check_tag(tag: str) -> str:
    """Return `tag` if it is a valid tag name, else raise InvalidRecord."""
    if not isinstance(tag, str) or not _valid_tag(tag):
        raise InvalidRecord(f"invalid tag {tag!r}: use 1-64 characters of a-z 0-9 . _ -")
    return tag


@lru_cache(maxsize=4096)
def _valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


@lru_cache(maxsize=256)
def _valid_version(version: str) -> bool:
    return VERSION_RE.fullmatch(version) is not None


def valid_version(version: str) -> bool:
    """Whether `version` is a valid payload format name."""
    return _valid_version(version)


def message_size(record: Record) -> int:
    """The most bytes `record` can take in a message (exact for the longest integers)."""
    sizes = len(record.payload) + len(record.wrapped_key) + len(record.tag) + len(record.version)
    return sizes + RECORD_FRAMING


def check_record(record: Record) -> Record:
    """Check every field's bounds, so nothing malformed reaches crypto or SQLite.

    The fast path is one expression (this runs for every record received); the slow
    path finds the field to name in the error.
    """
    r = record
    if (
        type(r.idx) is int
        and 0 <= r.idx <= MAX_IDX
        and type(r.timestamp) is int
        and 0 <= r.timestamp <= MAX_TIMESTAMP
        and type(r.id) is bytes
        and len(r.id) == ID_LEN
        and type(r.host) is bytes
        and len(r.host) == HOST_LEN
        and type(r.prev) is bytes
        and len(r.prev) == HASH_LEN
        and type(r.sig) is bytes
        and len(r.sig) in (0, SIG_LEN)
        and type(r.payload) is bytes
        and len(r.payload) <= MAX_PAYLOAD
        and type(r.wrapped_key) is bytes
        and len(r.wrapped_key) <= MAX_WRAPPED_KEY
        and type(r.tag) is str
        and _valid_tag(r.tag)
        and type(r.version) is str
        and _valid_version(r.version)
        and (r.idx or r.prev == ZERO_HASH)
    ):
        return record
    _explain_bounds(record)
    raise InvalidRecord("record is malformed")  # unreachable: _explain_bounds raises


def _explain_bounds(record: Record) -> None:
    _check_len("id", record.id, ID_LEN)
    _check_len("host", record.host, HOST_LEN)
    check_tag(record.tag)
    _check_int("idx", record.idx, MAX_IDX)
    _check_int("timestamp", record.timestamp, MAX_TIMESTAMP)
    if not isinstance(record.version, str) or not _valid_version(record.version):
        raise InvalidRecord(f"invalid version {record.version!r}")
    _check_max("payload", record.payload, MAX_PAYLOAD)
    _check_max("wrapped_key", record.wrapped_key, MAX_WRAPPED_KEY)
    _check_len("prev", record.prev, HASH_LEN)
    if record.idx == 0 and record.prev != ZERO_HASH:
        raise InvalidRecord("the first record of a log must have an all-zero prev")
    if not isinstance(record.sig, bytes) or len(record.sig) not in (0, SIG_LEN):
        raise InvalidRecord(f"sig must be empty or {SIG_LEN} bytes")


def _check_len(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidRecord(f"{name} must be {size} bytes")


def _check_max(name: str, value: bytes, limit: int) -> None:
    if not isinstance(value, bytes) or len(value) > limit:
        raise InvalidRecord(f"{name} must be at most {limit} bytes")


def _check_int(name: str, value: int, limit: int) -> None:
    if type(value) is not int or not 0 <= value <= limit:
        raise InvalidRecord(f"{name} {value!r} is out of range (0..{limit})")


def associated_data(record: Record) -> bytes:
    """AEAD associated data v1: binds id, host, tag, idx, timestamp and version.

    Layout: "peer.aad.v1\\0" | id[16] | host[16] | u8 len | tag | u64 idx | u64 timestamp
    | u8 len | version   (integers big-endian)
    """
    return AAD_PREFIX_V1 + metadata(record)


def hash_input(record: Record) -> bytes:
    """The bytes whose SHA-256 is the record hash v1: every field but `sig`.

    Layout: "peer.record.v1\\0" | id[16] | host[16] | u8 len | tag | u64 idx
    | u64 timestamp | u8 len | version | u32 len | payload | u8 len | wrapped_key | prev[32]
    (one join: this runs for every record sent or received)
    """
    tag = record.tag.encode()
    version = record.version.encode()
    return b"".join(
        (
            HASH_PREFIX_V1,
            record.id,
            record.host,
            _LENGTHS[len(tag)],
            tag,
            _U64X2.pack(record.idx, record.timestamp),
            _LENGTHS[len(version)],
            version,
            _U32.pack(len(record.payload)),
            record.payload,
            _LENGTHS[len(record.wrapped_key)],
            record.wrapped_key,
            record.prev,
        )
    )


def hash_input_of(meta: bytes, payload: bytes, wrapped_key: bytes, prev: bytes) -> bytes:
    """`hash_input` from a record's parts, for writers that have no Record yet."""
    return b"".join(
        (
            HASH_PREFIX_V1,
            meta,
            _U32.pack(len(payload)),
            payload,
            bytes((len(wrapped_key),)),
            wrapped_key,
            prev,
        )
    )


def metadata(record: Record) -> bytes:
    """The metadata shared by both encodings (without their prefixes)."""
    return metadata_of(
        record.id, record.host, record.tag, record.idx, record.timestamp, record.version
    )


def metadata_of(
    record_id: bytes, host: bytes, tag: str, idx: int, timestamp: int, version: str
) -> bytes:
    tag_bytes = tag.encode()
    version_bytes = version.encode()
    return b"".join(
        (
            record_id,
            host,
            bytes((len(tag_bytes),)),
            tag_bytes,
            _U64.pack(idx),
            _U64.pack(timestamp),
            bytes((len(version_bytes),)),
            version_bytes,
        )
    )


def uuid7(unix_ms: int, random_bytes: bytes) -> bytes:
    """A UUIDv7 (RFC 9562): 48-bit milliseconds, version 7, variant 10, 74 random bits."""
    if len(random_bytes) != 10:
        raise ValueError("uuid7 needs 10 random bytes")
    r = random_bytes
    return b"".join(
        (
            (unix_ms & (2**48 - 1)).to_bytes(6, "big"),
            _VERSION_7[r[0]],  # version 7 in the high nibble
            r[1:2],
            _VARIANT_10[r[2]],  # variant 0b10 in the two high bits
            r[3:],
        )
    )


def metadata_encoder(host: bytes, tag: str, version: str) -> Callable[[bytes, int, int], bytes]:
    """`metadata_of` for many records of one log, its constant parts encoded once:
    `encode(record_id, idx, timestamp)` (a writer runs it for every record)."""
    tag_bytes, version_bytes = tag.encode(), version.encode()
    before = host + bytes((len(tag_bytes),)) + tag_bytes
    after = bytes((len(version_bytes),)) + version_bytes
    pack, join = _U64X2.pack, b"".join

    def encode(record_id: bytes, idx: int, timestamp: int) -> bytes:
        return join((record_id, before, pack(idx, timestamp), after))

    return encode


def new_record_ids(randomness: bytes, stride: int, count: int) -> list[bytes]:
    """`count` fresh UUIDv7s, the random bits of the n-th from `randomness[n * stride:]`
    (a writer draws all of its randomness in one system call)."""
    ids: list[bytes] = []
    join = b"".join
    # One clock reading for the batch: its records are made within the same call, and
    # UUIDv7 orders ids of one millisecond by their random bits (RFC 9562 §6.2)
    unix_ms = ((time.time_ns() // 1_000_000) & (2**48 - 1)).to_bytes(6, "big")
    for n in range(count):
        r = randomness[n * stride : n * stride + 10]
        ids.append(join((unix_ms, _VERSION_7[r[0]], r[1:2], _VARIANT_10[r[2]], r[3:])))
    return ids


def new_record_id(random_bytes: bytes | None = None) -> bytes:
    """A fresh UUIDv7 for a record id: time-ordered, unique without coordination."""
    return uuid7(time.time_ns() // 1_000_000, random_bytes or os.urandom(10))


def group_by_log(records: Iterable[Record]) -> dict[LogKey, list[Record]]:
    """Records split per log, keeping their order within each log."""
    groups: dict[tuple[bytes, str], list[Record]] = {}
    for record in records:
        key = (record.host, record.tag)
        group = groups.get(key)
        if group is None:
            groups[key] = group = []
        group.append(record)
    return {LogKey(host, tag): group for (host, tag), group in groups.items()}
