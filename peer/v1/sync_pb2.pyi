from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Record(_message.Message):
    __slots__ = ("id", "host", "tag", "idx", "timestamp", "version", "payload", "wrapped_key", "prev", "sig")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    IDX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    SIG_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    host: bytes
    tag: str
    idx: int
    timestamp: int
    version: str
    payload: bytes
    wrapped_key: bytes
    prev: bytes
    sig: bytes
    def __init__(self, id: _Optional[bytes] = ..., host: _Optional[bytes] = ..., tag: _Optional[str] = ..., idx: _Optional[int] = ..., timestamp: _Optional[int] = ..., version: _Optional[str] = ..., payload: _Optional[bytes] = ..., wrapped_key: _Optional[bytes] = ..., prev: _Optional[bytes] = ..., sig: _Optional[bytes] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("host", "tag", "first_idx", "count", "data")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    FIRST_IDX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    first_idx: int
    count: int
    data: bytes
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., first_idx: _Optional[int] = ..., count: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class LogHead(_message.Message):
    __slots__ = ("host", "tag", "next_idx", "head_hash", "frozen")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    NEXT_IDX_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    next_idx: int
    head_hash: bytes
    frozen: bool
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., next_idx: _Optional[int] = ..., head_hash: _Optional[bytes] = ..., frozen: _Optional[bool] = ...) -> None: ...

class HostKey(_message.Message):
    __slots__ = ("host", "public_key")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    public_key: bytes
    def __init__(self, host: _Optional[bytes] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class LogRange(_message.Message):
    __slots__ = ("host", "tag", "start", "end")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    host: bytes
    tag: str
    start: int
    end: int
    def __init__(self, host: _Optional[bytes] = ..., tag: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class GetIndexRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: bytes
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[bytes] = ...) -> None: ...

class GetIndexResponse(_message.Message):
    __slots__ = ("node_id", "protocol_version", "logs", "hosts", "next_page_token", "protocol_minor")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_MINOR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    protocol_version: int
    logs: _containers.RepeatedCompositeFieldContainer[LogHead]
    hosts: _containers.RepeatedCompositeFieldContainer[HostKey]
    next_page_token: bytes
    protocol_minor: int
    def __init__(self, node_id: _Optional[str] = ..., protocol_version: _Optional[int] = ..., logs: _Optional[_Iterable[_Union[LogHead, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[HostKey, _Mapping]]] = ..., next_page_token: _Optional[bytes] = ..., protocol_minor: _Optional[int] = ...) -> None: ...

class PullRecordsRequest(_message.Message):
    __slots__ = ("ranges", "max_batch", "segments")
    RANGES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    ranges: _containers.RepeatedCompositeFieldContainer[LogRange]
    max_batch: int
    segments: bool
    def __init__(self, ranges: _Optional[_Iterable[_Union[LogRange, _Mapping]]] = ..., max_batch: _Optional[int] = ..., segments: _Optional[bool] = ...) -> None: ...

class PullRecordsResponse(_message.Message):
    __slots__ = ("records", "hosts", "segments")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    hosts: _containers.RepeatedCompositeFieldContainer[HostKey]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[HostKey, _Mapping]]] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ...) -> None: ...

class PushRecordsRequest(_message.Message):
    __slots__ = ("records", "hosts", "segments")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    hosts: _containers.RepeatedCompositeFieldContainer[HostKey]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[HostKey, _Mapping]]] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ...) -> None: ...

class PushRecordsResponse(_message.Message):
    __slots__ = ("added", "duplicates")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    added: int
    duplicates: int
    def __init__(self, added: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("since", "hosts", "tags")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    since: _containers.RepeatedCompositeFieldContainer[LogHead]
    hosts: _containers.RepeatedScalarFieldContainer[bytes]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, since: _Optional[_Iterable[_Union[LogHead, _Mapping]]] = ..., hosts: _Optional[_Iterable[bytes]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("records", "hosts")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    hosts: _containers.RepeatedCompositeFieldContainer[HostKey]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[HostKey, _Mapping]]] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("have", "graft", "prune", "more", "segments")
    HAVE_FIELD_NUMBER: _ClassVar[int]
    GRAFT_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    have: _containers.RepeatedCompositeFieldContainer[LogHead]
    graft: _containers.RepeatedCompositeFieldContainer[LogHead]
    prune: _containers.RepeatedCompositeFieldContainer[LogHead]
    more: bool
    segments: bool
    def __init__(self, have: _Optional[_Iterable[_Union[LogHead, _Mapping]]] = ..., graft: _Optional[_Iterable[_Union[LogHead, _Mapping]]] = ..., prune: _Optional[_Iterable[_Union[LogHead, _Mapping]]] = ..., more: _Optional[bool] = ..., segments: _Optional[bool] = ...) -> None: ...

class FollowResponse(_message.Message):
    __slots__ = ("records", "hosts", "notes", "host", "segments")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    hosts: _containers.RepeatedCompositeFieldContainer[HostKey]
    notes: _containers.RepeatedCompositeFieldContainer[LogHead]
    host: bytes
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[HostKey, _Mapping]]] = ..., notes: _Optional[_Iterable[_Union[LogHead, _Mapping]]] = ..., host: _Optional[bytes] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("secret", "certificate", "name", "proof")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    secret: bytes
    certificate: bytes
    name: str
    proof: bytes
    def __init__(self, secret: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., name: _Optional[str] = ..., proof: _Optional[bytes] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("sync_key", "name", "older_keys")
    SYNC_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OLDER_KEYS_FIELD_NUMBER: _ClassVar[int]
    sync_key: str
    name: str
    older_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sync_key: _Optional[str] = ..., name: _Optional[str] = ..., older_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class ConfirmJoinRequest(_message.Message):
    __slots__ = ("secret", "node_id", "accepted", "proof")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    secret: bytes
    node_id: bytes
    accepted: bool
    proof: bytes
    def __init__(self, secret: _Optional[bytes] = ..., node_id: _Optional[bytes] = ..., accepted: _Optional[bool] = ..., proof: _Optional[bytes] = ...) -> None: ...

class ConfirmJoinResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IntroduceRequest(_message.Message):
    __slots__ = ("certificate",)
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    def __init__(self, certificate: _Optional[bytes] = ...) -> None: ...

class IntroduceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
