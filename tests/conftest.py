"""Shared fixtures: real stores on real SQLite files under tmp_path, and seeded randomness.

Every random test prints its seed: Hypothesis runs with a seed chosen here (shown in
the pytest header; rerun with `--hypothesis-seed=N`), and the `rng` fixture prints
its own seed, which pytest shows when the test fails.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from peer.crypto import Author, SigningKey, SyncKey, record_hash
from peer.records import Head, Record
from peer.store import Store

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
