"""Helpers of the group C reliability tests (hostile peers, floods): raw calls with a
status tally, a whitelist for error details, RSS and fd counts from /proc, and a
test-double peer that speaks our protocol with whatever it is told to say.

Every call has a deadline; every loop is bounded.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from peer import codec

CALL_S = 10.0
# What error details may never contain: exception texts, Python type names, paths.
LEAK = re.compile(
    r"Traceback|<class|Exception|\b[A-Z]\w*Error\b|Error:|\bFile \""
    r"|\.py\b|site-packages|/usr/|/tmp/"
)
NOT_OK_ALLOWED = {
    "INVALID_ARGUMENT",
    "OUT_OF_RANGE",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "ALREADY_EXISTS",
    "ABORTED",
}
RAW: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
# Every non-OK status `answer` saw in this session, for C19's aggregate check.
SEEN: list[tuple[str, str]] = []


def method(name: str) -> str:
    return f"/{codec.SERVICE_NAME}/{name}"


def rss_mb() -> float:
    """This process's resident set size in MB (/proc, no psutil needed)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def answer(
    channel: aio.Channel, rpc: str, body: bytes, live_s: float = 0.5
) -> tuple[str, str]:
    """(status name, details) the server gave for `body` on `rpc`; an accepted
    Subscribe stays open, so it is cut at `live_s` and reported as OK."""
    try:
        if rpc == "GetIndex":
            await channel.unary_unary(method(rpc), **RAW)(body, timeout=CALL_S)
        elif rpc == "PushRecords":
            await channel.stream_unary(method(rpc), **RAW)(iter([body]), timeout=CALL_S)
        else:
            live = rpc == "Subscribe"
            stream = channel.unary_stream(method(rpc), **RAW)
            async for _ in stream(body, timeout=live_s if live else CALL_S):
                pass
    except aio.AioRpcError as exc:
        if rpc == "Subscribe" and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "OK", ""
        SEEN.append((exc.code().name, exc.details() or ""))
        return exc.code().name, exc.details() or ""
    return "OK", ""


# -- a test double speaking our protocol ------------------------------------------------

Unary = Callable[[bytes, Any], Awaitable[bytes]]
Streaming = Callable[[bytes, Any], AsyncIterator[bytes]]


@dataclass
class FakePeer:
    """A grpc.aio server whose handlers the test writes (a hostile relay, a liar)."""

    get_index: Unary
    pull_records: Streaming
    calls: dict[str, int] = field(default_factory=dict)
    server: aio.Server | None = None
    port: int = 0

    async def start(self, credentials: grpc.ServerCredentials | None = None) -> None:
        async def get_index(request: bytes, context: Any) -> bytes:
            self.calls["GetIndex"] = self.calls.get("GetIndex", 0) + 1
            return await self.get_index(request, context)

        async def pull(request: bytes, context: Any) -> AsyncIterator[bytes]:
            self.calls["PullRecords"] = self.calls.get("PullRecords", 0) + 1
            async for item in self.pull_records(request, context):
                yield item

        async def push(requests: AsyncIterator[bytes], context: Any) -> bytes:
            self.calls["PushRecords"] = self.calls.get("PushRecords", 0) + 1
            async for _ in requests:
                pass
            return codec.encode_push_response(0, 0)

        handlers = grpc.method_handlers_generic_handler(
            codec.SERVICE_NAME,
            {
                "GetIndex": grpc.unary_unary_rpc_method_handler(get_index),
                "PullRecords": grpc.unary_stream_rpc_method_handler(pull),
                "PushRecords": grpc.stream_unary_rpc_method_handler(push),
            },
        )
        self.server = aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
        self.server.add_generic_rpc_handlers((handlers,))
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        await self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0.2)


# -- raw protobuf writing ---------------------------------------------------------------


def varint(value: int) -> bytes:
    """A protobuf varint, for bodies written by hand as a hostile peer writes them."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, data: bytes) -> bytes:
    return key(number, 2) + varint(len(data)) + data
