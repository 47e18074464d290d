"""Shared fixtures: real stores on real SQLite files under tmp_path, and seeded randomness.

Every random test prints its seed: Hypothesis runs with a seed chosen here (shown in
the pytest header; rerun with `--hypothesis-seed=N`), and the `rng` fixture prints
its own seed, which pytest shows when the test fails.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from peer.crypto import Author, SigningKey, SyncKey, record_hash
from peer.home import Home
from peer.records import Head, Record
from peer.store import Store

if TYPE_CHECKING:  # imported in the fixtures: tests.nodes imports this module
    from tests.daemons import Daemons
    from tests.nodes import Nodes

settings.register_profile(
    "default",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("default")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = int.from_bytes(os.urandom(4), "big")


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed", None)
    return f"hypothesis seed: {seed} (rerun with --hypothesis-seed={seed})"


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"random seed: {seed}")
    return random.Random(seed)


def new_author(sync: SyncKey | None = None) -> Author:
    """A fresh host with its own signing key, writing under `sync` (or a new key)."""
    return Author(SigningKey.generate(), sync if sync is not None else SyncKey.generate())


def home_and_author(root: Path, name: str) -> tuple[Home, Author]:
    """A new home under `root` (its identity made) and the author it writes as."""
    home = Home(root)
    home.root.mkdir()
    identity = home.create(name, SyncKey.generate())
    assert identity.sync is not None
    return home, Author(identity.signing, identity.sync)


def signed_chain(author: Author, tag: str, count: int, start: Head | None = None) -> list[Record]:
    """What `count` single-record appends write (every record signed, so any cut of
    the chain is a valid batch), without a store."""
    head = start or Head(0)
    records: list[Record] = []
    for n in range(count):
        (record,) = author.write(tag, head, [1_000 + head.next_idx], [b"r%d" % n])
        records.append(record)
        head = Head(record.idx + 1, record_hash(record))
    return records


async def open_store(path: Path, *authors: Author, **options: int) -> Store:
    store = await Store.open(path, **options)
    for author in authors:
        await store.add_host(author.signing.public_key)
    return store


@pytest.fixture
def author() -> Author:
    return new_author()


@pytest.fixture
async def store(tmp_path: Path, author: Author) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "a.db", author)
    yield opened
    await opened.close()


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Store]:
    """A second store that knows no host yet (as a peer receiving records)."""
    opened = await open_store(tmp_path / "b.db")
    yield opened
    await opened.close()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    """In-process nodes serving on loopback (`tests.nodes`), all closed afterwards."""
    from tests.nodes import Nodes

    async with Nodes(tmp_path) as made:
        yield made


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    """`peer serve` daemons for homes under tmp_path (`tests.daemons`), all stopped
    afterwards."""
    from tests.daemons import Daemons

    made = Daemons(tmp_path)
    try:
        yield made
    finally:
        await made.close()


# -- a LAN of two network namespaces (discovery tests) ------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def lan() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: 198.18.0.1 + 2001:db8::1 in one,
    198.18.0.2 + 2001:db8::2 in the other. Removed afterwards, whatever happens."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the namespace test needs Linux, root and the `ip` command")
    a, b = f"peer-disc-a-{os.getpid()}", f"peer-disc-b-{os.getpid()}"
    try:
        _ip("netns", "add", a)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.decode().strip()}")
    try:
        _ip("netns", "add", b)
        _ip("-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", b)
        for ns, n in ((a, 1), (b, 2)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"198.18.0.{n}/24", "dev", "veth0")
            _ip("-n", ns, "addr", "add", f"2001:db8::{n}/64", "dev", "veth0", "nodad")
            _ip("-n", ns, "link", "set", "veth0", "multicast", "on", "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)
