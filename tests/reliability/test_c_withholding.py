"""C7: a relay that withholds the tail of A's series cannot keep B behind once an honest
path exists.

A–R–B: R (a test double speaking our protocol, on a real grpc.aio server) holds all of
A's records but advertises and serves only a prefix. B syncs with R by itself, through
a real `Mesh` (rounds every interval, as the daemon runs them). Later an honest C
appears: C is pinned by B and syncs with A (both real servers on 127.0.0.1:0). B must
converge to A's full series. Indexes are not signed, so B has no way to prove that R's
head is stale; the test also asks whether B notices a relay that advertises the full
head and then serves less.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from peer import codec
from peer.client import PeerClient
from peer.codec import RemoteIndex
from peer.crypto import record_hash
from peer.errors import PeerError
from peer.mesh import Mesh
from peer.records import Head, Record
from peer.settings import Schedule
from peer.store import TrustedPeer
from peer.sync import sync_with
from peer.v1 import sync_pb2 as pb
from tests.nodes import Node, Nodes, next_idx
from tests.nodes import eventually as poll
from tests.reliability.conftest import Report, Tier
from tests.reliability.rel_c import FakePeer

ROUND_S = 0.3
WITHHELD_ROUNDS = 3


def withholding_relay(
    chain: list[Record], keys: dict[bytes, bytes], served: int, advertised: int
) -> FakePeer:
    """Advertises A's log at `advertised` records and serves at most `served` of them."""
    log = chain[0].log

    async def get_index(request: bytes, context: Any) -> bytes:
        head = Head(advertised, record_hash(chain[advertised - 1]))
        index = RemoteIndex("relay", codec.PROTOCOL_VERSION, {log: head}, keys)
        return codec.encode_index(index)

    async def pull(request: bytes, context: Any) -> AsyncIterator[bytes]:
        ranges, max_batch, _ = codec.decode_pull_request(request)
        size = max_batch or 1000
        for wanted in ranges:
            if wanted.log != log:
                continue
            held = chain[wanted.start : min(wanted.end, served)]
            for at in range(0, len(held), size):
                yield codec.encode_batch(pb.PullRecordsResponse, held[at : at + size], keys)

    return FakePeer(get_index, pull)


async def _mesh_of(node: Node, peers: dict[bytes, str]) -> Mesh:
    for node_id, address in peers.items():
        await node.store.peers.add(TrustedPeer(node_id, address[-5:], address))

    async def connect(peer: TrustedPeer, address: str) -> PeerClient:
        return PeerClient(address, timeout=10)  # plaintext loopback: trust is not the point

    # rounds only (the test double serves no Subscribe)
    schedule = Schedule(
        interval=ROUND_S, jitter=0.1, backoff_initial=0.2, backoff_max=1.0, live=False
    )
    mesh = Mesh(node.store, schedule, connect)
    await mesh.start()
    return mesh


async def _short_served(
    nodes: Nodes, chain: list[Record], keys: dict[bytes, bytes], prefix: int
) -> tuple[bool, str]:
    """Does a node notice a relay that advertises the full head and serves less?"""
    d = await nodes.node("d", serve=False)
    liar = withholding_relay(chain, keys, served=prefix, advertised=len(chain))
    await liar.start()
    try:
        async with PeerClient(liar.target, timeout=10) as session:
            try:
                summary = await asyncio.wait_for(sync_with(d.store, session), 30)
            except PeerError as exc:
                return True, f"yes ({type(exc).__name__}: {exc})"
            return False, f"no (pulled {summary.pulled} of {len(chain)} advertised, no error)"
    finally:
        await liar.stop()


async def test_c7_relay_withholding_bounded(tmp_path: Path, tier: Tier, report: Report) -> None:
    total = tier.pick(2_000, 10_000)
    withheld_rounds = tier.pick(WITHHELD_ROUNDS, 20)
    prefix = total // 2
    async with Nodes(tmp_path) as nodes:
        a = await nodes.node("a")
        for at in range(0, total, 500):
            await a.store.append(a.author, "t", [b"a%d" % n for n in range(at, at + 500)])
        log = a.log("t")
        chain = await a.store.read_range(a.host, "t", 0, total)
        keys = {a.host: a.author.signing.public_key}
        b = await nodes.node("b", serve=False)
        relay = withholding_relay(chain, keys, served=prefix, advertised=prefix)
        await relay.start()
        meshes: list[Mesh] = []
        try:
            r_id, c_id, a_id = os.urandom(32), os.urandom(32), os.urandom(32)
            b_mesh = await _mesh_of(b, {r_id: relay.target})
            meshes.append(b_mesh)
            r_link = b_mesh.links[r_id]

            async def rounds_done(n: int) -> bool:
                return relay.calls.get("GetIndex", 0) >= n and r_link.state.last_sync is not None

            await poll(lambda: rounds_done(withheld_rounds), "B's rounds with R", 30)
            held_while_withheld = await next_idx(b.store, log)
            r_error = r_link.state.last_error
            # The honest path appears: C, pinned by B, syncing with A.
            c = await nodes.node("c")
            appeared = time.monotonic()
            meshes.append(await _mesh_of(c, {a_id: a.target}))
            await b.store.peers.add(TrustedPeer(c_id, "c", c.target))

            async def converged() -> bool:
                return await next_idx(b.store, log) >= total

            await poll(converged, "B to converge through C", tier.pick(30, 120))
            converged_s = time.monotonic() - appeared
            whole = await b.store.read_range(a.host, "t", 0, total + 1) == chain
            r_error_after = r_link.state.last_error
        finally:
            for mesh in meshes:
                await mesh.close()
            await relay.stop()

        short_detected, short_served = await _short_served(nodes, chain, keys, prefix)
    print(f"R link errors: {r_error!r}, after: {r_error_after!r}; short-served: {short_served}")
    passed = held_while_withheld == prefix and whole and short_detected
    report(
        "R withholds the tail of A's series (advertises and serves a prefix); an honest "
        "path A-C-B appears later: B converges once it exists; a relay that serves less "
        "than it advertised is an error",
        f"{total:,} records, R served {prefix:,} over {withheld_rounds} rounds (B held "
        f"{held_while_withheld:,}); converged {converged_s:.1f} s after the honest path "
        f"(rounds every {ROUND_S} s); staleness detected: no (heads are unsigned); a relay "
        f"advertising the full head and serving less detected: {'yes' if short_detected else 'no'}",
        passed,
        records=total,
        converged_s=round(converged_s, 2),
        held_while_withheld=held_while_withheld,
        short_served_detected=short_detected,
    )
    assert held_while_withheld == prefix
    assert whole
    assert short_detected, short_served
