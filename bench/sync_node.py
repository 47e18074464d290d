"""Node A for bench_sync.py: serves one store over gRPC on loopback, in its own process.

Usage: `python bench/sync_node.py DB [--cpu N] [--tls DIR]`. Opens the store at DB, serves
it with `peer.service.start_server(store, "A", "127.0.0.1:0")` (mutual TLS with DIR/a.key,
DIR/a.crt, pinning DIR/b.crt, when --tls is given), prints `ready PORT` on stdout, then
serves until its stdin reaches end of file: the parent closes the pipe to stop it, and a
parent that dies stops it too, so it never outlives the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from peer.identity import node_id_of
from peer.service import start_server
from peer.store import Store, TrustedPeer
from peer.trust import Credentials

NODE_ID = "A"
LISTEN = "127.0.0.1:0"


async def serve(db: Path, tls: Path | None) -> None:
    store = await Store.open(db)
    try:
        credentials = None
        if tls is not None:
            credentials = Credentials((tls / "a.key").read_bytes(), (tls / "a.crt").read_bytes())
            b_cert = (tls / "b.crt").read_bytes()
            await store.peers.add(TrustedPeer(node_id_of(b_cert), "B", "", b_cert))
        running = await start_server(store, NODE_ID, LISTEN, credentials=credentials)
        try:
            print(f"ready {running.port}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
        finally:
            await running.stop(grace=0.5)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("db", type=Path, help="the store to serve (must exist)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--tls", type=Path, default=None, help="serve with mutual TLS")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.error(f"no store at {args.db}")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.db, args.tls))


if __name__ == "__main__":
    main()
