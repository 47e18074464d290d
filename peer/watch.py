"""Noticing commits to a store: one polling task per store, for everyone who cares.

A commit by this process is known at once (`Store.on_change` fires after records are
added). A commit by another process (the CLI appending, `peer peers add`) can only be
asked of SQLite: `PRAGMA data_version` changes whenever another connection committed.
A `StoreWatcher` asks every POLL_S, once for all its watches: the live feed (records
to publish), the server (its trust list) and the mesh (its links). Each `Watch` runs
its callback in its own task, one call at a time, only after a change, and at most
once per its `every` seconds: so the trust list is re-read when something was
committed, never on every tick, and a slow callback holds up no other watch. The
poll runs while there is a watch, and stops with the last one.

So that another process's commit need not wait for the next poll, the daemon keeps a
`Doorbell` (a datagram socket beside its local API's): a writer that committed `ring`s
it, and the watcher asks `data_version` at once (`StoreWatcher.wake`). Ringing never
blocks and never fails the writer: with no daemon there is nobody to ring, and the
datagram is simply not sent. The poll stays, for a writer that does not ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from peer.doorbell import DOORBELL_NAME, doorbell_path, ring
from peer.errors import PeerError
from peer.store import Store

log = logging.getLogger(__name__)
__all__ = ["DOORBELL_NAME", "Doorbell", "StoreWatcher", "Watch", "doorbell_path", "ring"]

POLL_S = 0.05  # other processes' commits (the CLI) are seen within this, unrung
TRUST_POLL_S = 0.5  # the trust list is re-read at most this often

OnChange = Callable[[], Awaitable[None]]


class Watch:
    """One interest in a store's commits; `close` it when done."""

    def __init__(
        self, watcher: StoreWatcher, name: str, on_change: OnChange, every: float, local: bool
    ) -> None:
        self.name = name
        self.local = local  # also woken at once by this process's commits of records
        self._watcher = watcher
        self._on_change = on_change
        self._every = every
        self._changed = asyncio.Event()
        self._elsewhere = False
        self._task = asyncio.create_task(self._run(), name=f"watch-{name}")

    def notify(self, *, here: bool = False) -> None:
        """Something was committed: call back soon (once, however many commits).
        `here`: by this process, which knows what it committed."""
        if not here:
            self._elsewhere = True
        self._changed.set()

    def committed_elsewhere(self) -> bool:
        """Whether, since the last asking, a commit this process did not make may have
        happened (`data_version` changed, or the watch just began): then only a read of
        the store tells what it added. Asking clears it."""
        elsewhere, self._elsewhere = self._elsewhere, False
        return elsewhere

    async def close(self) -> None:
        """Stop calling back (a call under way is cancelled)."""
        await self._watcher.forget(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._on_change()
            except PeerError as exc:  # e.g. the disk is busy: the next change retries
                log.warning("%s: %s", self.name, exc)
            if self._every:
                await asyncio.sleep(self._every)


class StoreWatcher:
    """Polls one store's `data_version` for all its watches (share one per store), and
    at once when woken (`wake`)."""

    def __init__(self, store: Store, poll_s: float | None = None) -> None:
        self.store = store
        self.poll_s = POLL_S if poll_s is None else poll_s
        self._watches: list[Watch] = []
        self._woken = asyncio.Event()
        self._poll: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] | None = None

    def watch(
        self,
        name: str,
        on_change: OnChange,
        *,
        every: float = 0.0,
        local: bool = False,
        at_once: bool = False,
    ) -> Watch:
        """Await `on_change` after every commit (`name` labels its warnings): by another
        process within `poll_s`; by this one too if `local`; once now if `at_once`."""
        watch = Watch(self, name, on_change, every, local)
        self._watches.append(watch)
        if at_once:
            watch.notify()
        if self._poll is None:
            self._stop_listening = self.store.on_change(self._committed_here)
            self._poll = asyncio.create_task(self._run(), name="store-watch")
        return watch

    async def forget(self, watch: Watch) -> None:
        """Drop `watch`; the poll stops with the last one."""
        if watch in self._watches:
            self._watches.remove(watch)
        if self._watches or self._poll is None:
            return
        poll, self._poll = self._poll, None
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll

    def wake(self) -> None:
        """Another process says it committed: ask `data_version` now, not at the next
        poll (a wake during a poll asks once more right after it)."""
        self._woken.set()

    def _committed_here(self) -> None:
        for watch in self._watches:
            if watch.local:
                watch.notify(here=True)

    async def _run(self) -> None:
        version: int | None = None  # the first answer is the baseline
        while True:
            try:
                current = await self.store.data_version()
            except PeerError as exc:
                log.warning("store watch: %s", exc)
            else:
                if version is not None and current != version:
                    for watch in list(self._watches):
                        watch.notify()
                version = current
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._woken.wait()
            self._woken.clear()


class _Rung(asyncio.DatagramProtocol):
    def __init__(self, on_ring: Callable[[], None]) -> None:
        self._on_ring = on_ring

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._on_ring()  # what was sent does not matter: only that it was


class Doorbell:
    """A datagram socket at `path` calling `on_ring` whenever it is rung (`ring`)."""

    def __init__(self, transport: asyncio.BaseTransport, path: Path) -> None:
        self._transport = transport
        self.path = path

    @classmethod
    async def open(cls, path: Path, on_ring: Callable[[], None]) -> Doorbell:
        """Bind `path` (replacing a stale socket there); its mode follows the umask."""
        path.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Rung(on_ring), local_addr=str(path), family=socket.AF_UNIX
        )
        return cls(transport, path)

    def close(self) -> None:
        self._transport.close()
        self.path.unlink(missing_ok=True)
