"""Parsing received bytes defensively, for the wire and the local codec alike.

A message is counted before it is parsed (a few MiB of empty sub-messages would
otherwise cost hundreds of MB [M3]), and protobuf decode errors become ProtocolError
(never an exception text sent back [M1]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from peer.errors import LimitExceeded, ProtocolError

M = TypeVar("M", bound=Message)


def parse(message_type: type[M], raw: bytes, caps: Mapping[int, int] | None = None) -> M:
    """Parse `raw`; `caps` bounds the entries of repeated fields (by field number)."""
    if caps:
        count_fields(raw, caps)
    try:
        return message_type.FromString(raw)
    except DecodeError as exc:
        raise ProtocolError(f"malformed {message_type.__name__}") from exc


def count_fields(raw: bytes, caps: Mapping[int, int]) -> None:
    """Raise unless each top-level field of `caps` occurs at most its cap times.

    One walk over the top-level tags, a step per entry, before anything is parsed: a
    hostile message of a few MiB of empty sub-messages is refused after `cap` steps
    instead of costing the parser hundreds of MB [M3]. The common case (a one-byte tag
    of a length-delimited field, its length in one or two bytes) is inline: this runs
    once per batch received, a step per record.
    """
    counts = dict.fromkeys(caps, 0)
    position, size = 0, len(raw)
    try:
        while position < size:
            key = raw[position]
            if key < 0x80 and key & 7 == 2 and raw[position + 1] < 0x80:
                position += 2 + raw[position + 1]
            elif key < 0x80 and key & 7 == 2 and raw[position + 2] < 0x80:
                position += 3 + ((raw[position + 1] & 0x7F) | (raw[position + 2] << 7))
            else:
                key, position = _step(raw, position)
            number = key >> 3
            if number in counts:
                counts[number] += 1
                if counts[number] > caps[number]:
                    raise LimitExceeded(f"too many entries in one message (limit {caps[number]})")
    except IndexError:
        raise ProtocolError("malformed message: truncated field") from None
    if position != size:
        raise ProtocolError("malformed message: truncated field")


def _step(raw: bytes, position: int) -> tuple[int, int]:
    """Any top-level field at `position`: its key and where the next one starts."""
    key, position = _varint(raw, position)
    wire_type = key & 7
    if wire_type == 0:
        _, position = _varint(raw, position)
    elif wire_type == 2:
        length, position = _varint(raw, position)
        position += length
    elif wire_type in (1, 5):
        position += 8 if wire_type == 1 else 4
    else:
        raise ProtocolError("malformed message: unsupported wire type")
    return key, position


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(raw) or shift > 63:
            raise ProtocolError("malformed message: bad varint")
        byte = raw[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
