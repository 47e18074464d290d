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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from peer.errors import PeerError
from peer.store import Store

log = logging.getLogger(__name__)

POLL_S = 0.05  # other processes' commits (the CLI) are seen within this
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
        self._task = asyncio.create_task(self._run(), name=f"watch-{name}")

    def notify(self) -> None:
        """Something was committed: call back soon (once, however many commits)."""
        self._changed.set()

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
    """Polls one store's `data_version` for all its watches (share one per store)."""

    def __init__(self, store: Store, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self._watches: list[Watch] = []
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

    def _committed_here(self) -> None:
        for watch in self._watches:
            if watch.local:
                watch.notify()

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
            await asyncio.sleep(self.poll_s)
