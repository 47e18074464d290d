"""Segments (peer.segment): the canonical encodings of a run of records, concatenated.

A round trip gives the records back exactly, their hashes are SHA-256 of slices, and
every malformed segment is refused with InvalidRecord saying what is wrong: never
another exception, never a record that was not written.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer import segment
from peer.crypto import record_hash
from peer.errors import InvalidRecord
from peer.records import (
    HASH_PREFIX_V1,
    MAX_IDX,
    ZERO_HASH,
    Head,
    Record,
    hash_input,
    message_size,
)
from tests.conftest import new_author, signed_chain


def written(count: int, tag: str = "notes") -> list[Record]:
    """`count` records as one append writes them (signed every 256 and at the end)."""
    author = new_author()
    return author.write(tag, Head(0), list(range(1, count + 1)), [b"x" * n for n in range(count)])


def test_round_trip_gives_the_records_back() -> None:
    records = written(300)
    data = segment.encode(records)
    assert segment.decode(data) == records
    assert segment.count(data) == 300
    assert segment.first_idx(data) == 0


def test_hashes_are_the_record_hashes_and_prev_is_the_last_32_bytes() -> None:
    records = written(20)
    data = segment.encode(records)
    digests = segment.hashes(data)
    assert digests == [record_hash(r) for r in records]
    for (start, end, _), record in zip(segment.walk(data), records, strict=True):
        assert data[start:end] == hash_input(record)
        assert data[end - 32 : end] == record.prev
    assert [data[end - 32 : end] for _, end, _ in segment.walk(data)][1:] == digests[:-1]


def test_sizes_are_message_sizes_and_signatures() -> None:
    records = written(300)
    assert segment.sizes(segment.encode(records)) == [
        (message_size(r), bool(r.sig)) for r in records
    ]


@pytest.mark.parametrize(("skip", "take"), [(0, 1), (0, 300), (1, 299), (255, 2), (299, 1), (7, 0)])
def test_slices_by_idx_and_by_position(skip: int, take: int) -> None:
    records = written(300)
    data = segment.encode(records)
    assert segment.decode(data, start_idx=skip, take=take) == records[skip : skip + take]
    assert segment.decode(segment.cut(data, skip, take)) == records[skip : skip + take]


def test_a_slice_of_a_log_that_starts_past_idx_0() -> None:
    author = new_author()
    chain = signed_chain(author, "t", 10)
    data = segment.encode(chain[4:])
    assert segment.first_idx(data) == 4
    assert segment.decode(data, start_idx=6, take=2) == chain[6:8]
    with pytest.raises(InvalidRecord, match="before its first record"):
        segment.decode(data, start_idx=3)
    with pytest.raises(InvalidRecord, match="fewer records"):
        segment.decode(data, start_idx=8, take=3)


tags = st.from_regex(r"[a-z0-9._-]{1,64}", fullmatch=True)
versions = st.from_regex(r"[a-z0-9._-]{1,16}", fullmatch=True)


@st.composite
def runs(draw: st.DrawFn) -> list[Record]:
    """Consecutive records of one log with any valid field values (no chain needed:
    a segment carries what it is given, the chain is checked by peer.crypto)."""
    host, tag = draw(st.binary(min_size=16, max_size=16)), draw(tags)
    first = draw(st.one_of(st.just(0), st.integers(0, MAX_IDX - 20)))
    records = []
    for idx in range(first, first + draw(st.integers(1, 6))):
        prev = ZERO_HASH if idx == 0 else draw(st.binary(min_size=32, max_size=32))
        records.append(
            Record(
                draw(st.binary(min_size=16, max_size=16)),
                host,
                tag,
                idx,
                draw(st.integers(0, 2**63 - 1)),
                draw(versions),
                draw(st.binary(max_size=300)),
                draw(st.binary(max_size=128)),
                prev,
                draw(st.sampled_from([b"", bytes(range(64))])),
            )
        )
    return records


@given(records=runs())
def test_any_run_round_trips(records: list[Record]) -> None:
    data = segment.encode(records)
    assert segment.decode(data) == records
    assert segment.hashes(data) == [record_hash(r) for r in records]
    assert segment.first_idx(data) == records[0].idx


@given(records=runs(), position=st.integers(0), value=st.integers(0, 255), cut=st.integers(0))
def test_damaged_bytes_decode_or_raise_invalid_record_only(
    records: list[Record], position: int, value: int, cut: int
) -> None:
    data = bytearray(segment.encode(records))
    data[position % len(data)] = value
    damaged = bytes(data[: len(data) - cut % 3])
    try:
        decoded = segment.decode(damaged)
    except InvalidRecord:
        return
    assert segment.encode(decoded) == damaged  # what decodes is exactly what is there


# -- malformed segments, one case each ------------------------------------------------


def entry(digest_input: bytes, sig: bytes = b"") -> bytes:
    return struct.pack(">I", len(digest_input)) + digest_input + bytes((len(sig),)) + sig


def one() -> tuple[Record, bytes]:
    (record,) = written(1)
    return record, hash_input(record)


def with_tag_bytes(digest_input: bytes, tag: bytes) -> bytes:
    """`digest_input` with its tag replaced by `tag` (its length byte set to match)."""
    at = len(HASH_PREFIX_V1) + 32
    old = digest_input[at]
    return digest_input[:at] + bytes((len(tag),)) + tag + digest_input[at + 1 + old :]


def tag_length_plus_one(digest_input: bytes) -> bytes:
    at = len(HASH_PREFIX_V1) + 32
    return digest_input[:at] + bytes((digest_input[at] + 1,)) + digest_input[at + 1 :]


def malformed() -> dict[str, tuple[bytes, str]]:
    record, h = one()
    good = entry(h, record.sig)
    other = written(3)
    return {
        "cut in its length": (good + b"\x00\x00", "cut short in its length"),
        "length too small": (entry(h[:50]), "claims 50 bytes"),
        "length too large": (struct.pack(">I", 2**31) + h, "claims 2147483648 bytes"),
        "record past the end": (good[:100], "runs past the segment's end"),
        "no signature length": (good[: 4 + len(h)], "runs past the segment's end"),
        "bad signature length": (entry(h)[:-1] + b"\x05" + b"s" * 5, "5-byte signature"),
        "signature past the end": (good[:-1], "signature at byte"),
        "wrong prefix": (entry(b"peer.record.v2\x00" + h[15:], record.sig), "prefix"),
        "tag length off": (entry(tag_length_plus_one(h)), None),
        "tag not ascii": (entry(with_tag_bytes(h, "nötes".encode())), "not ASCII"),
        "tag invalid": (entry(with_tag_bytes(h, b"NOTES")), "invalid tag"),
        "payload length off": (entry(h[:-33] + h[-32:]), "add up to"),
        "idx 0 with a prev": (entry(h[:-32] + b"\x01" * 32), "all-zero prev"),
        "not consecutive": (segment.encode([other[0], other[2]]), "not the record after #0"),
        "two logs": (segment.encode([other[0], *written(2)[1:]]), "not the record after #0"),
    }


CASES = malformed()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_segment_is_refused_with_its_reason(case: str) -> None:
    data, reason = CASES[case]
    with pytest.raises(InvalidRecord, match=reason) as refused:
        segment.decode(data)
    assert str(refused.value).startswith(("segment:", "invalid tag", "the first record"))


def test_an_empty_segment_holds_no_record() -> None:
    assert segment.decode(b"") == []
    assert segment.hashes(b"") == []
    with pytest.raises(InvalidRecord, match="holds no record"):
        segment.first_idx(b"")
    with pytest.raises(InvalidRecord, match="holds no record"):
        segment.decode(b"", start_idx=0)
