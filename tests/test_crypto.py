"""Sealing, key handling, chains and signatures."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer import segment
from peer.crypto import (
    KEY_TEXT_PREFIX,
    SIGN_EVERY,
    Author,
    SigningKey,
    SyncKey,
    open_or_why,
    open_record,
    record_hash,
    verify_chain,
    verify_signature,
)
from peer.errors import DecryptionFailed, ForgeryError, InvalidRecord, KeyFormatError, WrongKey
from peer.records import (
    HASH_LEN,
    HOST_LEN,
    ID_LEN,
    MAX_IDX,
    MAX_TIMESTAMP,
    MAX_WRAPPED_KEY,
    SIG_LEN,
    TAG_RE,
    VERSION_RE,
    ZERO_HASH,
    Head,
    LogKey,
    Record,
    Written,
    hash_input_of,
    metadata,
)
from peer.relay import NO_SYNC_KEY
from tests.conftest import new_author

PLAINTEXT = bytes(range(64))


def one_record(author: Author, plaintext: bytes = PLAINTEXT) -> Record:
    return author.write("notes", Head(0), [1_000], [plaintext])[0]


def test_a_sealed_record_opens_with_the_sync_key(author: Author) -> None:
    record = one_record(author)
    assert record.payload != PLAINTEXT
    assert open_record(author.sync, record) == PLAINTEXT


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", b"\x00" * 16),
        ("host", b"\x00" * 16),
        ("tag", "other"),
        ("idx", 1),
        ("timestamp", 1_001),
        ("version", "v2"),
    ],
)
def test_tampered_metadata_does_not_decrypt(author: Author, field: str, value: object) -> None:
    record = dataclasses.replace(one_record(author), **{field: value})
    with pytest.raises(DecryptionFailed, match="altered"):
        open_record(author.sync, record)


def test_every_tampered_payload_byte_is_rejected(author: Author) -> None:
    record = one_record(author)
    for position in range(len(record.payload)):
        damaged = bytearray(record.payload)
        damaged[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            open_record(author.sync, dataclasses.replace(record, payload=bytes(damaged)))


def test_every_tampered_wrapped_key_byte_is_rejected(author: Author) -> None:
    record = one_record(author)
    for position in range(len(record.wrapped_key)):
        damaged = bytearray(record.wrapped_key)
        damaged[position] ^= 0x80
        with pytest.raises((DecryptionFailed, WrongKey)):
            open_record(author.sync, dataclasses.replace(record, wrapped_key=bytes(damaged)))


def test_a_wrong_key_names_both_key_ids(author: Author) -> None:
    record = one_record(author)
    other = SyncKey.generate()
    with pytest.raises(WrongKey) as caught:
        open_record(other, record)
    assert str(caught.value) == (
        f"this record was written with key {author.sync.key_id_text}; "
        f"this node holds key {other.key_id_text}"
    )


def test_open_or_why_opens_or_says_what_open_record_would_raise(author: Author) -> None:
    record = one_record(author)
    other = SyncKey.generate()
    altered = dataclasses.replace(record, timestamp=1_001)
    assert open_or_why(author.sync, record) == (PLAINTEXT, None)
    assert open_or_why(None, record) == (None, NO_SYNC_KEY)  # a relay
    for key, damaged in ((other, record), (author.sync, altered)):
        with pytest.raises((WrongKey, DecryptionFailed)) as caught:
            open_record(key, damaged)
        assert open_or_why(key, damaged) == (None, str(caught.value))


def test_the_key_text_round_trips_on_one_line() -> None:
    key = SyncKey.generate()
    text = key.to_text()
    assert text.startswith(KEY_TEXT_PREFIX)
    assert "\n" not in text
    assert SyncKey.from_text(f"  {text}\n") == key


@given(data=st.data())
def test_a_mistyped_key_text_is_refused(data: st.DataObject) -> None:
    text = SyncKey(b"\x42" * 32).to_text()
    position = data.draw(st.integers(len(KEY_TEXT_PREFIX), len(text) - 1))
    replacement = data.draw(st.sampled_from("ABCabc012-_"))
    typo = text[:position] + replacement + text[position + 1 :]
    if typo != text:
        with pytest.raises(KeyFormatError):
            SyncKey.from_text(typo)


@pytest.mark.parametrize("text", ["", "peer-key-1:", "peer-key-1:!!!!", "hello", "peer-key-2:AA"])
def test_garbage_key_texts_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        SyncKey.from_text(text)


def test_repr_never_shows_the_secret() -> None:
    key = SyncKey(b"\x42" * 32)
    assert "42" * 4 not in repr(key)


def test_the_host_id_is_derived_from_the_signing_key() -> None:
    signing = SigningKey.generate()
    again = SigningKey.from_bytes(signing.to_bytes())
    assert again.host == signing.host
    assert len(signing.host) == 16


def chain(author: Author, count: int) -> list[Record]:
    return author.write("notes", Head(0), range(1, count + 1), [b"x%d" % i for i in range(count)])


def test_a_written_chain_verifies_and_links(author: Author) -> None:
    records = chain(author, 600)
    hashes = verify_chain(records, author.signing.public_key)
    assert [r.prev for r in records[1:]] == hashes[:-1]
    assert hashes[-1] == record_hash(records[-1])


def test_signatures_sit_every_sign_every_records_and_at_the_end(author: Author) -> None:
    records = chain(author, 600)
    signed = [r.idx for r in records if r.sig]
    assert signed == [SIGN_EVERY - 1, 2 * SIGN_EVERY - 1, 599]


@pytest.mark.parametrize("field", ["id", "timestamp", "payload", "wrapped_key", "version"])
def test_tampering_any_record_of_a_batch_breaks_the_chain(author: Author, field: str) -> None:
    records = chain(author, 10)
    for position in range(10):
        original = records[position]
        value = {
            "id": bytes(16),
            "timestamp": original.timestamp + 1,
            "payload": original.payload + b"!",
            "wrapped_key": original.wrapped_key[:-1] + bytes([original.wrapped_key[-1] ^ 1]),
            "version": "v9",
        }[field]
        tampered = [*records]
        tampered[position] = dataclasses.replace(original, **{field: value})
        with pytest.raises(ForgeryError):
            verify_chain(tampered, author.signing.public_key)


def test_a_batch_must_end_on_a_signature(author: Author) -> None:
    records = chain(author, 10)
    with pytest.raises(ForgeryError, match="signed"):
        verify_chain(records[:5], author.signing.public_key)


def test_a_stripped_checkpoint_signature_is_detected(author: Author) -> None:
    records = chain(author, SIGN_EVERY + 5)
    stripped = [*records]
    stripped[SIGN_EVERY - 1] = dataclasses.replace(records[SIGN_EVERY - 1], sig=b"")
    with pytest.raises(ForgeryError, match="required"):
        verify_chain(stripped, author.signing.public_key)


def test_another_hosts_key_cannot_vouch_for_a_log(author: Author) -> None:
    records = chain(author, 3)
    with pytest.raises(ForgeryError):
        verify_chain(records, new_author().signing.public_key)


def test_a_forged_signature_is_rejected(author: Author) -> None:
    records = chain(author, 3)
    impostor = new_author()
    forged = dataclasses.replace(records[-1], sig=impostor.signing.sign(record_hash(records[-1])))
    with pytest.raises(ForgeryError, match="signature"):
        verify_chain([*records[:-1], forged], author.signing.public_key)


def test_records_of_two_logs_are_not_one_batch(author: Author) -> None:
    notes = chain(author, 2)
    other = author.write("other", Head(0), [5], [b"y"])
    with pytest.raises(InvalidRecord, match="consecutive"):
        verify_chain([notes[0], other[0]], author.signing.public_key)


# -- one record hash: `record_hash`, and the writer's form of it ----------------------------


def _exactly(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


RECORDS = st.builds(
    Record,
    id=_exactly(ID_LEN),
    host=_exactly(HOST_LEN),
    tag=st.from_regex(TAG_RE, fullmatch=True),
    idx=st.integers(0, MAX_IDX),
    timestamp=st.integers(0, MAX_TIMESTAMP),
    version=st.from_regex(VERSION_RE, fullmatch=True),
    payload=st.binary(max_size=70_000),  # lengths of one to three bytes, and 0
    wrapped_key=st.binary(max_size=MAX_WRAPPED_KEY),
    prev=_exactly(HASH_LEN),
    sig=st.one_of(st.just(b""), _exactly(SIG_LEN)),
)


@given(record=RECORDS)
def test_the_hash_of_a_records_parts_is_record_hash(record: Record) -> None:
    """What `Author.write` hashes (its metadata, payload, wrapped key, prev) is the
    record hash of the record it builds, whatever the record."""
    parts = hash_input_of(metadata(record), record.payload, record.wrapped_key, record.prev)
    assert hashlib.sha256(parts).digest() == record_hash(record)


WRITER = new_author()


@settings(deadline=None, max_examples=60)
@given(
    tag=st.from_regex(TAG_RE, fullmatch=True),
    version=st.from_regex(VERSION_RE, fullmatch=True),
    start=st.integers(0, 2 * 256 * 4),  # appends that cross checkpoints
    head_hash=_exactly(HASH_LEN),
    timestamps=st.lists(st.integers(0, MAX_TIMESTAMP), min_size=1, max_size=300),
    data=st.data(),
)
def test_the_writer_chains_and_signs_record_hash(
    tag: str,
    version: str,
    start: int,
    head_hash: bytes,
    timestamps: list[int],
    data: st.DataObject,
) -> None:
    """Every record `Author.write` makes is linked to (the next record's prev) or
    signed over (its signature) exactly its `record_hash`."""
    plaintexts = data.draw(st.lists(st.binary(max_size=300), min_size=len(timestamps)))
    author = Author(WRITER.signing, WRITER.sync, version)
    head = Head(start, head_hash if start else ZERO_HASH)  # a log begins at the zero hash
    sealed = author.seal(tag, head, timestamps, plaintexts[: len(timestamps)])
    records = sealed.records()  # decoded from the entries the store writes as they are
    assert sealed.entries == segment.entries(records)
    assert sealed.written == Written(LogKey(author.host, tag), start, tuple(timestamps))
    assert sealed.signed == [n for n, record in enumerate(records) if record.sig]
    assert sealed.head_hash == record_hash(records[-1])
    assert records[0].prev == head.head_hash
    for record, following in itertools.pairwise(records):
        assert following.prev == record_hash(record)
    for record in records:
        if record.sig:
            where = f"record #{record.idx}"
            verify_signature(author.signing.public_key, record_hash(record), record.sig, where)
    assert records[-1].sig  # the last is always signed, so every hash above is covered
    assert verify_chain(records, author.signing.public_key) == [record_hash(r) for r in records]
