"""A relay (a node without the sync key) is refused in one sentence, whatever it tries,
and reads records it holds as "cannot be read", saying why."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from peer.errors import UsageError
from peer.home import Home
from peer.node import Node
from peer.relay import NO_SYNC_KEY
from peer.store import HistoryEntry
from tests.conftest import new_author, signed_chain


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Node]:
    node = await Node.init(Home(tmp_path / "relay"), "relay", relay=True)
    yield node
    await node.close()


async def refusal(attempt: Callable[[], Awaitable[object]]) -> str:
    with pytest.raises(UsageError) as caught:
        await attempt()
    return str(caught.value)


async def test_every_write_on_a_relay_is_refused_the_same_way(relay: Node) -> None:
    entry = HistoryEntry("e1", "ls", "/", 0, 0, 1, "host", "s1")
    refusals = {
        await refusal(lambda: relay.append("notes", [b"x"])),
        await refusal(lambda: relay.kv.set("k", "v")),
        await refusal(lambda: relay.history.add(entry)),
    }
    assert refusals == {f"{NO_SYNC_KEY}, so it cannot write records"}


async def test_a_relay_has_no_views(relay: Node) -> None:
    refusals = {
        await refusal(relay.views.rebuild),
        await refusal(lambda: relay.views.catch_up(required=True)),
    }
    assert refusals == {f"{NO_SYNC_KEY}, so it has no views"}
    assert (await relay.views.catch_up()).applied == 0  # not required: nothing to do


async def test_a_relay_holds_records_it_cannot_read(relay: Node) -> None:
    author = new_author()
    chain = signed_chain(author, "notes", 3)
    await relay.store.insert_batch(chain, {author.host: author.signing.public_key})
    entries = await relay.tail()
    assert [e.record for e in entries] == chain
    assert {(e.data, e.error) for e in entries} == {(None, NO_SYNC_KEY)}
    report = await relay.verify()  # the chains verify; there is nothing to decrypt
    assert (report.ok, report.records, report.decrypted) == (True, 3, 0)
