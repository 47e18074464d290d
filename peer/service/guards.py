"""What every handler goes through: who is calling, and its failure made a status.

Every peer error is mapped to a status code by `codec.status.status_for`; anything
else is logged here and answered with a fixed text: no Python detail reaches a peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from peer.codec.status import status_for
from peer.errors import PeerError, Throttled

log = logging.getLogger(__name__)
T = TypeVar("T")
Context = aio.ServicerContext[Any, Any]
FAILURE_TEXT = "the node could not serve this request (see its log)"
# A refused push reads on (discarding) until the client half-closes, at most this long:
# a grpc.aio client that writes after our status reports INTERNAL "Internal error from
# Core" instead of it (grpc/grpc#36066), so the pusher would never learn why.
DRAIN_S = 2.0
THROTTLE_DELAY_S = 0.25  # before refusing a throttled call (at most 100 wait per connection)


def caller_id(context: Context) -> str:
    """Who is calling: the address without its port (mTLS replaces it with the node id)."""
    peer = context.peer() or "unknown"
    return peer.rsplit(":", 1)[0] if peer.count(":") > 1 else peer


async def drain(requests: AsyncIterator[bytes]) -> None:
    """Discard what the client still sends, until it half-closes or DRAIN_S passes."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_S):
            async for _ in requests:
                pass


async def _abort(context: Context, error: BaseException) -> None:
    if isinstance(error, Throttled):  # a tarpit: the flooder waits; this node does no work
        await asyncio.sleep(THROTTLE_DELAY_S)
    if isinstance(error, PeerError):
        code, metadata = status_for(error)
        context.set_trailing_metadata(metadata)
        await context.abort(code, str(error))
    log.error("unexpected failure serving a request", exc_info=error)
    await context.abort(grpc.StatusCode.UNAVAILABLE, FAILURE_TEXT)


OnError = Callable[[Context, BaseException], None]


def _ignore(context: Context, error: BaseException) -> None:
    return None


def guard_unary(
    handler: Callable[[T, Context], Awaitable[bytes]],
    on_error: OnError = _ignore,
) -> Callable[[T, Context], Awaitable[bytes]]:
    @functools.wraps(handler)
    async def guarded(request: T, context: Context) -> bytes:
        try:
            return await handler(request, context)
        except aio.AbortError:
            raise
        except Exception as error:
            on_error(context, error)
            await _abort(context, error)
            raise  # unreachable: abort raises

    return guarded


def guard_stream(
    handler: Callable[[T, Context], AsyncIterator[bytes]],
    on_error: OnError = _ignore,
) -> Callable[[T, Context], AsyncIterator[bytes]]:
    @functools.wraps(handler)
    async def guarded(request: T, context: Context) -> AsyncIterator[bytes]:
        try:
            async for item in handler(request, context):
                yield item
        except aio.AbortError:
            raise
        except Exception as error:
            on_error(context, error)
            await _abort(context, error)

    return guarded
