"""Proving a received segment's bytes against its header before anything trusts it:
bounds, host, tag, consecutive idx and the chain inside. A malformed segment raises
InvalidRecord (or ForgeryError) saying what is wrong and where, as a record from the
wire would; signatures are verified only in `peer.crypto`, from what this proved.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import NoReturn

from peer.errors import ForgeryError, InvalidRecord
from peer.records import (
    HASH_LEN,
    HASH_PREFIX_V1,
    HOST_LEN,
    ID_LEN,
    MAX_IDX,
    MAX_PAYLOAD,
    MAX_TIMESTAMP,
    MAX_WRAPPED_KEY,
    SIG_LEN,
    ZERO_HASH,
    check_tag,
    valid_version,
)
from peer.segment.encoding import FIXED, MAX_HASH_INPUT, walk
from peer.segment.parts import Segment

_U32 = struct.Struct(">I")
_U64X2 = struct.Struct(">QQ")
_PREFIX_LEN = len(HASH_PREFIX_V1)


@dataclass(frozen=True, slots=True)
class Checked:
    """What `check` proved of a segment's bytes, for the signature rules in `crypto`."""

    hashes: list[bytes]  # each record's hash
    first_prev: bytes  # the first record's `prev`: links it to what comes before
    signed: dict[int, bytes]  # position in the segment -> signature, of signed records
    longest_run: int  # the most payload bytes from a signed record to the next (or end)
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
    version_from = idx_at + 16  # ...and its version's length
    claim_at = _PREFIX_LEN + ID_LEN
    hashes: list[bytes] = []
    signed: dict[int, bytes] = {}
    keep_hash = hashes.append
    version = b""
    pos = newest = n = run = longest = 0
    idx = segment.first_idx
    digest = first_prev = _first_prev(segment)  # each `prev` is compared to a digest
    while pos < size:
        start = pos + 4
        try:
            (length,) = u32(data, pos)
            end = start + length
            got, timestamp = u64x2(data, start + idx_at)
            version_at = start + version_from
            version_end = version_at + 1 + data[version_at]
            (payload_len,) = u32(data, version_end)
            key_at = version_end + 4 + payload_len
            key_len, sig_len = data[key_at], data[end]
        except (struct.error, IndexError):
            _explain(segment)
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
            and data.startswith(digest, end - HASH_LEN)
        ):
            _explain(segment)
        if version_end - version_at != len(version) or not data.startswith(version, version_at):
            version = data[version_at:version_end]
            if not _valid_version_bytes(version[1:]):
                _explain(segment)
        digest = sha256(view[start:end]).digest()
        keep_hash(digest)
        run += payload_len
        if sig_len:
            signed[n] = data[end + 1 : stop]
            longest = max(longest, run)
            run = 0
        if timestamp > newest:  # noqa: PLR1730 (a call per record costs more)
            newest = timestamp
        idx += 1
        n += 1
        pos = stop
    if n != segment.count or (segment.first_idx == 0 and first_prev != ZERO_HASH):
        _explain(segment)
    return Checked(hashes, first_prev, signed, max(longest, run), newest)


def _first_prev(segment: Segment) -> bytes:
    """The first entry's `prev` (its hash input's last bytes), as far as they reach."""
    try:
        (length,) = _U32.unpack_from(segment.data, 0)
    except struct.error:
        _explain(segment)
    return segment.data[4 + length - HASH_LEN : 4 + length]


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
    return segment.host + bytes((len(tag),)) + tag


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
