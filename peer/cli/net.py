"""The CLI's network commands: serve, sync, the trust list (peers) and pairing.

Same rules as `peer.cli`: build objects, call one library function, print.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from typing import Any

from peer import render
from peer.cli import home_of, open_node, print_json, say


async def cmd_serve(args: argparse.Namespace) -> int:
    from peer import daemon
    from peer.addresses import split_address
    from peer.config import load_config
    from peer.identity import format_node_id

    home = home_of(args)
    config = load_config(home, overrides=serve_overrides(args))
    node = await open_node(args)
    node_id = format_node_id(node.identity.node_id)
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

    try:
        await daemon.serve(node, config, ready)
    finally:
        await node.close()
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
    from peer import daemon
    from peer.errors import UsageError
    from peer.progress import Progress

    if args.insecure:
        if not args.peers:
            raise UsageError("with --insecure, name the peers (HOST:PORT on loopback)")
        for target in args.peers:
            daemon.require_loopback(target)
    node = await open_node(args)
    bars: list[Progress] = []

    def progress(target: str) -> Callable[[int, int], None]:
        bar = Progress(f"sync {target}")
        bars.append(bar)

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        return update

    try:
        results = await daemon.sync_peers(node, args.peers, args.batch, progress, args.insecure)
    finally:
        await node.close()
    for bar in bars:
        bar.finish()
    if args.json:
        print_json({"peers": [render.sync_json(r) for r in results]})
    else:
        print("\n".join(render.sync_lines(results)))
    return 1 if any(r.error for r in results) else 0


async def cmd_peers_add(args: argparse.Namespace) -> int:
    from peer import daemon
    from peer.addresses import split_address
    from peer.errors import PeerUnavailable
    from peer.identity import format_node_id, parse_node_id
    from peer.names import check_name
    from peer.store import TrustedPeer

    node_id = parse_node_id(args.node_id)
    check_name(args.name)
    if args.address:
        split_address(args.address)
    node = await open_node(args)
    offline = ""
    try:
        pinned = TrustedPeer(node_id, args.name, args.address)
        if args.address:  # check the pin now if we can; else at the first contact
            try:
                certificate = await daemon.read_certificate(pinned)
                pinned = TrustedPeer(node_id, args.name, args.address, certificate)
            except PeerUnavailable as exc:
                offline = str(exc)
        await node.store.peers.add(pinned)
        fetched = pinned.certificate is not None
    finally:
        await node.close()
    shown = format_node_id(node_id)
    if args.json:
        print_json(
            {
                "node_id": shown,
                "name": args.name,
                "address": args.address,
                "certificate": fetched,
                "unreachable": offline or None,
            }
        )
    else:
        where = f" at {render.printable(args.address)}" if args.address else " (no address yet)"
        print(f"trusting {shown}{where}")
        if offline:
            note = render.printable(offline)
            print(f"note: {note}; its certificate is checked at the first contact")
    return 0


async def cmd_peers_list(args: argparse.Namespace) -> int:
    node = await open_node(args)
    try:
        peers = await node.store.peers.all()
    finally:
        await node.close()
    rows = [render.peer_json(p) for p in peers]
    if args.json:
        print_json({"peers": rows})
    for row in [] if args.json else rows:
        cert = "" if row["certificate"] else "  (certificate not known yet)"
        name, address = render.node_name(row["name"]), render.printable(row["address"])
        print(f"{row['node_id']}  {name or '-'}  {address or '-'}{cert}")
    return 0


async def cmd_peers_remove(args: argparse.Namespace) -> int:
    from peer import daemon

    node = await open_node(args)
    try:
        peer = daemon.find_peer(await node.store.peers.all(), args.node_id)
        await node.store.peers.remove(peer.node_id)
    finally:
        await node.close()
    if args.json:
        print_json(render.peer_json(peer))
    else:
        print(f"no longer trusting {render.peer_json(peer)['node_id']}")
    return 0


async def cmd_invite(args: argparse.Namespace) -> int:
    from peer import daemon

    node = await open_node(args)
    try:
        invitation = await daemon.invite(node, args.relay, args.ttl, args.address)
    finally:
        await node.close()
    code = invitation.to_code()
    if args.json:
        print_json({"code": code, "expires_at": invitation.expires_at, "relay": args.relay})
    else:
        kind = "a relay (it gets no sync key)" if args.relay else "your own device"
        print(code)
        sys.stderr.write(f"run `peer join CODE` on {kind} within {args.ttl} s; it works once\n")
    return 0


async def cmd_join(args: argparse.Namespace) -> int:
    from peer import daemon
    from peer.identity import format_node_id
    from peer.names import clean_name
    from peer.node import Node
    from peer.pairing import Invitation

    invitation = Invitation.from_code(args.code)
    home = home_of(args)
    created = not home.exists() and not home.root.exists()
    if home.exists():
        node = await Node.open(home)
    else:
        node = await Node.init(home, args.name, relay=True)  # the key comes from the inviter
    try:
        name = clean_name(await daemon.join(node, invitation))  # the inviter chose it
        has_key = node.identity.sync is not None
    except BaseException:
        await node.close()
        if created:  # a failed join leaves no half-made home behind
            shutil.rmtree(home.root, ignore_errors=True)
        raise
    await node.close()
    say("note", node.home.tightened)
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
        where = render.printable(invitation.address)
        print(f"paired with {name or shown} at {where} {role}; now run `peer sync`")
    return 0
