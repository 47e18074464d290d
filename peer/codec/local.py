"""The local API's messages (`proto/peer/v1/local.proto`): Append and GetStatus.

Only the node's own programs call it, over the home's Unix socket; it is parsed as
defensively as the wire all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peer.codec.parsing import parse
from peer.errors import ProtocolError
from peer.records import check_tag
from peer.v1 import local_pb2 as local_pb

LOCAL_SERVICE_NAME = "peer.v1.LocalService"
MAX_APPEND_ITEMS = 10_000


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an Append through the local API put its records."""

    host: bytes
    tag: str
    first_idx: int
    count: int
    timestamps: tuple[int, ...]


def encode_append_request(tag: str, items: Sequence[bytes]) -> bytes:
    return local_pb.AppendRequest(tag=tag, items=items).SerializeToString()


def decode_append_request(raw: bytes) -> tuple[str, list[bytes]]:
    message = parse(local_pb.AppendRequest, raw, {2: MAX_APPEND_ITEMS})
    check_tag(message.tag)
    if not message.items:
        raise ProtocolError("an append needs at least one item")
    return message.tag, list(message.items)


def encode_append_response(appended: Appended) -> bytes:
    return local_pb.AppendResponse(
        host=appended.host,
        tag=appended.tag,
        first_idx=appended.first_idx,
        count=appended.count,
        timestamps=appended.timestamps,
    ).SerializeToString()


def decode_append_response(raw: bytes) -> Appended:
    m = parse(local_pb.AppendResponse, raw)
    return Appended(m.host, m.tag, m.first_idx, m.count, tuple(m.timestamps))


def encode_status_request() -> bytes:
    return local_pb.GetStatusRequest().SerializeToString()


def decode_status_request(raw: bytes) -> None:
    parse(local_pb.GetStatusRequest, raw)


def encode_status_response(status_json: str) -> bytes:
    return local_pb.GetStatusResponse(status_json=status_json).SerializeToString()


def decode_status_response(raw: bytes) -> str:
    return parse(local_pb.GetStatusResponse, raw).status_json
