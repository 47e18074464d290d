"""A hostile pinned peer in its own process (so that it does not share the test's event
loop): `python -m tests.reliability.hostile_c '<json>'`.

Modes:
- flood: `calls` GetIndex calls (`concurrency` at once) as fast as it can, then
  `cancels` Subscribe streams each cancelled right after it starts (rapid reset);
- slowloris: `connections` x `streams` PushRecords streams that never send a message,
  held until the server closes them or `hold_s` passes;
- subscribers: slow and stuck Subscribe streams;
- pull: an honest peer pulling everything for `seconds` (its throughput).

It prints one JSON line: status codes seen, and timings. Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from peer import codec
from peer.crypto import TLS_SERVER_NAME
from peer.records import Range
from peer.v1 import sync_pb2 as pb

RAW: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}


def channel(spec: dict[str, Any]) -> aio.Channel:
    if "server_cert" not in spec:  # a plaintext loopback node
        return aio.insecure_channel(spec["target"], options=[("grpc.use_local_subchannel_pool", 1)])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(spec["server_cert"]).read_bytes(),
        private_key=Path(spec["key"]).read_bytes(),
        certificate_chain=Path(spec["cert"]).read_bytes(),
    )
    options = [
        ("grpc.ssl_target_name_override", TLS_SERVER_NAME),
        ("grpc.use_local_subchannel_pool", 1),  # one connection per channel
    ]
    return aio.secure_channel(spec["target"], credentials, options=options)


async def flood(spec: dict[str, Any]) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    details: Counter[str] = Counter()
    gate = asyncio.Semaphore(spec["concurrency"])
    method = f"/{codec.SERVICE_NAME}/GetIndex"
    started = time.monotonic()
    async with channel(spec) as chan:
        call = chan.unary_unary(method, **RAW)

        async def one() -> None:
            async with gate:
                try:
                    await call(codec.encode_get_index_request(), timeout=10)
                    codes["OK"] += 1
                except aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    details[(exc.details() or "")[:40]] += 1

        await asyncio.gather(*(one() for _ in range(spec["calls"])))
        flood_s = time.monotonic() - started
        subscribe = chan.unary_stream(f"/{codec.SERVICE_NAME}/Subscribe", **RAW)
        request = codec.encode_subscribe_request({})
        for n in range(spec["cancels"]):
            stream = subscribe(request, timeout=10)
            stream.cancel()
            if n % 500 == 0:
                await asyncio.sleep(0)  # let the cancels go out
    return {
        "codes": dict(codes),
        "details": dict(details.most_common(5)),
        "flood_s": flood_s,
        "total_s": time.monotonic() - started,
    }


async def slowloris(spec: dict[str, Any]) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    closed: list[tuple[str, str, float]] = []
    channels = [channel(spec) for _ in range(spec["connections"])]
    started = time.monotonic()

    async def silent() -> AsyncIterator[bytes]:
        await asyncio.sleep(spec["hold_s"])
        return
        yield b""  # pragma: no cover (makes this an async generator)

    async def hold(chan: aio.Channel) -> None:
        push = chan.stream_unary(f"/{codec.SERVICE_NAME}/PushRecords", **RAW)
        try:
            await push(silent(), timeout=spec["hold_s"] + 5)
            codes["OK"] += 1
        except aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            closed.append((exc.code().name, exc.details() or "", time.monotonic() - started))

    try:
        await asyncio.gather(*(hold(c) for c in channels for _ in range(spec["streams"])))
    finally:
        for chan in channels:
            await chan.close()
    return {"codes": dict(codes), "closed": sorted(closed, key=lambda c: c[2])}


async def subscribers(spec: dict[str, Any]) -> dict[str, Any]:
    """`slow` subscribers reading one message per `pause` s and `stuck` ones that never
    read, each on its own connection, for `hold_s`."""
    outcomes: Counter[str] = Counter()
    request = codec.encode_subscribe_request({})

    async def one(pause: float | None) -> None:
        async with channel(spec) as chan:
            call = chan.unary_stream(f"/{codec.SERVICE_NAME}/Subscribe", **RAW)
            stream = call(request, timeout=spec["hold_s"])
            try:
                if pause is None:
                    await stream.wait_for_connection()
                    await asyncio.sleep(spec["hold_s"])
                    return
                while await stream.read() is not aio.EOF:
                    await asyncio.sleep(pause)
                outcomes["EOF"] += 1
            except aio.AioRpcError as exc:
                outcomes[exc.code().name] += 1
            finally:
                stream.cancel()

    slow = [one(spec["pause"]) for _ in range(spec["slow"])]
    await asyncio.gather(*slow, *(one(None) for _ in range(spec["stuck"])))
    return {"codes": dict(outcomes)}


async def pull(spec: dict[str, Any]) -> dict[str, Any]:
    """An honest peer: pulls everything the node holds, again and again, for `seconds`
    (after one warm-up pull); records per second, decoded as a real client does."""
    async with channel(spec) as chan:
        raw = await chan.unary_unary(f"/{codec.SERVICE_NAME}/GetIndex", **RAW)(
            codec.encode_get_index_request(), timeout=10
        )
        index = codec.decode_index(raw)
        ranges = [Range(log.host, log.tag, 0, head.next_idx) for log, head in index.logs.items()]
        call = chan.unary_stream(f"/{codec.SERVICE_NAME}/PullRecords", **RAW)
        request = codec.encode_pull_request(ranges, 0)

        async def once() -> int:
            got = 0
            async for message in call(request, timeout=30):
                got += len(codec.decode_batch(pb.PullRecordsResponse, message)[0])
            return got

        await once()
        got, started = 0, time.monotonic()
        while time.monotonic() - started < spec["seconds"]:
            got += await once()
        return {"records": got, "seconds": time.monotonic() - started}


def main() -> None:
    spec = json.loads(sys.argv[1])
    modes = {"flood": flood, "slowloris": slowloris, "subscribers": subscribers, "pull": pull}
    result = asyncio.run(modes[spec["mode"]](spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
