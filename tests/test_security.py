"""Security (SPEC §5): mutual TLS between pinned nodes, node ids, and the blind relay.

Real grpc.aio servers on 127.0.0.1:0 with real stores under tmp_path, and real `peer`
processes. Each test prints its figures (run with `-s` to see them). Every wait is
bounded; randomness comes from `rng` (its seed is printed) or Hypothesis (seed in the
pytest header).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import assume, given
from hypothesis import strategies as st

from peer import service
from peer.client import ClientTls, PeerClient
from peer.crypto import Author, SyncKey, generate_tls_identity
from peer.errors import PeerError, PeerRefused, UsageError
from peer.identity import ALPHABET, format_node_id, node_id_of, parse_node_id
from peer.service import RunningServer, start_server
from peer.store import Store, TrustedPeer
from peer.sync import sync_with
from peer.trust import Credentials
from tests.cli import Server
from tests.conftest import new_author
from tests.nodes import assert_converged
from tests.tls import (
    ok,
    ok_json,
    peer,
)

SESSION_TIMEOUT_S = 20.0
FOLLOW_LIMIT_S = 5.0  # the server polls the trust list every 0.5 s; "within ~1 s" + slack
POLL_S = 0.05
CALL_S = 5.0
FRESH_CERTIFICATES = 50
STORE_READS_AND_WRITES = (
    "index",
    "frozen_logs",
    "host_keys",
    "read_range",
    "record_sizes",
    "insert_batch",
    "prepare",
    "apply",
)


def new_credentials() -> Credentials:
    return Credentials(*generate_tls_identity())


def node_id(credentials: Credentials) -> bytes:
    return node_id_of(credentials.certificate)


@dataclass
class TlsNode:
    """One in-process node: TLS identity, author, store, and its mTLS server."""

    name: str
    credentials: Credentials
    author: Author
    store: Store
    running: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def node_id(self) -> bytes:
        return node_id(self.credentials)

    async def pin(self, other: Credentials) -> None:
        await self.store.peers.add(
            TrustedPeer(node_id(other), name="pinned", certificate=other.certificate)
        )

    def client_of(self, server: TlsNode, **options: float) -> PeerClient:
        """A client presenting this node's certificate, pinning `server`'s."""
        tls = ClientTls(self.credentials, server.credentials.certificate)
        return PeerClient(server.target, tls=tls, **options)


class TlsNodes:
    """Makes in-process mTLS nodes under one directory; closes them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[TlsNode] = []

    async def node(
        self,
        name: str,
        *,
        sync: SyncKey | None = None,
        pins: tuple[Credentials, ...] = (),
        prepare: Callable[[Store], None] | None = None,
    ) -> TlsNode:
        credentials = new_credentials()
        author = new_author(sync)
        store = await Store.open(self.root / f"{name}.db")
        await store.add_host(author.signing.public_key)
        for other in pins:
            await store.peers.add(
                TrustedPeer(node_id(other), name="pinned", certificate=other.certificate)
            )
        if prepare is not None:
            prepare(store)
        shown = format_node_id(node_id(credentials))
        try:
            running = await start_server(store, shown, "127.0.0.1:0", credentials=credentials)
        except BaseException:
            await store.close()
            raise
        made = TlsNode(name, credentials, author, store, running)
        self.made.append(made)
        return made

    async def close(self) -> None:
        for made in reversed(self.made):
            await made.running.stop(grace=0.2)
            await made.store.close()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[TlsNodes]:
    made = TlsNodes(tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def within(seconds: float, attempt: Callable[[], Awaitable[bool]], what: str) -> float:
    """Poll `attempt` until it returns True; the seconds it took (a bounded loop)."""
    start = time.monotonic()
    for _ in range(int(seconds / POLL_S) + 1):
        if await attempt():
            return time.monotonic() - start
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{what}: not within {seconds} s")


async def try_sync(client: TlsNode, server: TlsNode) -> PeerError | None:
    """One bounded session from `client` to `server`: None if it worked, else the error."""
    async with client.client_of(server) as session:
        try:
            await asyncio.wait_for(sync_with(client.store, session), SESSION_TIMEOUT_S)
        except PeerError as exc:
            return exc
    return None


# -- 1. refusals ---------------------------------------------------------------------------


class Counting:
    """Counts handler invocations (by RPC), app-level admissions, and store touches."""

    def __init__(self) -> None:
        self.handlers: Counter[str] = Counter()
        self.admitted = 0
        self.refused_by_app = 0
        self.store: Counter[str] = Counter()

    def snapshot(self) -> tuple[int, int, int, int]:
        return (
            sum(self.handlers.values()),
            self.admitted,
            self.refused_by_app,
            sum(self.store.values()),
        )

    def patch_servicer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Counting wrappers on the class, before any server is started."""
        cls = service.SyncServicer
        get_index, pull, push, subscribe = (
            cls.get_index,
            cls.pull_records,
            cls.push_records,
            cls.subscribe,
        )
        admit = cls._admit

        async def counted_get_index(self: Any, request: bytes, context: Any) -> bytes:
            counts.handlers["GetIndex"] += 1
            return await get_index(self, request, context)

        async def counted_pull(self: Any, request: bytes, context: Any) -> AsyncIterator[bytes]:
            counts.handlers["PullRecords"] += 1
            async for item in pull(self, request, context):
                yield item

        async def counted_push(self: Any, requests: Any, context: Any) -> bytes:
            counts.handlers["PushRecords"] += 1
            return await push(self, requests, context)

        async def counted_subscribe(
            self: Any, request: bytes, context: Any
        ) -> AsyncIterator[bytes]:
            counts.handlers["Subscribe"] += 1
            async for item in subscribe(self, request, context):
                yield item

        def counted_admit(self: Any, context: Any) -> str:
            try:
                caller = admit(self, context)
            except PeerRefused:
                counts.refused_by_app += 1
                raise
            counts.admitted += 1
            return caller

        counts = self
        monkeypatch.setattr(cls, "get_index", counted_get_index)
        monkeypatch.setattr(cls, "pull_records", counted_pull)
        monkeypatch.setattr(cls, "push_records", counted_push)
        monkeypatch.setattr(cls, "subscribe", counted_subscribe)
        monkeypatch.setattr(cls, "_admit", counted_admit)

    def wrap_store(self, store: Store) -> None:
        """Count every read and write a handler could make (instance attributes)."""
        for name in STORE_READS_AND_WRITES:
            method = getattr(store, name)
            setattr(store, name, self._counted(name, method))

    def _counted(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.store[name] += 1
            return method(*args, **kwargs)

        return counted


# -- 2. pinning both ways, live trust changes -----------------------------------------------


async def test_two_nodes_that_pin_each_other_sync_both_ways(nodes: TlsNodes) -> None:
    key = SyncKey.generate()
    a = await nodes.node("a", sync=key)
    b = await nodes.node("b", sync=key, pins=(a.credentials,))
    await a.pin(b.credentials)
    await a.store.append(a.author, "notes", [b"a%d" % n for n in range(300)])
    await b.store.append(b.author, "notes", [b"b%d" % n for n in range(200)])
    async with a.client_of(b) as session:
        summary = await asyncio.wait_for(sync_with(a.store, session), SESSION_TIMEOUT_S)
    assert (summary.pulled, summary.pushed) == (200, 300)
    assert summary.node_id == format_node_id(b.node_id)
    logs = await assert_converged(a.store, b.store)
    print(f"mutually pinned: pulled {summary.pulled}, pushed {summary.pushed}, {len(logs)} logs")

    # The client pins too: with another certificate as b's pin, a refuses b's server.
    tls = ClientTls(a.credentials, new_credentials().certificate)
    async with PeerClient(b.target, tls=tls, timeout=CALL_S) as session:
        with pytest.raises(PeerRefused, match="peer peers add"):
            await session.get_index()


async def test_one_sided_pinning_syncs_nothing_until_the_other_side_adds(
    nodes: TlsNodes,
) -> None:
    key = SyncKey.generate()
    a = await nodes.node("a", sync=key)
    b = await nodes.node("b", sync=key)  # b does not pin a
    await a.pin(b.credentials)
    await a.store.append(a.author, "notes", [b"a1", b"a2"])
    await b.store.append(b.author, "notes", [b"b1"])
    before = (await a.store.index(), await b.store.index())

    refused = await try_sync(a, b)
    assert isinstance(refused, PeerRefused), refused
    assert "peer peers add" in str(refused)
    assert (await a.store.index(), await b.store.index()) == before
    print(f"one-sided: {type(refused).__name__}: {refused}")

    added = time.monotonic()
    await b.pin(a.credentials)  # while b's server runs: no restart

    async def synced() -> bool:
        return await try_sync(a, b) is None

    took = await within(FOLLOW_LIMIT_S, synced, "sync after b pins a")
    await assert_converged(a.store, b.store)
    print(f"after the other side added: synced {time.monotonic() - added:.2f} s later ({took:.2f})")
    assert took < 3.0


async def refuses(client: TlsNode, server: TlsNode) -> bool:
    async with client.client_of(server, timeout=CALL_S) as session:
        try:
            await session.get_index()
        except PeerRefused:
            return True
    return False


async def test_removing_a_peer_refuses_its_new_calls_without_a_restart(nodes: TlsNodes) -> None:
    a = await nodes.node("a")
    b = await nodes.node("b", pins=(a.credentials,))
    await a.pin(b.credentials)
    old = a.client_of(b, timeout=CALL_S)  # a connection opened while trusted
    try:
        await old.get_index()
        removed = time.monotonic()
        await b.store.peers.remove(a.node_id)
        took = await within(FOLLOW_LIMIT_S, lambda: refuses(a, b), "new connections refused")
        with pytest.raises(PeerRefused) as on_old:  # the open connection: the app check
            await old.get_index()
        assert "peer peers add" in str(on_old.value)
    finally:
        await old.close()
    print(
        f"removed peer: new connections refused after {took:.2f} s; "
        f"calls on its open connection refused after {time.monotonic() - removed:.2f} s"
    )


async def test_removing_a_peer_cuts_its_open_subscribe_stream_within_seconds(
    nodes: TlsNodes,
) -> None:
    a = await nodes.node("a")
    b = await nodes.node("b", pins=(a.credentials,))
    await a.pin(b.credentials)
    await b.store.append(b.author, "notes", [b"x"])
    async with a.client_of(b) as session:
        stream = session.subscribe().__aiter__()
        records, _ = await asyncio.wait_for(stream.__anext__(), CALL_S)
        assert len(records) == 1  # subscribed: the catch-up arrived
        removed = time.monotonic()
        await b.store.peers.remove(a.node_id)
        try:
            extra = await asyncio.wait_for(stream.__anext__(), FOLLOW_LIMIT_S)
        except PeerError as exc:
            print(f"subscribe cut after {time.monotonic() - removed:.2f} s: {exc}")
        except TimeoutError:
            raise AssertionError(
                f"the removed peer's Subscribe stream is still open after {FOLLOW_LIMIT_S} s"
            ) from None
        else:
            raise AssertionError(f"the removed peer still received {extra}")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


# -- 3. node ids ------------------------------------------------------------------------------


def test_a_node_id_is_the_sha256_of_the_certificate_der() -> None:
    credentials = new_credentials()
    der = x509.load_pem_x509_certificate(credentials.certificate).public_bytes(Encoding.DER)
    assert node_id(credentials) == hashlib.sha256(der).digest()
    shown = format_node_id(node_id(credentials))
    assert len(shown) == 63 and [len(g) for g in shown.split("-")] == [7] * 8


@given(st.binary(min_size=32, max_size=32))
def test_node_ids_round_trip_in_any_case_with_or_without_dashes(raw: bytes) -> None:
    shown = format_node_id(raw)
    assert parse_node_id(shown) == raw
    assert parse_node_id(shown.lower()) == raw
    assert parse_node_id(shown.replace("-", "")) == raw
    assert parse_node_id(shown.replace("-", " ").swapcase()) == raw
    assert parse_node_id(f"  {shown.lower().replace('-', '')}\n") == raw


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=55),
    st.sampled_from(ALPHABET),
)
def test_a_single_letter_typo_in_a_node_id_is_refused(
    raw: bytes, position: int, letter: str
) -> None:
    letters = format_node_id(raw).replace("-", "")
    assume(letters[position] != letter)
    typo = letters[:position] + letter + letters[position + 1 :]
    with pytest.raises(UsageError, match=r"typo|not a node id"):
        parse_node_id(typo)


def test_every_single_letter_typo_of_one_node_id_is_refused(rng: random.Random) -> None:
    raw = rng.randbytes(32)
    letters = format_node_id(raw).replace("-", "")
    refused = total = 0
    for position, original in enumerate(letters):
        for letter in ALPHABET.replace(original, ""):
            total += 1
            try:
                parse_node_id(letters[:position] + letter + letters[position + 1 :])
            except UsageError:
                refused += 1
    print(f"refused {refused}/{total} single-letter typos of one node id")
    assert refused == total == 56 * 31


def test_peers_add_with_the_wrong_id_for_an_address_is_refused(tmp_path: Path) -> None:
    x, y = tmp_path / "x", tmp_path / "y"
    ok(x, "init")
    ok(y, "init")
    wrong = format_node_id(node_id(new_credentials()))
    server = Server(x)
    try:
        done = peer(y, "peers", "add", wrong, server.address, "--name", "x")
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert server.node_id in done.stderr and wrong in done.stderr
        assert "check the address and the id" in done.stderr
        print(f"wrong id refused: {done.stderr.strip()}")
        right = ok_json(y, "peers", "add", server.node_id, server.address, "--name", "x")
        assert right["certificate"] is True
    finally:
        assert server.stop() == 0


def test_a_refused_peers_add_pins_nothing(tmp_path: Path) -> None:
    x, y = tmp_path / "x", tmp_path / "y"
    ok(x, "init")
    ok(y, "init")
    wrong = format_node_id(node_id(new_credentials()))
    server = Server(x)
    try:
        assert peer(y, "peers", "add", wrong, server.address).returncode == 2
        assert ok_json(y, "peers", "list")["peers"] == []
    finally:
        assert server.stop() == 0


# -- 4. the blind relay ------------------------------------------------------------------------

RECORDS = 1000


def scan_home(home: Path, needles: dict[str, bytes]) -> tuple[list[str], int, Counter[str]]:
    """Read every file under `home`; (file names, bytes read, needle kinds found)."""
    files: list[str] = []
    size = 0
    found: Counter[str] = Counter()
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        files.append(str(path.relative_to(home)))
        size += len(data)
        for name, needle in needles.items():
            if needle in data:
                found[name.split(":")[0]] += 1
    return files, size, found


def sync_json(home: Path, target: str) -> dict[str, Any]:
    done = peer(home, "sync", target, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)["peers"]
    assert result["error"] is None, result
    return dict(result)


def needles(canaries: list[bytes], host_hex: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for n, canary in enumerate(canaries):
        found[f"raw:{n}"] = canary
        found[f"hex:{n}"] = canary.hex().encode()
        found[f"hex:{n}:upper"] = canary.hex().upper().encode()
    found["host"] = bytes.fromhex(host_hex)
    found["tag"] = b"secrets"
    return found
