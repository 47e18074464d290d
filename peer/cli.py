"""The `peer` command line: parse, call one library function, print, map errors.

Every failure is one line on stderr and a non-zero exit (1 for a failure, 2 for a
usage mistake); no traceback unless `--debug`. Heavy modules are imported inside the
commands so that short commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from peer import render

if TYPE_CHECKING:
    from peer.node import Entry, Node

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
FOLLOW_POLL_S = 0.1
MAX_LIMIT = 1_000_000_000  # records or entries shown; SQLite's integers end at 2**63
MAX_BATCH = 100_000  # as the setting sync.batch (peer.config, not imported here: slow)
MAX_TTL_S = 30 * 86400  # an invitation is for a device in hand, not for a month


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"peer: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # refused handshakes are not news
    args = build_parser().parse_args(argv)
    if not hasattr(args, "handler"):
        return _fail("a command is required (see `peer --help`)", 2)
    return run(args.handler, args)


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one command, turning every error into one line and an exit code."""
    from peer.errors import PeerError, UsageError

    try:
        return asyncio.run(handler(args))
    except UsageError as exc:
        return _fail(str(exc), 2)
    except PeerError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except Exception as exc:
        if args.debug:
            raise
        return _fail(f"unexpected failure: {exc} (run with --debug for details)", 1)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"peer: {message}\n")
    return code


def say(kind: str, lines: Sequence[str]) -> None:
    """One stderr line per note or warning: `peer: warning: ...`."""
    for line in lines:
        sys.stderr.write(f"peer: {kind}: {line}\n")


def build_parser() -> _Parser:  # noqa: PLR0915 (one flat list of every command)
    from peer.cli_apps import register as register_apps
    from peer.cli_net import (  # the network commands live beside, in their own module
        cmd_invite,
        cmd_join,
        cmd_peers_add,
        cmd_peers_list,
        cmd_peers_remove,
        cmd_serve,
        cmd_sync,
    )

    parser = _Parser(prog="peer", description="Serverless, end-to-end encrypted log sync.")
    parser.add_argument("--home", type=Path, help="node home directory (default: $PEER_HOME)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    init = _command(commands, "init", cmd_init, "create identity, sync key and store")
    init.add_argument("--name", default="", help="a name for this node")
    init.add_argument("--key", help="use this sync key (from `peer key export`)")
    init.add_argument("--relay", action="store_true", help="no sync key: store and forward only")
    _command(commands, "id", cmd_id, "print this node's id")

    key = commands.add_parser("key", help="export or import the sync key")
    key_commands = key.add_subparsers(title="key commands", metavar="ACTION", required=True)
    _command(key_commands, "export", cmd_key_export, "print the sync key (one line)")
    key_import = _command(key_commands, "import", cmd_key_import, "set the sync key")
    key_import.add_argument("key", help="the key text, or - to read it from stdin")

    append = _command(commands, "append", cmd_append, "append records to one of your logs")
    append.add_argument("--tag", required=True, help="the log's tag (a-z 0-9 . _ -)")
    append.add_argument("data", nargs="?", help="the record (default: one per stdin line)")

    tail = _command(commands, "tail", cmd_tail, "print decrypted records as JSON lines")
    tail.add_argument("--tag", help="only this tag")
    tail.add_argument("--limit", type=whole(1, MAX_LIMIT), help="only the last N records")
    tail.add_argument("--follow", action="store_true", help="keep printing new records")

    serve = _command(commands, "serve", cmd_serve, "serve this node to peers until stopped")
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

    sync = _command(commands, "sync", cmd_sync, "sync now with the given peers (or all)")
    sync.add_argument("peers", nargs="*", metavar="PEER", help="HOST:PORT, node id or name")
    sync.add_argument("--insecure", action="store_true", help="plaintext, loopback only")
    sync.add_argument("--batch", type=whole(1, MAX_BATCH), default=1000, help="records per message")

    peers = commands.add_parser("peers", help="the trust list: who this node talks to")
    peer_commands = peers.add_subparsers(title="peers commands", metavar="ACTION", required=True)
    add = _command(peer_commands, "add", cmd_peers_add, "pin a node by its id")
    add.add_argument("node_id", help="the other node's id (`peer id` there)")
    add.add_argument("address", nargs="?", default="", help="HOST:PORT where it serves")
    add.add_argument("--name", default="", help="a name for it")
    _command(peer_commands, "list", cmd_peers_list, "the pinned nodes")
    remove = _command(peer_commands, "remove", cmd_peers_remove, "unpin a node")
    remove.add_argument("node_id", help="its node id, name or address")

    invite = _command(commands, "invite", cmd_invite, "print a one-time pairing code")
    invite.add_argument("--relay", action="store_true", help="pair a relay (no sync key)")
    invite.add_argument(
        "--ttl",
        type=whole(1, MAX_TTL_S, "seconds", "30 days"),
        default=3600,
        help="seconds it stays valid (at most 30 days)",
    )
    invite.add_argument("--address", help="HOST:PORT the new device should use to reach us")
    join = _command(commands, "join", cmd_join, "pair with a node using its code")
    join.add_argument("code", help="the code `peer invite` printed on the other device")
    join.add_argument("--name", default="", help="a name for this node (new homes)")

    _command(commands, "status", cmd_status, "index, forks and identity")
    _command(commands, "verify", cmd_verify, "check chains, signatures and decryption")
    register_apps(commands)  # kv, history, store: in their own module
    return parser


def _command(commands: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=handler)
    return sub


def whole(low: int, high: int, unit: str = "", span: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, else a message naming the
    bounds (an unbounded one failed later, deep in SQLite, as an unexpected failure)."""
    what = f"a whole number of {unit}" if unit else "a whole number"
    bounds = f"between {low} and {high}" + (f" ({span})" if span else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more than 4300 digits
            value = None
        if value is None or not low <= value <= high:
            shown = text if len(text) <= 40 else text[:39] + "…"
            raise argparse.ArgumentTypeError(f'must be {what} {bounds}, got "{shown}"')
        return value

    return parse


# -- helpers -----------------------------------------------------------------------


def home_of(args: argparse.Namespace) -> Any:
    from peer.home import Home, default_home

    return Home(args.home if args.home else default_home(os.environ))


async def open_node(args: argparse.Namespace) -> Node:
    from peer.node import Node

    return await Node.open(home_of(args))


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")


# -- commands ----------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace) -> int:
    from peer.crypto import SyncKey
    from peer.identity import format_node_id
    from peer.node import Node

    sync = SyncKey.from_text(args.key) if args.key else None
    node = await Node.init(home_of(args), args.name, sync, relay=args.relay)
    await node.close()
    say("note", node.home.tightened)
    identity = node.identity
    key_id = identity.sync.key_id_text if identity.sync else None
    node_id = format_node_id(identity.node_id)
    if args.json:
        print_json(
            {
                "node_id": node_id,
                "host": identity.host.hex(),
                "key_id": key_id,
                "home": str(node.home.root),
            }
        )
    else:
        print(node_id)
    return 0


async def cmd_id(args: argparse.Namespace) -> int:
    from peer.identity import format_node_id

    identity = home_of(args).load()
    node_id = format_node_id(identity.node_id)
    if args.json:
        print_json({"node_id": node_id, "host": identity.host.hex()})
    else:
        print(node_id)
    return 0


async def cmd_key_export(args: argparse.Namespace) -> int:
    from peer.errors import UsageError

    identity = home_of(args).load()
    if identity.sync is None:
        raise UsageError("this node holds no sync key (it is a relay)")
    if args.json:
        print_json({"key": identity.sync.to_text(), "key_id": identity.sync.key_id_text})
    else:
        print(identity.sync.to_text())
    return 0


async def cmd_key_import(args: argparse.Namespace) -> int:
    from peer.crypto import SyncKey

    text = sys.stdin.readline() if args.key == "-" else args.key
    sync = SyncKey.from_text(text)
    node = await open_node(args)
    try:
        await node.import_sync_key(sync)
    finally:
        await node.close()
    if args.json:
        print_json({"key_id": sync.key_id_text})
    else:
        print(f"sync key {sync.key_id_text} imported")
    return 0


async def cmd_append(args: argparse.Namespace) -> int:
    node = await open_node(args)
    try:
        if args.data is not None:
            records = await node.append(args.tag, [os.fsencode(args.data)])
            ranges = [(records[0].idx, records[0].idx)]
        else:
            ranges = await _append_stdin(node, args.tag)
    finally:
        await node.close()
    count = sum(last - first + 1 for first, last in ranges)
    if args.json:
        print_json(
            {
                "host": node.identity.host.hex(),
                "tag": args.tag,
                "count": count,
                "ranges": [list(r) for r in ranges],
            }
        )
    elif count:
        spans = ", ".join(f"{a}..{b}" for a, b in ranges)
        print(f"appended {count} record(s) to {args.tag} at idx {spans}")
    return 0


async def _append_stdin(node: Node, tag: str) -> list[tuple[int, int]]:
    """Bulk append; another writer may interleave between chunks, hence the ranges."""
    from peer.progress import Progress

    progress = Progress(f"appending to {tag}")
    ranges: list[tuple[int, int]] = []
    count = 0
    async for first, last in node.append_many(tag, _stdin_lines()):
        if ranges and ranges[-1][1] + 1 == first:
            ranges[-1] = (ranges[-1][0], last)
        else:
            ranges.append((first, last))
        count += last - first + 1
        progress.update(count)
    progress.finish()
    return ranges


def _stdin_lines() -> Iterator[bytes]:
    for line in sys.stdin.buffer:
        yield line.rstrip(b"\r\n")


async def cmd_tail(args: argparse.Namespace) -> int:
    node = await open_node(args)
    try:
        entries = await node.tail(args.tag, args.limit)
        last = _print_entries(entries)
        if args.follow:
            last = last or await node.store.last_seq(args.tag)
            while True:
                await asyncio.sleep(FOLLOW_POLL_S)
                last = _print_entries(await node.follow(args.tag, last)) or last
    finally:
        await node.close()
    return 0


def _print_entries(entries: Sequence[Entry]) -> int:
    for entry in entries:
        print_json(render.entry_json(entry))
    sys.stdout.flush()
    return entries[-1].seq if entries else 0


async def cmd_status(args: argparse.Namespace) -> int:
    status = await _daemon_status(args)
    if status is None:
        node = await open_node(args)
        try:
            status = await node.status()
        finally:
            await node.close()
        status["daemon"] = None
    status["warnings"] = home_of(args).exposed()
    if args.json:
        print_json(status)
    else:
        print("\n".join(render.status_lines(status)))
        say("warning", status["warnings"])
    return 0


async def _daemon_status(args: argparse.Namespace) -> dict[str, Any] | None:
    """The live status of the home's running daemon, or None if none answers."""
    from peer.client import LocalClient
    from peer.errors import PeerUnavailable, StoreError

    serving = home_of(args).serving()
    if serving is None:
        return None
    try:
        async with LocalClient(serving.socket) as client:
            value: dict[str, Any] = json.loads(await client.status())
            return value
    except (PeerUnavailable, StoreError):  # UNAVAILABLE: its store failed it, say
        return None  # it just stopped: fall back to reading the store


async def cmd_verify(args: argparse.Namespace) -> int:
    node = await open_node(args)
    try:
        report = await node.verify()
    finally:
        await node.close()
    warnings = node.home.exposed()  # said, but not a verify failure: the data is sound
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "logs": report.logs,
                "records": report.records,
                "decrypted": report.decrypted,
                "forks": report.forks,
                "problems": report.problems,
                "warnings": warnings,
            }
        )
    else:
        for problem in report.problems[:50]:
            print(f"problem: {problem}")
        verdict = "ok" if report.ok else "FAILED"
        print(
            f"{verdict}: {report.logs} log(s), {report.records} record(s) checked, "
            f"{report.decrypted} decrypted, {len(report.problems)} problem(s), "
            f"{report.forks} fork(s)"
        )
        say("warning", warnings)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
