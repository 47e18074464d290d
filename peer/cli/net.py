"""The CLI's network commands: serve, sync, the trust list (peers) and pairing.

Same rules as `peer.cli`: build objects, call one library function, print.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from peer.cli import render
from peer.cli.basics import printable, whole
from peer.cli.common import command, home_of, open_node, print_json, say

MAX_BATCH = 100_000  # as the setting sync.batch (peer.config, not imported here: slow)
MAX_TTL_S = 30 * 86400  # an invitation is for a device in hand, not for a month


def register(commands: Any) -> None:
    serve = command(commands, "serve", cmd_serve, "serve this node to peers until stopped")
    serve.add_argument(
        "--listen", default=None, help="HOST:PORT (default 127.0.0.1:7417; config.toml)"
    )
    serve.add_argument("--insecure", action="store_true", help="plaintext, loopback only")
    serve.add_argument("--no-sync", action="store_true", help="serve only: no automatic sync")
    serve.add_argument(
        "--interval",
        "--sync-interval",
        dest="interval",
        default=None,
        help="seconds between syncs with each peer",
    )
    serve.add_argument("--no-discovery", action="store_true", help="do not use LAN discovery")

    sync = command(commands, "sync", cmd_sync, "sync now with the given peers (or all)")
    sync.add_argument("peers", nargs="*", metavar="PEER", help="HOST:PORT, node id or name")
    sync.add_argument("--insecure", action="store_true", help="plaintext, loopback only")
    sync.add_argument("--batch", type=whole(1, MAX_BATCH), default=1000, help="records per message")

    peers = commands.add_parser("peers", help="the trust list: who this node talks to")
    peer_commands = peers.add_subparsers(title="peers commands", metavar="ACTION", required=True)
    add = command(peer_commands, "add", cmd_peers_add, "pin a node by its id")
    add.add_argument("node_id", help="the other node's id (`peer id` there)")
    add.add_argument("address", nargs="?", default="", help="HOST:PORT where it serves")
    add.add_argument("--name", default="", help="a name for it")
    command(peer_commands, "list", cmd_peers_list, "the pinned nodes")
    remove = command(peer_commands, "remove", cmd_peers_remove, "unpin a node")
    remove.add_argument("node_id", help="its node id, name or address")

    invite = command(commands, "invite", cmd_invite, "print a one-time pairing code")
    invite.add_argument("--relay", action="store_true", help="pair a relay (no sync key)")
    invite.add_argument(
        "--ttl",
        type=whole(1, MAX_TTL_S, "seconds", "30 days"),
        default=3600,
        help="seconds it stays valid (at most 30 days)",
    )
    invite.add_argument("--address", help="HOST:PORT the new device should use to reach us")
    join = command(commands, "join", cmd_join, "pair with a node using its code")
    join.add_argument("code", help="the code `peer invite` printed on the other device")
    join.add_argument("--name", default="", help="a name for this node (new homes)")


async def cmd_serve(args: argparse.Namespace) -> int:
    from peer import daemon
    from peer.addresses import split_address
    from peer.config import load_config
    from peer.identity import format_node_id

    home = home_of(args)
    config = load_config(home, overrides=serve_overrides(args))
    say("warning", home.exposed())

    def ready(running: Any) -> None:
        host, _ = split_address(config.listen)
        address = f"[{host}]:{running.port}" if ":" in host else f"{host}:{running.port}"
        mode = "plaintext, loopback only" if config.insecure else "mutual TLS"
        if args.json:
            print_json({"listen": address, "node_id": node_id, "tls": not config.insecure})
        else:
            print(f"serving node {node_id} on {address} ({mode}; Ctrl-C to stop)")
        sys.stdout.flush()

    async with open_node(args, serving=True) as node:
        node_id = format_node_id(node.identity.node_id)
        await daemon.serve(node, config, ready)
    return 0


def serve_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags of `peer serve` as config overrides (None: not given on the command line)."""
    return {
        "listen": args.listen,
        "insecure": True if args.insecure else None,
        "sync.auto": False if args.no_sync else None,
        "sync.interval": args.interval,
        "discovery.enabled": False if args.no_discovery else None,
    }


async def cmd_sync(args: argparse.Namespace) -> int:
    from peer.addresses import require_loopback
    from peer.errors import UsageError
    from peer.progress import Progress
    from peer.sync_now import sync_peers

    if args.insecure:
        if not args.peers:
            raise UsageError("with --insecure, name the peers (HOST:PORT on loopback)")
        for target in args.peers:
            require_loopback(target)
    bars: list[Progress] = []

    def progress(target: str) -> Callable[[int, int], None]:
        bar = Progress(f"sync {target}")
        bars.append(bar)

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        return update

    async with open_node(args) as node:
        results = await sync_peers(node, args.peers, args.batch, progress, args.insecure)
    for bar in bars:
        bar.finish()
    if args.json:
        print_json({"peers": [render.sync_json(r) for r in results]})
    else:
        print("\n".join(render.sync_lines(results)))
    return 1 if any(r.error for r in results) else 0


async def cmd_peers_add(args: argparse.Namespace) -> int:
    from peer.identity import format_node_id, parse_node_id
    from peer.peers import pin

    node_id = parse_node_id(args.node_id)
    async with open_node(args) as node:
        pinned, offline = await pin(node, node_id, args.name, args.address)
        fetched = pinned.certificate is not None
        if fetched:  # it may have pinned us by id alone: give it our certificate
            from peer.introduce import introduce

            introduced = not await introduce(node, pinned)
        else:
            introduced = False
    shown = format_node_id(node_id)
    if args.json:
        print_json(
            {
                "node_id": shown,
                "name": args.name,
                "address": args.address,
                "certificate": fetched,
                "introduced": introduced,
                "unreachable": offline or None,
            }
        )
    else:
        where = f" at {printable(args.address)}" if args.address else " (no address yet)"
        print(f"trusting {shown}{where}")
        if offline:
            note = printable(offline)
            print(f"note: {note}; its certificate is checked at the first contact")
    return 0


async def cmd_peers_list(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        peers = await node.trust.all()
    rows = [render.peer_json(p) for p in peers]
    if args.json:
        print_json({"peers": rows})
    for row in [] if args.json else rows:
        cert = "" if row["certificate"] else "  (certificate not known yet)"
        name, address = render.node_name(row["name"]), printable(row["address"])
        print(f"{row['node_id']}  {name or '-'}  {address or '-'}{cert}")
    return 0


async def cmd_peers_remove(args: argparse.Namespace) -> int:
    from peer.peers import unpin

    async with open_node(args) as node:
        peer = await unpin(node, args.node_id)
    if args.json:
        print_json(render.peer_json(peer))
    else:
        print(f"no longer trusting {render.peer_json(peer)['node_id']}")
    return 0


async def cmd_invite(args: argparse.Namespace) -> int:
    from peer.pair import invite

    async with open_node(args) as node:
        invitation = await invite(node, args.relay, args.ttl, args.address)
    code = invitation.to_code()
    if args.json:
        print_json({"code": code, "expires_at": invitation.expires_at, "relay": args.relay})
    else:
        kind = "a relay (it gets no sync key)" if args.relay else "your own device"
        print(code)
        sys.stderr.write(f"run `peer join CODE` on {kind} within {args.ttl} s; it works once\n")
    return 0


async def cmd_join(args: argparse.Namespace) -> int:
    from peer.identity import format_node_id
    from peer.pair import join_home
    from peer.pairing import Invitation

    invitation = Invitation.from_code(args.code)
    joined = await join_home(home_of(args), invitation, args.name)
    name, has_key = joined.name, joined.sync_key
    say("note", joined.tightened)
    shown = format_node_id(invitation.node_id)
    if args.json:
        print_json(
            {
                "node_id": shown,
                "name": name,
                "address": invitation.address,
                "sync_key": has_key,
                "relay": invitation.relay,
            }
        )
    else:
        role = "as a relay (no sync key)" if invitation.relay else "with the sync key"
        where = printable(invitation.address)
        print(f"paired with {name or shown} at {where} {role}; now run `peer sync`")
    return 0
