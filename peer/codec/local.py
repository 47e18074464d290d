"""The local API's messages (`proto/peer/v1/local.proto`): Append, AppendStream and
GetStatus.

Only the node's own programs call it, over the home's Unix socket; it is parsed as
defensively as the wire all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peer.codec.parsing import parse
from peer.errors import InvalidRecord, ProtocolError
from peer.records import LogKey, check_tag
from peer.status import (
    DaemonStatus,
    Discovered,
    ForkStatus,
    LinkState,
    LogStatus,
    NodeStatus,
    PeerStatus,
    ViewsStatus,
)
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


@dataclass(frozen=True, slots=True)
class Ack:
    """One durable request message of an AppendStream: its number on the stream (0 for
    the first) and the records its items became."""

    seq: int
    host: bytes
    tag: str
    first_idx: int
    count: int
    timestamps: tuple[int, ...] = ()  # one per record (none from an older daemon)


def encode_append_stream_request(tag: str, items: Sequence[bytes]) -> bytes:
    return local_pb.AppendStreamRequest(tag=tag, items=items).SerializeToString()


def decode_append_stream_request(raw: bytes) -> tuple[str, list[bytes]]:
    message = parse(local_pb.AppendStreamRequest, raw, {2: MAX_APPEND_ITEMS})
    check_tag(message.tag)
    if not message.items:
        raise ProtocolError("each AppendStreamRequest needs at least one item")
    return message.tag, list(message.items)


def encode_append_stream_response(acks: Sequence[Ack]) -> bytes:
    message = local_pb.AppendStreamResponse()
    for ack in acks:
        message.acks.add(
            seq=ack.seq,
            host=ack.host,
            tag=ack.tag,
            first_idx=ack.first_idx,
            count=ack.count,
            timestamps=ack.timestamps,
        )
    return message.SerializeToString()


def decode_append_stream_response(raw: bytes) -> list[Ack]:
    m = parse(local_pb.AppendStreamResponse, raw)
    return [Ack(a.seq, a.host, a.tag, a.first_idx, a.count, tuple(a.timestamps)) for a in m.acks]


def encode_status_request() -> bytes:
    return local_pb.GetStatusRequest().SerializeToString()


def decode_status_request(raw: bytes) -> None:
    parse(local_pb.GetStatusRequest, raw)


def encode_status_response(status: NodeStatus) -> bytes:
    message = local_pb.GetStatusResponse()
    _node_message(status, message.status)
    return message.SerializeToString()


def decode_status_response(raw: bytes) -> NodeStatus:
    m = parse(local_pb.GetStatusResponse, raw).status
    return NodeStatus(
        m.node_id,
        m.host,
        m.name,
        m.key_id if m.HasField("key_id") else None,
        tuple(LogStatus(_log(g.host, g.tag), g.next_idx, g.head, g.frozen) for g in m.logs),
        tuple(_peer(p) for p in m.peers),
        ViewsStatus(
            m.views.applied, m.views.undecryptable, m.views.unknown_version, m.views.malformed
        ),
        tuple(
            ForkStatus(_log(f.host, f.tag), f.idx, f.held, f.offered, f.detected_at)
            for f in m.forks
        ),
        _daemon(m.daemon) if m.HasField("daemon") else None,
        m.keyring,
        m.devices,
        m.revoked,
    )


def _node_message(status: NodeStatus, m: local_pb.NodeStatus) -> None:
    m.node_id, m.host, m.name = status.node_id, status.host, status.name
    m.keyring, m.devices, m.revoked = status.keyring, status.devices, status.revoked
    if status.key_id is not None:
        m.key_id = status.key_id
    for log in status.logs:
        m.logs.add(
            host=log.log.host,
            tag=log.log.tag,
            next_idx=log.next_idx,
            head=log.head,
            frozen=log.frozen,
        )
    for peer in status.peers:
        entry = m.peers.add(
            node_id=peer.node_id,
            name=peer.name,
            address=peer.address,
            certificate=peer.certificate,
        )
        if peer.link is not None:
            _link_message(peer.link, entry.link)
    views = status.views
    m.views.applied, m.views.undecryptable = views.applied, views.undecryptable
    m.views.unknown_version, m.views.malformed = views.unknown_version, views.malformed
    for fork in status.forks:
        m.forks.add(
            host=fork.log.host,
            tag=fork.log.tag,
            idx=fork.idx,
            held=fork.held,
            offered=fork.offered,
            detected_at=fork.detected_at,
        )
    if status.daemon is not None:
        _daemon_message(status.daemon, m.daemon)


def _link_message(link: LinkState, m: local_pb.LinkStatus) -> None:
    m.name, m.address, m.connected, m.live = link.name, link.address, link.connected, link.live
    if link.last_sync is not None:
        m.last_sync = link.last_sync
    if link.last_error is not None:
        m.last_error = link.last_error
    if link.retry_at is not None:
        m.retry_at = link.retry_at
    m.failures, m.pulled, m.pushed = link.failures, link.pulled, link.pushed
    m.received_live, m.pushes_left_to_peer = link.received_live, link.pushes_left_to_peer
    m.own_log_alarms = link.own_log_alarms
    for log, next_idx in link.remote_heads.items():
        m.remote_heads.add(host=log.host, tag=log.tag, next_idx=next_idx)
    for log, (ours, theirs) in link.own_log_behind.items():
        m.own_log_behind.add(host=log.host, tag=log.tag, ours=ours, theirs=theirs)
    m.received, m.duplicates = link.received, link.duplicates
    for log in link.feeds:
        m.feeds.add(host=log.host, tag=log.tag)


def _daemon_message(daemon: DaemonStatus, m: local_pb.DaemonStatus) -> None:
    m.pid, m.listen, m.tls, m.auto_sync = daemon.pid, daemon.listen, daemon.tls, daemon.auto_sync
    m.discovery, m.uptime_s = daemon.discovery, daemon.uptime_s
    for found in daemon.discovered:
        m.discovered.add(
            node_id=found.node_id, address=found.address, name=found.name, pinned=found.pinned
        )


def _peer(m: local_pb.PeerStatus) -> PeerStatus:
    link = _link(m.node_id, m.link) if m.HasField("link") else None
    return PeerStatus(m.node_id, m.name, m.address, m.certificate, link)


def _link(node_id: bytes, m: local_pb.LinkStatus) -> LinkState:
    return LinkState(
        node_id,
        m.name,
        m.address,
        m.connected,
        m.live,
        m.last_sync if m.HasField("last_sync") else None,
        m.last_error if m.HasField("last_error") else None,
        m.failures,
        m.retry_at if m.HasField("retry_at") else None,
        m.pulled,
        m.pushed,
        m.received_live,
        m.pushes_left_to_peer,
        {_log(h.host, h.tag): h.next_idx for h in m.remote_heads},
        m.own_log_alarms,
        {_log(b.host, b.tag): (b.ours, b.theirs) for b in m.own_log_behind},
        m.received,
        m.duplicates,
        [_log(f.host, f.tag) for f in m.feeds],
    )


def _daemon(m: local_pb.DaemonStatus) -> DaemonStatus:
    found = tuple(Discovered(d.node_id, d.address, d.name, d.pinned) for d in m.discovered)
    return DaemonStatus(m.pid, m.listen, m.tls, m.auto_sync, m.discovery, found, m.uptime_s)


def _log(host: bytes, tag: str) -> LogKey:
    """A log named in a status; the local daemon's, but bounds-checked all the same."""
    try:
        return LogKey(host, check_tag(tag))
    except InvalidRecord as exc:
        raise ProtocolError(f"a status names an invalid log: {exc}") from None
