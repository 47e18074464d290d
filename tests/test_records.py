"""Records as pure data: frozen canonical encodings, bounds, UUIDv7, index diff, clock."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer import clock
from peer.crypto import record_hash
from peer.errors import InvalidRecord
from peer.records import (
    MAX_IDX,
    ZERO_HASH,
    Head,
    LogKey,
    Range,
    Record,
    associated_data,
    check_record,
    diff,
    hash_input,
    new_record_id,
    uuid7,
)

VECTOR = Record(
    id=bytes(range(16)),
    host=bytes(range(16, 32)),
    tag="kv",
    idx=7,
    timestamp=1_700_000_000_123_456_789,
    version="v1",
    payload=b"\x01\x02\x03",
    wrapped_key=b"\xaa" * 4,
    prev=b"\x11" * 32,
)


def test_associated_data_v1_is_frozen() -> None:
    # DO NOT CHANGE: every sealed record depends on these exact bytes.
    assert associated_data(VECTOR).hex() == (
        "706565722e6161642e7631000001020304050607"  # "peer.aad.v1\0", id...
        "08090a0b0c0d0e0f101112131415161718191a1b"
        "1c1d1e1f026b7600000000000000071797"  # host, len 2 "kv", idx 7, timestamp...
        "9cfe3d85cd15027631"  # ...timestamp, len 2 "v1"
    )


def test_record_hash_v1_is_frozen() -> None:
    # DO NOT CHANGE: every chain and signature depends on these exact bytes.
    assert hash_input(VECTOR).hex() == (
        "706565722e7265636f72642e763100000102030405060708090a0b0c0d0e0f1011121314151617"
        "18191a1b1c1d1e1f026b76000000000000000717979cfe3d85cd150276310000000301020304aa"
        "aaaaaa1111111111111111111111111111111111111111111111111111111111111111"
    )
    assert record_hash(VECTOR).hex() == (
        "1a1827a59e7eec46451d079d1ebccd8e2e8f54bf6d9e282db4821099db670b6d"
    )


def test_the_signature_is_not_part_of_the_hash() -> None:
    signed = dataclasses.replace(VECTOR, sig=b"\x05" * 64)
    assert record_hash(signed) == record_hash(VECTOR)


def test_a_valid_record_passes_the_bounds_check() -> None:
    assert check_record(VECTOR) is VECTOR


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idx", 2**63),
        ("idx", 2**64 - 1),
        ("idx", MAX_IDX + 1),
        ("idx", -1),
        ("timestamp", 2**63),
        ("timestamp", -1),
        ("id", b"\x00" * 15),
        ("host", b"\x00" * 17),
        ("tag", ""),
        ("tag", "UPPER"),
        ("tag", "x" * 65),
        ("tag", "sp ace"),
        ("version", ""),
        ("version", "v" * 17),
        ("payload", b"\x00" * ((1 << 20) + 1)),
        ("wrapped_key", b"\x00" * 129),
        ("prev", b"\x00" * 31),
        ("sig", b"\x00" * 63),
    ],
)
def test_out_of_range_fields_are_a_clear_error(field: str, value: object) -> None:
    with pytest.raises(InvalidRecord, match=field if field != "tag" else "tag"):
        check_record(dataclasses.replace(VECTOR, **{field: value}))


def test_the_first_record_of_a_log_must_have_a_zero_prev() -> None:
    with pytest.raises(InvalidRecord, match="first record"):
        check_record(dataclasses.replace(VECTOR, idx=0))
    check_record(dataclasses.replace(VECTOR, idx=0, prev=ZERO_HASH))


def test_uuid7_has_version_variant_and_time() -> None:
    value = uuid7(0x0123456789AB, b"\xff" * 10)
    assert len(value) == 16
    assert value[:6] == bytes.fromhex("0123456789ab")
    assert value[6] >> 4 == 7
    assert value[8] >> 6 == 0b10


def test_record_ids_are_unique_and_time_ordered_by_millisecond() -> None:
    ids = [new_record_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    stamps = [i[:6] for i in ids]
    assert stamps == sorted(stamps)


H1, H2 = b"\x01" * 16, b"\x02" * 16


def test_diff_example() -> None:
    local = {LogKey(H1, "kv"): Head(5, b"a" * 32), LogKey(H2, "kv"): Head(2, b"b" * 32)}
    remote = {LogKey(H1, "kv"): Head(3, b"c" * 32), LogKey(H2, "history"): Head(4, b"d" * 32)}
    plan = diff(local, remote)
    assert plan.pull == (Range(H2, "history", 0, 4),)
    assert plan.push == (Range(H1, "kv", 3, 5), Range(H2, "kv", 0, 2))
    assert plan.diverged == ()


def test_diff_reports_equal_length_logs_with_different_heads() -> None:
    local = {LogKey(H1, "kv"): Head(5, b"a" * 32)}
    remote = {LogKey(H1, "kv"): Head(5, b"b" * 32)}
    assert diff(local, remote).diverged == (LogKey(H1, "kv"),)


logs = st.builds(LogKey, st.sampled_from([H1, H2, b"\x03" * 16]), st.sampled_from(["a", "b"]))
indexes = st.dictionaries(
    logs, st.builds(lambda n: Head(n, n.to_bytes(32, "big")), st.integers(0, 50))
)


@given(local=indexes, remote=indexes)
def test_diff_ranges_bring_both_sides_to_the_maximum(
    local: dict[LogKey, Head], remote: dict[LogKey, Head]
) -> None:
    plan = diff(local, remote)
    after_pull = {log: head.next_idx for log, head in local.items()}
    for r in plan.pull:
        assert after_pull.get(r.log, 0) == r.start < r.end
        after_pull[r.log] = r.end
    after_push = {log: head.next_idx for log, head in remote.items()}
    for r in plan.push:
        assert after_push.get(r.log, 0) == r.start < r.end
        after_push[r.log] = r.end
    everything = set(local) | set(remote)
    for log in everything:
        top = max(local.get(log, Head(0)).next_idx, remote.get(log, Head(0)).next_idx)
        assert after_pull.get(log, 0) == top == after_push.get(log, 0)


@given(local=indexes, remote=indexes)
def test_diff_is_symmetric(local: dict[LogKey, Head], remote: dict[LogKey, Head]) -> None:
    forward, backward = diff(local, remote), diff(remote, local)
    assert forward.pull == backward.push
    assert forward.push == backward.pull
    assert diff(local, local).pull == diff(local, local).push == ()


@given(floor=st.integers(0, 2**62), wall=st.integers(0, 2**62))
def test_the_clock_never_goes_below_the_wall_or_back(floor: int, wall: int) -> None:
    stamp = clock.tick(floor, wall)
    assert stamp >= wall
    assert stamp > floor


@given(floor=st.integers(0, 2**62), wall=st.integers(0, 2**62), count=st.integers(0, 50))
def test_ticks_in_a_row_are_ticks_one_after_another(floor: int, wall: int, count: int) -> None:
    expected, last = [], floor
    for _ in range(count):
        last = clock.tick(last, wall)
        expected.append(last)
    assert list(clock.ticks(floor, wall, count)) == expected


def test_the_clock_follows_a_peer_that_is_ahead_but_not_too_far() -> None:
    wall, day = 10**18, 86_400 * 10**9
    assert clock.observe(wall, [wall + 3 * 3600 * 10**9], wall, day) == wall + 3 * 3600 * 10**9
    assert clock.observe(wall, [wall + 2 * day], wall, day) == wall
    assert clock.observe(wall, [], wall, day) == wall
