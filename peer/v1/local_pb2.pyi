from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppendRequest(_message.Message):
    __slots__ = ("tag", "items")
    TAG_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    tag: str
    items: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, tag: _Optional[str] = ..., items: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("host", "tag", "first_idx", "count", "timestamps")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    FIRST_IDX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    first_idx: int
    count: int
    timestamps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., first_idx: _Optional[int] = ..., count: _Optional[int] = ..., timestamps: _Optional[_Iterable[int]] = ...) -> None: ...

class AppendStreamRequest(_message.Message):
    __slots__ = ("tag", "items")
    TAG_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    tag: str
    items: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, tag: _Optional[str] = ..., items: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AppendStreamResponse(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[AppendAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[AppendAck, _Mapping]]] = ...) -> None: ...

class AppendAck(_message.Message):
    __slots__ = ("seq", "host", "tag", "first_idx", "count", "timestamps")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    FIRST_IDX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    host: bytes
    tag: str
    first_idx: int
    count: int
    timestamps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seq: _Optional[int] = ..., host: _Optional[bytes] = ..., tag: _Optional[str] = ..., first_idx: _Optional[int] = ..., count: _Optional[int] = ..., timestamps: _Optional[_Iterable[int]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: NodeStatus
    def __init__(self, status: _Optional[_Union[NodeStatus, _Mapping]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "host", "name", "key_id", "logs", "peers", "views", "forks", "daemon", "keyring", "devices", "revoked")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    FORKS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_FIELD_NUMBER: _ClassVar[int]
    KEYRING_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    host: bytes
    name: str
    key_id: str
    logs: _containers.RepeatedCompositeFieldContainer[LogStatus]
    peers: _containers.RepeatedCompositeFieldContainer[PeerStatus]
    views: ViewsStatus
    forks: _containers.RepeatedCompositeFieldContainer[ForkStatus]
    daemon: DaemonStatus
    keyring: int
    devices: int
    revoked: int
    def __init__(self, node_id: _Optional[bytes] = ..., host: _Optional[bytes] = ..., name: _Optional[str] = ..., key_id: _Optional[str] = ..., logs: _Optional[_Iterable[_Union[LogStatus, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[PeerStatus, _Mapping]]] = ..., views: _Optional[_Union[ViewsStatus, _Mapping]] = ..., forks: _Optional[_Iterable[_Union[ForkStatus, _Mapping]]] = ..., daemon: _Optional[_Union[DaemonStatus, _Mapping]] = ..., keyring: _Optional[int] = ..., devices: _Optional[int] = ..., revoked: _Optional[int] = ...) -> None: ...

class LogStatus(_message.Message):
    __slots__ = ("host", "tag", "next_idx", "head", "frozen")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    NEXT_IDX_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    next_idx: int
    head: bytes
    frozen: bool
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., next_idx: _Optional[int] = ..., head: _Optional[bytes] = ..., frozen: _Optional[bool] = ...) -> None: ...

class PeerStatus(_message.Message):
    __slots__ = ("node_id", "name", "address", "certificate", "link")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    name: str
    address: str
    certificate: bool
    link: LinkStatus
    def __init__(self, node_id: _Optional[bytes] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., certificate: _Optional[bool] = ..., link: _Optional[_Union[LinkStatus, _Mapping]] = ...) -> None: ...

class LinkStatus(_message.Message):
    __slots__ = ("name", "address", "connected", "live", "last_sync", "last_error", "failures", "retry_at", "pulled", "pushed", "received_live", "pushes_left_to_peer", "remote_heads", "own_log_alarms", "own_log_behind", "received", "duplicates", "feeds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    PULLED_FIELD_NUMBER: _ClassVar[int]
    PUSHED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_LIVE_FIELD_NUMBER: _ClassVar[int]
    PUSHES_LEFT_TO_PEER_FIELD_NUMBER: _ClassVar[int]
    REMOTE_HEADS_FIELD_NUMBER: _ClassVar[int]
    OWN_LOG_ALARMS_FIELD_NUMBER: _ClassVar[int]
    OWN_LOG_BEHIND_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    connected: bool
    live: bool
    last_sync: float
    last_error: str
    failures: int
    retry_at: float
    pulled: int
    pushed: int
    received_live: int
    pushes_left_to_peer: int
    remote_heads: _containers.RepeatedCompositeFieldContainer[LogHeld]
    own_log_alarms: int
    own_log_behind: _containers.RepeatedCompositeFieldContainer[OwnLogBehind]
    received: int
    duplicates: int
    feeds: _containers.RepeatedCompositeFieldContainer[LogHeld]
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., connected: _Optional[bool] = ..., live: _Optional[bool] = ..., last_sync: _Optional[float] = ..., last_error: _Optional[str] = ..., failures: _Optional[int] = ..., retry_at: _Optional[float] = ..., pulled: _Optional[int] = ..., pushed: _Optional[int] = ..., received_live: _Optional[int] = ..., pushes_left_to_peer: _Optional[int] = ..., remote_heads: _Optional[_Iterable[_Union[LogHeld, _Mapping]]] = ..., own_log_alarms: _Optional[int] = ..., own_log_behind: _Optional[_Iterable[_Union[OwnLogBehind, _Mapping]]] = ..., received: _Optional[int] = ..., duplicates: _Optional[int] = ..., feeds: _Optional[_Iterable[_Union[LogHeld, _Mapping]]] = ...) -> None: ...

class LogHeld(_message.Message):
    __slots__ = ("host", "tag", "next_idx")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    NEXT_IDX_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    next_idx: int
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., next_idx: _Optional[int] = ...) -> None: ...

class OwnLogBehind(_message.Message):
    __slots__ = ("host", "tag", "ours", "theirs")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    OURS_FIELD_NUMBER: _ClassVar[int]
    THEIRS_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    ours: int
    theirs: int
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., ours: _Optional[int] = ..., theirs: _Optional[int] = ...) -> None: ...

class ViewsStatus(_message.Message):
    __slots__ = ("applied", "undecryptable", "unknown_version", "malformed")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    UNDECRYPTABLE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    applied: int
    undecryptable: int
    unknown_version: int
    malformed: int
    def __init__(self, applied: _Optional[int] = ..., undecryptable: _Optional[int] = ..., unknown_version: _Optional[int] = ..., malformed: _Optional[int] = ...) -> None: ...

class ForkStatus(_message.Message):
    __slots__ = ("host", "tag", "idx", "held", "offered", "detected_at")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    IDX_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    OFFERED_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    idx: int
    held: bytes
    offered: int
    detected_at: int
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., idx: _Optional[int] = ..., held: _Optional[bytes] = ..., offered: _Optional[int] = ..., detected_at: _Optional[int] = ...) -> None: ...

class DaemonStatus(_message.Message):
    __slots__ = ("pid", "listen", "tls", "auto_sync", "discovery", "discovered", "uptime_s")
    PID_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    AUTO_SYNC_FIELD_NUMBER: _ClassVar[int]
    DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    DISCOVERED_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    pid: int
    listen: str
    tls: bool
    auto_sync: bool
    discovery: str
    discovered: _containers.RepeatedCompositeFieldContainer[DiscoveredNode]
    uptime_s: float
    def __init__(self, pid: _Optional[int] = ..., listen: _Optional[str] = ..., tls: _Optional[bool] = ..., auto_sync: _Optional[bool] = ..., discovery: _Optional[str] = ..., discovered: _Optional[_Iterable[_Union[DiscoveredNode, _Mapping]]] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class DiscoveredNode(_message.Message):
    __slots__ = ("node_id", "address", "name", "pinned")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    address: str
    name: str
    pinned: bool
    def __init__(self, node_id: _Optional[bytes] = ..., address: _Optional[str] = ..., name: _Optional[str] = ..., pinned: _Optional[bool] = ...) -> None: ...
