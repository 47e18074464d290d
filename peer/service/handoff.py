"""The daemon's half of the shell hook's hand-off (`peer.handoff`: the protocol).

One request per connection: the entry, read with its length first (at most
MAX_REQUEST_BYTES, and within READ_TIMEOUT_S), checked, written through the daemon's
append (its group commit: the same path as the local API's Append), and answered once
durable. At most MAX_CONNECTIONS at once; one more is answered "busy" and closed (its
hook writes the entry itself). A bad request is answered with what was wrong, in one
line, and the daemon goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.errors import PeerError, UsageError
from peer.handoff import LENGTH_BYTES, MAX_REQUEST_BYTES, VERSION, frame
from peer.store import HistoryEntry

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # hooks at once (one per command just run, in every terminal)
READ_TIMEOUT_S = 5.0  # a connection that sends no whole request in this is dropped
EXIT_RANGE = (-(2**31), 2**31 - 1)
_TEXT = ("id", "command", "cwd", "hostname", "session")
_OPTIONAL = ("exit", "duration")
AddFn = Callable[[HistoryEntry], Awaitable[int]]  # the entry written; its record's idx


def entry_of(body: bytes) -> HistoryEntry:
    """The entry a request carries; UsageError saying what is wrong otherwise."""
    try:
        fields = json.loads(body)
    except ValueError as exc:
        raise UsageError(f"the request is not UTF-8 JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise UsageError("the request is not a JSON object")
    if fields.get("v") != VERSION:
        raise UsageError(f"unknown hand-off version {fields.get('v')!r} (this daemon: {VERSION})")
    for name in _TEXT:
        if not isinstance(fields.get(name), str):
            raise UsageError(f"the entry's {name!r} must be a string")
    for name in (*_OPTIONAL, "timestamp"):
        value = fields.get(name)
        optional = name in _OPTIONAL
        if not (optional and value is None) and not _is_int(value):
            raise UsageError(f"the entry's {name!r} must be an integer")
    if fields["exit"] is not None and not EXIT_RANGE[0] <= fields["exit"] <= EXIT_RANGE[1]:
        raise UsageError("the entry's 'exit' is out of range")
    if (fields["duration"] or 0) < 0 or fields["timestamp"] < 0:
        raise UsageError("the entry's 'duration' and 'timestamp' must not be negative")
    names = (*_TEXT, *_OPTIONAL, "timestamp")
    return HistoryEntry(**{name: fields[name] for name in names})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class HandoffServer:
    """The listening socket and the connections being served."""

    path: Path
    add: AddFn
    server: asyncio.AbstractServer | None = None
    active: int = 0

    async def stop(self) -> None:
        """Stop listening; requests being written are answered first (bounded)."""
        if self.server is None:
            return
        self.server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READ_TIMEOUT_S):
                await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: one request, one answer."""
        try:
            if self.active >= MAX_CONNECTIONS:
                await _answer(writer, {"ok": False, "error": "busy: too many hand-offs at once"})
                return
            self.active += 1
            try:
                await _answer(writer, await self._handle(reader))
            finally:
                self.active -= 1
        except (OSError, TimeoutError):  # the hook left, or never sent a whole request
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                body = await _read_request(reader)
            idx = await self.add(entry_of(body))
        except PeerError as exc:
            log.info("hand-off refused: %s", exc)
            return {"ok": False, "error": str(exc)}
        except asyncio.IncompleteReadError:
            return {"ok": False, "error": "the request ended before its length said"}
        except TimeoutError:  # only the read has a timeout
            return {"ok": False, "error": f"no whole request within {READ_TIMEOUT_S:g} s"}
        except OSError:  # the hook left: nobody to answer
            raise
        except Exception:  # a bug: logged with its traceback, the daemon goes on
            log.exception("hand-off failed")
            return {"ok": False, "error": "the daemon failed to write it (see its log)"}
        return {"ok": True, "idx": idx}


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await reader.readexactly(LENGTH_BYTES), "big")
    if length > MAX_REQUEST_BYTES:
        raise UsageError(
            f"a request of {length:,} bytes is over the limit of {MAX_REQUEST_BYTES:,}"
        )
    return await reader.readexactly(length)


async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(frame(answer))
    async with asyncio.timeout(READ_TIMEOUT_S):
        await writer.drain()


async def start_handoff_server(path: Path, add: AddFn) -> HandoffServer:
    """Listen at `path` (a stale socket there replaced), mode 0600 from the start."""
    path.unlink(missing_ok=True)
    handoff = HandoffServer(path, add)
    previous = os.umask(0o077)
    try:
        handoff.server = await asyncio.start_unix_server(handoff.serve, path)
    except OSError as exc:
        raise UsageError(f"cannot create the hand-off socket {path}: {exc.strerror}") from exc
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    return handoff
