"""PeerClient: one channel to one peer, every call with a deadline, errors mapped back.

Methods move raw bytes and parse the answers with `codec` (a malformed answer is a
ProtocolError, not a crash). A failed call is either the peer's answer, which
`codec.error_for` turns back into the error the peer raised, or a failure of the
channel (cannot connect, handshake refused, connection lost), which only
`channel_failure` here tells apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, cast

import grpc
from grpc import aio

from peer import codec
from peer.codec import Ack, Appended, FollowControl, Followed, RemoteIndex, pairing, wire
from peer.crypto import TLS_SERVER_NAME
from peer.errors import PeerError, PeerRefused, PeerUnavailable, Unsupported
from peer.records import LogKey, Range
from peer.remote import Batch
from peer.settings import KEEPALIVE_S, KEEPALIVE_TIMEOUT_S, MAX_MESSAGE_BYTES
from peer.status import NodeStatus
from peer.trust import Credentials
from peer.v1 import sync_pb2 as pb

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ClientTls:
    """Mutual TLS to one pinned peer: our credentials, and its certificate as the only
    root (so only the pinned node, or one holding its key, can answer)."""

    own: Credentials
    server_certificate: bytes


DEFAULT_STREAM_TIMEOUT_S = 3600.0


DEFAULT_KEEPALIVE_S = (KEEPALIVE_S, KEEPALIVE_TIMEOUT_S)  # the server expects the same


def channel_options(
    keepalive: tuple[float, float] = DEFAULT_KEEPALIVE_S,
) -> list[tuple[str, Any]]:
    """Client options; keepalive pings no more often than the server permits (a peer
    that stops answering, e.g. behind a silent blackhole, fails after time + timeout)."""
    every, timeout = keepalive
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", int(every * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout * 1000)),
        # grpcio 1.85 ends a transport whose ping goes unanswered only by this one:
        # with keepalive_timeout_ms alone, a silently dropped peer hung a stream forever
        ("grpc.http2.ping_timeout_ms", int(timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class PeerClient:
    """Talks to one peer's SyncService; use as `async with PeerClient(target) as peer:`."""

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTls | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT_S,
        keepalive: tuple[float, float] = DEFAULT_KEEPALIVE_S,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.tls = tls is not None
        self.answered = False  # the peer has answered on this channel: TLS got through
        self.protocol_minor = 0  # the peer's, once its index was read (push segments?)
        if tls is None:
            self._channel = aio.insecure_channel(target, options=channel_options(keepalive))
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.server_certificate,
                private_key=tls.own.key,
                certificate_chain=tls.own.certificate,
            )
            options = [
                *channel_options(keepalive),
                ("grpc.ssl_target_name_override", TLS_SERVER_NAME),
            ]
            self._channel = aio.secure_channel(target, credentials, options=options)

    async def close(self) -> None:
        await self._channel.close(None)

    def _failure(self, exc: aio.AioRpcError) -> PeerError:
        """The peer error for a failed call on this channel."""
        return call_error(exc, self.target, tls=self.tls, answered=self.answered)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _method(self, name: str) -> str:
        return f"/{codec.SERVICE_NAME}/{name}"

    async def get_index(self) -> RemoteIndex:
        call = self._channel.unary_unary(  # bytes in, bytes out
            self._method("GetIndex"), request_serializer=None, response_deserializer=None
        )

        async def ask(request: bytes) -> bytes:
            try:
                raw: bytes = await call(request, timeout=self.timeout)
            except aio.AioRpcError as exc:
                raise self._failure(exc) from None
            self.answered = True
            return raw

        index = await codec.read_whole_index(ask)
        self.protocol_minor = index.protocol_minor
        return index

    async def pull(self, ranges: Iterable[Range], max_batch: int = 0) -> AsyncIterator[Batch]:
        """The records of `ranges`, batch by batch, as the peer streams them."""
        call = self._channel.unary_stream(  # bytes in, bytes out
            self._method("PullRecords"), request_serializer=None, response_deserializer=None
        )
        request = codec.encode_pull_request(ranges, max_batch, segments=True)
        stream = call(request, timeout=self.stream_timeout)
        try:
            async for raw in stream:
                self.answered = True
                yield codec.decode_batch(pb.PullRecordsResponse, raw)
        except aio.AioRpcError as exc:
            raise self._failure(exc) from None
        finally:
            stream.cancel()

    async def push(self, batches: AsyncIterator[Batch]) -> tuple[int, int]:
        """Send batches; the peer stores each on arrival. Returns (added, duplicates)."""
        call = self._channel.stream_unary(  # bytes in, bytes out
            self._method("PushRecords"), request_serializer=None, response_deserializer=None
        )
        try:
            segments = self.protocol_minor >= wire.SEGMENTS_SINCE_MINOR
            stream = wire.encode_push_stream(batches, segments)
            raw = await call(stream, timeout=self.stream_timeout)
        except aio.AioRpcError as exc:
            raise self._failure(exc) from None
        return codec.decode_push_response(raw)

    async def follow(self, controls: AsyncIterator[FollowControl]) -> AsyncIterator[Followed]:
        """The peer's Follow stream (see `peer.remote.Remote.follow`)."""
        call = self._channel.stream_stream(  # bytes in, bytes out
            self._method("Follow"), request_serializer=None, response_deserializer=None
        )
        stream = call(codec.encode_follow_stream(controls))
        try:
            async for raw in stream:
                self.answered = True
                yield codec.decode_follow_response(raw)
        except aio.AioRpcError as exc:
            raise self._failure(exc) from None
        finally:
            stream.cancel()

    async def subscribe(
        self,
        since: Mapping[LogKey, int] | None = None,
        hosts: Iterable[bytes] = (),
        tags: Iterable[str] = (),
    ) -> AsyncIterator[Batch]:
        """Records from `since` on (per log), then live as the peer stores them."""
        call = self._channel.unary_stream(  # bytes in, bytes out
            self._method("Subscribe"), request_serializer=None, response_deserializer=None
        )
        stream = call(codec.encode_subscribe_request(since or {}, hosts, tags))
        try:
            async for raw in stream:
                self.answered = True
                yield codec.decode_batch(pb.SubscribeResponse, raw)
        except aio.AioRpcError as exc:
            raise self._failure(exc) from None
        finally:
            stream.cancel()


class LocalClient(PeerClient):
    """A node's own daemon over its Unix socket: SyncService plus the local API."""

    def __init__(self, socket: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(f"unix:{socket}", timeout=timeout)
        self.socket = socket

    async def _call(self, method: str, request: bytes) -> bytes:
        call = self._channel.unary_unary(  # bytes in, bytes out
            f"/{codec.LOCAL_SERVICE_NAME}/{method}",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            return cast(bytes, await call(request, timeout=self.timeout))
        except aio.AioRpcError as exc:
            raise call_error(exc, "the local daemon", tls=False) from None

    async def append(self, tag: str, items: Sequence[bytes]) -> Appended:
        """Append records as the node's host, in one transaction of the daemon."""
        raw = await self._call("Append", codec.encode_append_request(tag, items))
        return codec.decode_append_response(raw)

    def append_stream(self) -> AppendStreamCall:
        """Open an AppendStream (no deadline: a producer may write for days)."""
        call = self._channel.stream_stream(  # bytes in, bytes out
            f"/{codec.LOCAL_SERVICE_NAME}/AppendStream",
            request_serializer=None,
            response_deserializer=None,
        )
        return AppendStreamCall(call())  # type: ignore[call-arg]  # no iterator: call.write

    async def status(self) -> NodeStatus:
        """The daemon's live state: logs, peers and their links."""
        return codec.decode_status_response(
            await self._call("GetStatus", codec.encode_status_request())
        )


class AppendStreamCall:
    """One open AppendStream: write request messages, read the acknowledgements."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def write(self, tag: str, items: Sequence[bytes]) -> None:
        """Send one message (waits while flow control holds it back)."""
        try:
            await self._call.write(codec.encode_append_stream_request(tag, items))
        except aio.AioRpcError as exc:
            raise call_error(exc, "the local daemon", tls=False) from None
        except asyncio.InvalidStateError:  # the call ended before this write
            raise await self._ended() from None

    async def done_writing(self) -> None:
        try:
            await self._call.done_writing()
        except aio.AioRpcError as exc:
            raise call_error(exc, "the local daemon", tls=False) from None
        except asyncio.InvalidStateError:
            raise await self._ended() from None

    async def _ended(self) -> PeerError:
        """Why the call ended (it has: grpc refused a write on it)."""
        code = await self._call.code()
        if code == grpc.StatusCode.OK:
            return PeerUnavailable("the local daemon ended the append stream early")
        details = await self._call.details()
        failure = channel_failure(code, details or "", "the local daemon", tls=False, answered=True)
        if failure is not None:
            return failure
        return _status_error(code, details, await self._call.trailing_metadata())

    async def read(self) -> list[Ack] | None:
        """The next acknowledgements; None once the daemon ended the stream well."""
        try:
            raw = await self._call.read()
        except aio.AioRpcError as exc:
            raise call_error(exc, "the local daemon", tls=False) from None
        if raw is aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lag grpcio
            code = await self._call.code()
            if code != grpc.StatusCode.OK:  # ended without a message: read the status
                details = await self._call.details()
                metadata = await self._call.trailing_metadata()
                raise _status_error(code, details, metadata)
            return None
        return codec.decode_append_stream_response(cast(bytes, raw))

    def cancel(self) -> None:
        self._call.cancel()


def _status_error(code: grpc.StatusCode, details: str, metadata: Any) -> PeerError:
    pairs = dict(cast(Iterable[tuple[str, str]], metadata or ()))
    return codec.error_for(code, details or "", pairs, "the local daemon")


def call_error(
    exc: aio.AioRpcError, target: str, *, tls: bool, answered: bool = False
) -> PeerError:
    """The peer error for a failed call: the channel's failure if it was one, else the
    error the peer answered with. A status that names its error class (`peer-error`)
    was answered by the peer, whatever its text says."""
    metadata = dict(cast(Iterable[tuple[str, str]], exc.trailing_metadata() or ()))
    code = exc.code() if isinstance(exc.code(), grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    details = exc.details() or ""
    if codec.ERROR_KEY not in metadata:
        failure = channel_failure(code, details, target, tls=tls, answered=answered)
        if failure is not None:
            return failure
    return codec.error_for(code, details, metadata, target)


# What BoringSSL says (verifying, or in the other side's alert) of a certificate's dates.
CERTIFICATE_DATES = (
    "certificate has expired",
    "certificate is not yet valid",
    "certificate expired",
)


def channel_failure(
    code: grpc.StatusCode, details: str, target: str, *, tls: bool, answered: bool
) -> PeerError | None:
    """The error for a call the channel failed (no peer answered it), or None if the
    status is not one. grpc reports every such failure as UNAVAILABLE and says which
    only in English, its own or BoringSSL's, so that text is read here and nowhere
    else. `answered`: the peer has answered on this channel, so TLS got through and a
    closed socket is a lost connection, not a refused handshake."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    if answered:
        return PeerUnavailable(f"lost the connection to {target} ({details})")
    lowered = details.lower()
    handshake = "ssl" in lowered or "handshake" in lowered or (tls and "socket closed" in lowered)
    dates = next((words for words in CERTIFICATE_DATES if words in lowered), None)
    if handshake and dates:
        return PeerRefused(
            f"TLS handshake with {target} failed: {dates} (a certificate outside its "
            "validity dates: is the clock wrong on this machine or there? certificates "
            "made by `peer init` are valid from 2000 to 9999)"
        )
    if handshake:
        return PeerRefused(
            f"{target} refused the TLS handshake: it does not trust this node yet (run "
            "`peer peers add` there with this node's `peer id`), or it pinned this node "
            "but has not read its certificate yet (it reads it from this node's address "
            "while `peer serve` runs here), or it is not the node pinned here"
        )
    if "failed to connect" in lowered:
        reason = "connection refused" if "refused" in lowered else "no answer"
        return PeerUnavailable(f"cannot reach {target} ({reason}): is `peer serve` running there?")
    return None


class PairingClient:
    """The inviter's pairing port, over server-only TLS: the inviter is checked against
    the certificate whose hash the code names; we prove the secret and our key."""

    def __init__(self, pairing_address: str, server_certificate: bytes) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=server_certificate)
        options = [("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
        self.address = pairing_address
        self._channel = aio.secure_channel(pairing_address, credentials, options=options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close(None)

    async def join(self, request: pairing.JoinRequest) -> tuple[str, str, list[str]]:
        """Redeem the invitation: (sync key text, inviter's name, older keys as text);
        nothing is pinned on the inviter until `confirm`."""
        raw = await self._call("Join", pairing.encode_join_request(request))
        return pairing.decode_join_response(raw)

    async def confirm(self, confirm: pairing.ConfirmJoin) -> bool:
        """Tell the inviter our verdict; False if it predates ConfirmJoin (protocol 1.0
        inviters pin the joiner in Join itself)."""
        try:
            raw = await self._call("ConfirmJoin", pairing.encode_confirm_join(confirm))
        except _Unimplemented:
            return False
        pairing.decode_confirm_join_response(raw)
        return True

    async def introduce(self, certificate: bytes) -> None:
        """Hand this node's certificate to a node that pinned its id alone; PeerRefused
        if that node pins no such id without a certificate."""
        try:
            raw = await self._call("Introduce", pairing.encode_introduce(certificate))
        except _Unimplemented as exc:
            raise Unsupported("the node does not know introductions (an older peer)") from exc
        pairing.decode_introduce_response(raw)

    async def _call(self, method: str, request: bytes) -> bytes:
        call = self._channel.unary_unary(
            f"/{pairing.PAIRING_SERVICE_NAME}/{method}",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            return cast(bytes, await call(request, timeout=DEFAULT_TIMEOUT_S))
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise _Unimplemented from None
            raise call_error(exc, self.address, tls=True) from None


class _Unimplemented(Exception):
    """The peer does not know the method (an older version)."""
