"""One Discovery in its own process, for the network-namespace test (`ip netns exec`).

    python discovery_node.py NODE_ID_HEX PORT NAME INTERFACE|all SECONDS

Prints one JSON line per `on_found` call ({"node_id": hex, "address", "name"}) and runs
until its stdin closes or SECONDS pass, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import sys

from peer.discovery import Discovery, Found


def report(found: Found) -> None:
    line = {"node_id": found.node_id.hex(), "address": found.address, "name": found.name}
    print(json.dumps(line), flush=True)


async def main(node_id: str, port: str, name: str, interface: str, seconds: str) -> None:
    interfaces = None if interface == "all" else [interface]
    async with Discovery(bytes.fromhex(node_id), int(port), name, interfaces, report):
        print(json.dumps({"started": True}), flush=True)
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await asyncio.wait([stdin_closed], timeout=float(seconds))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
