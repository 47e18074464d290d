"""`codec.count_fields`: the walk that bounds a message's entries before it is parsed.

It must agree with the protobuf parser on every well-formed message (any entry count,
lengths of one, two or three varint bytes, fields it does not cap), refuse one entry
over a cap, and turn truncated or odd input into ProtocolError, never an IndexError.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.codec import count_fields
from peer.errors import LimitExceeded, ProtocolError
from peer.v1 import sync_pb2 as pb

_records = st.lists(
    st.builds(
        pb.Record,
        id=st.binary(max_size=16),
        tag=st.text("abc", max_size=5),
        idx=st.integers(0, 2**40),
        payload=st.binary(max_size=20_000),  # 1-, 2- and 3-byte lengths
    ),
    max_size=40,
)
_hosts = st.lists(st.builds(pb.HostKey, host=st.binary(max_size=16)), max_size=5)


@settings(max_examples=150, deadline=None)
@given(records=_records, hosts=_hosts)
def test_the_walk_counts_what_the_parser_finds(
    records: list[pb.Record], hosts: list[pb.HostKey]
) -> None:
    raw = pb.PullRecordsResponse(records=records, hosts=hosts).SerializeToString()
    count_fields(raw, {1: len(records), 2: len(hosts)})  # exactly at the caps: accepted
    if records:
        with pytest.raises(LimitExceeded):
            count_fields(raw, {1: len(records) - 1})
    if hosts:
        with pytest.raises(LimitExceeded):
            count_fields(raw, {2: len(hosts) - 1})


@settings(max_examples=150, deadline=None)
@given(records=_records.filter(bool), data=st.data())
def test_a_truncated_message_is_a_protocol_error(
    records: list[pb.Record], data: st.DataObject
) -> None:
    raw = pb.PullRecordsResponse(records=records).SerializeToString()
    cut = data.draw(st.integers(1, len(raw) - 1))
    try:
        count_fields(raw[:cut], {1: len(records)})
    except ProtocolError:
        return
    # A cut exactly between two entries is a shorter, well-formed message.
    assert pb.PullRecordsResponse.FromString(raw[:cut])


def test_padded_tags_and_other_wire_types_are_counted() -> None:
    padded = b"\x8a\x00\x00"  # field 1, tag varint padded to two bytes, empty entry
    fixed = b"\x19" + bytes(8) + b"\x25" + bytes(4)  # fields 3 (64-bit) and 4 (32-bit)
    varint = b"\x28\xff\xff\x01"  # field 5, a three-byte varint
    count_fields(padded * 3 + fixed + varint, {1: 3})
    with pytest.raises(LimitExceeded):
        count_fields(padded * 4, {1: 3})


def test_a_flood_of_empty_entries_stops_at_the_cap() -> None:
    with pytest.raises(LimitExceeded):
        count_fields(b"\x0a\x00" * (4 << 20), {1: 4096})


@pytest.mark.parametrize(
    "raw",
    [b"\x0a", b"\x0a\x80", b"\x0a\x05abc", b"\x0f", b"\xff" * 11, b"\x0a\x80\x80"],
)
def test_malformed_framing_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        count_fields(raw, {1: 10})


@pytest.mark.parametrize(
    ("host", "public_key"),
    [(bytes(16), bytes(31)), (bytes(16), bytes(33)), (bytes(15), bytes(32)), (bytes(16), b"")],
)
def test_a_host_key_of_the_wrong_length_is_a_protocol_error(host: bytes, public_key: bytes) -> None:
    from peer.codec import wire

    raw = pb.PullRecordsResponse(hosts=[pb.HostKey(host=host, public_key=public_key)])
    with pytest.raises(ProtocolError, match="32-byte Ed25519 key"):
        wire.decode_batch(pb.PullRecordsResponse, raw.SerializeToString())


def test_a_host_key_of_the_right_length_is_taken() -> None:
    from peer.codec import wire

    raw = pb.PullRecordsResponse(hosts=[pb.HostKey(host=bytes(16), public_key=bytes(32))])
    assert wire.decode_batch(pb.PullRecordsResponse, raw.SerializeToString()) == (
        [],
        {bytes(16): bytes(32)},
    )
