"""The Python API for programs (`peer.api`) against a real `peer serve` (issue 5): a
0600 Unix socket in the home, append, get_index, subscribe resumable from an index and
filtered by tag and host, records it cannot read marked as such, and a clear error when
no daemon runs."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from peer import api
from peer.errors import PeerError, UsageError
from peer.records import LogKey
from peer.watch import doorbell_path
from tests.daemons import (
    Daemons,
    Subscriber,
    aok,
    mesh,
    texts,
)


async def test_the_socket_is_the_owners_only(daemons: Daemons) -> None:
    (a,) = daemons.homes("a")
    daemons.start(a)
    socket = Path(json.loads((a.root / "serve.json").read_text())["socket"])
    for path in (socket, doorbell_path(socket)):  # the local API, and the CLI's doorbell
        mode = path.stat().st_mode
        print(f"{path}: {stat.filemode(mode)}")
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert path.stat().st_uid == os.getuid()
    if socket.parent != a.root.resolve():  # a long home path: a private directory instead
        assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700


async def test_append_get_index_and_subscribe(daemons: Daemons) -> None:
    (a,) = daemons.homes("a")
    daemons.start(a)
    host = bytes.fromhex(a.host)
    notes, other = LogKey(host, "notes"), LogKey(host, "other")
    async with await api.connect(a.root) as program:
        first = await program.append("notes", "text, as UTF-8")
        assert (first.host, first.tag, first.first_idx, first.count) == (host, "notes", 0, 1)
        more = await program.append("notes", b"\x00\xffbytes", "mixed")  # one transaction
        assert (more.first_idx, more.count, len(more.timestamps)) == (1, 2, 2)
        assert list(more.timestamps) == sorted(more.timestamps)
        await program.append("other", "elsewhere")
        assert await program.get_index() == {notes: 3, other: 1}
        with pytest.raises(UsageError):
            await program.append("notes")

        subscriber = Subscriber(program.subscribe(tags=["notes"])).start()
        try:
            got = [arrival.message for arrival in await subscriber.take(3)]
            assert [(m.log, m.idx, m.data) for m in got] == [
                (notes, 0, b"text, as UTF-8"),
                (notes, 1, b"\x00\xffbytes"),
                (notes, 2, b"mixed"),
            ]
            assert all(m.error is None for m in got)
            assert got[0].text == "text, as UTF-8"
            assert [m.timestamp for m in got[1:]] == list(more.timestamps)
            assert got[0].id != got[1].id
            await program.append("other", "not for this subscriber")
            await aok(a.root, "append", "--tag", "notes", "from the CLI")  # another process
            live = await subscriber.next()
            assert (live.message.idx, live.message.text) == (3, "from the CLI")
            assert not await subscriber.quiet(0.3)  # nothing of "other", nothing twice
        finally:
            await subscriber.stop()
    binary = base64.b64encode(b"\x00\xffbytes").decode()
    assert texts(a.root, "notes") == ["text, as UTF-8", f"b64:{binary}", "mixed", "from the CLI"]


async def test_subscribe_resumes_from_an_index_without_gaps_or_duplicates(
    daemons: Daemons,
) -> None:
    (a,) = daemons.homes("a")
    daemons.start(a)
    program = await daemons.api(a)
    await program.append("notes", *[f"n{n}" for n in range(5)])
    log = LogKey(bytes.fromhex(a.host), "notes")

    subscriber = Subscriber(program.subscribe()).start()
    seen = [arrival.message for arrival in await subscriber.take(3)]
    await subscriber.stop()  # a program stops after 3 records...
    since = {log: seen[-1].idx + 1}  # ...keeping where it was
    await program.append("notes", "n5", "n6")  # meanwhile
    await aok(a.root, "append", "--tag", "notes", "n7")

    resumed = Subscriber(program.subscribe(since=since)).start()
    try:
        rest = [arrival.message for arrival in await resumed.take(5)]
        await program.append("notes", "n8")  # and then live
        rest.append((await resumed.next()).message)
        assert not await resumed.quiet(0.3)
    finally:
        await resumed.stop()
    every = seen + rest
    print(f"resumed at idx {since[log]}: {[m.text for m in rest]}")
    assert [m.idx for m in every] == list(range(9))
    assert [m.text for m in every] == [f"n{n}" for n in range(9)]

    async with await api.connect(a.root) as again:  # a past-the-end index: only new ones
        late = Subscriber(again.subscribe(since={log: 9})).start()
        try:
            assert not await late.quiet(0.3)
            await again.append("notes", "n9")
            assert (await late.next()).message.text == "n9"
        finally:
            await late.stop()


async def test_subscribe_filters_by_tag_and_by_host(daemons: Daemons) -> None:
    a, b = daemons.homes("a", "b")
    mesh([a, b])
    daemons.start(a, b)
    for home in (a, b):
        program = await daemons.api(home)
        await program.append("notes", f"{home.name}: note")
        await program.append("todo", f"{home.name}: todo")
    both = {(h.host, t): 1 for h in (a, b) for t in ("notes", "todo")}
    await daemons.converged([a, b], both, timeout=15)
    program = await daemons.api(a)

    async def held(count: int, tags: tuple[str, ...] = (), hosts: tuple[str, ...] = ()) -> set[str]:
        stream = program.subscribe(tags, [bytes.fromhex(h) for h in hosts])
        subscriber = Subscriber(stream).start()
        try:
            got = await subscriber.take(count, timeout=5)
            assert not await subscriber.quiet(0.2)
        finally:
            await subscriber.stop()
        return {str(arrival.message.text) for arrival in got}

    assert await held(2, tags=("todo",)) == {"a: todo", "b: todo"}
    assert await held(2, hosts=(b.host,)) == {"b: note", "b: todo"}
    assert await held(1, tags=("notes",), hosts=(a.host,)) == {"a: note"}
    assert await held(0, tags=("nothing",)) == set()
    assert len(await held(4)) == 4


async def test_records_the_home_cannot_read_carry_an_error(daemons: Daemons) -> None:
    a, r = daemons.homes("a", relays=["r"])
    (x,) = daemons.homes("x")  # another sync key
    mesh([a, r, x])
    daemons.start(a, r, x)
    await (await daemons.api(a)).append("notes", "secret")
    await (await daemons.api(x)).append("notes", "under another key")
    held = {(a.host, "notes"): 1, (x.host, "notes"): 1}
    await daemons.converged([a, r, x], held, timeout=15)

    relay = await daemons.api(r)
    subscriber = Subscriber(relay.subscribe()).start()
    try:
        got = [arrival.message for arrival in await subscriber.take(2)]
    finally:
        await subscriber.stop()
    print(f"on the relay: {[(m.data, m.error) for m in got]}")
    assert all(m.data is None and m.text is None for m in got)
    assert all(m.error and "no sync key" in m.error for m in got)
    with pytest.raises(PeerError, match="no sync key"):
        await relay.append("notes", "a relay writes nothing")

    subscriber = Subscriber((await daemons.api(a)).subscribe()).start()
    try:
        by_host = {m.host.hex(): m for m in [x.message for x in await subscriber.take(2)]}
    finally:
        await subscriber.stop()
    print(f"on a, x's record: {by_host[x.host].error}")
    assert by_host[a.host].text == "secret" and by_host[a.host].error is None
    assert by_host[x.host].data is None and by_host[x.host].error


async def test_connect_without_a_daemon_says_to_start_one(
    daemons: Daemons, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a,) = daemons.homes("a")
    with pytest.raises(UsageError, match=r"no `peer serve` runs for .*start it first"):
        await api.connect(a.root)
    (daemon,) = daemons.start(a)
    monkeypatch.setenv("PEER_HOME", str(a.root))
    async with await api.connect() as program:  # $PEER_HOME
        assert (await program.status())["daemon"]["pid"] == daemon.pid
    daemon.kill()  # no clean exit: serve.json stays behind, naming a dead process
    assert (a.root / "serve.json").exists()
    with pytest.raises(UsageError, match="no `peer serve` runs"):
        await api.connect(a.root)
    (again,) = daemons.start(a)  # and a restarted daemon is found again
    async with await api.connect(a.root) as program:
        assert (await program.status())["daemon"]["pid"] == again.pid
