"""`peer ARGS...` (for bench_mesh.py: `peer serve`) with the records that cross its
Remote boundary counted, as the simulation counts them (tests/sim_count.py).

    python bench/counted_daemon.py COUNTS.json --home HOME serve --listen ADDRESS --json

Every `PeerClient` method named in `FLOWS` is wrapped: the records its streams yield
(pull, subscribe) are counted as received from that peer, the records it pushes as sent
to it, by (direction, peer address, host, tag). Every link of the daemon is a
PeerClient, so these are all the records the daemon moves. On SIGUSR1, and at exit, the
counts are written to COUNTS.json (whole, by a rename), with a sequence number.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer.cli.main import main as cli_main
from peer.client import PeerClient
from peer.records import Record
from peer.segment import Segments
from tests.sim_count import FLOWS, Counting, Records, flowing, unlisted

Key = tuple[str, str, str, str]  # direction, peer address, host (hex), tag
COUNTS: Counter[Key] = Counter()


def per_log_counts(batch: Sequence[Record]) -> Counter[tuple[bytes, str]]:
    """Records per (host, tag): from segment headers when the batch is segments (as a
    daemon receives it: decoding it here would cost more CPU than storing it)."""
    if isinstance(batch, Segments):
        found: Counter[tuple[bytes, str]] = Counter()
        for part in batch.parts:
            found[part.host, part.tag] += part.count
        return found
    return Counter((r.host, r.tag) for r in batch)


def counting(direction: str, target: str) -> Counting:
    async def count(items: AsyncIterator[Any], records: Records) -> AsyncIterator[Any]:
        async for item in items:
            per_log = per_log_counts(records(item))
            for (host, tag), n in per_log.items():
                COUNTS[direction, target, host.hex(), tag] += n
            yield item

    return count


def instrument() -> None:
    """Count through every PeerClient method that FLOWS lists."""
    for name, flow in FLOWS.items():
        original = getattr(PeerClient, name)

        def method(
            self: PeerClient,
            *args: Any,
            _original: Any = original,
            _flow: Any = flow,
            **kwargs: Any,
        ) -> Any:
            call = flowing(
                functools.partial(_original, self),
                _flow,
                counting("sent", self.target),
                counting("received", self.target),
            )
            return call(*args, **kwargs)

        setattr(PeerClient, name, method)


class Dump:
    """Writes COUNTS to `path`, numbered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0

    def __call__(self, *_: object) -> None:
        self.seq += 1
        entries = [[*key, n] for key, n in COUNTS.items()]
        unknown = sorted(unlisted())
        text = json.dumps({"seq": self.seq, "counts": entries, "uncounted": unknown})
        part = self.path.with_suffix(".part")
        part.write_text(text)
        os.replace(part, self.path)


def main() -> int:
    dump = Dump(Path(sys.argv[1]))
    instrument()
    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)
    dump()  # seq 1: the file exists once the daemon starts
    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
