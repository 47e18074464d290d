"""The CLI's commands on the node's own store: init, id, key, append, tail, status,
verify."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from peer.cli import render
from peer.cli.basics import printable, whole
from peer.cli.common import MAX_LIMIT, command, home_of, open_node, print_json, say

if TYPE_CHECKING:
    from peer.node import Entry, Node, Unreadable
    from peer.status import NodeStatus

FOLLOW_POLL_S = 0.1
EXIT_UNREADABLE = 3  # `tail`: everything printed, but records this node should open did not
KEY_LINE_LIMIT = 4096  # bytes of stdin read for `key import -` (a key text is 60)


def register(commands: Any) -> None:
    init = command(commands, "init", cmd_init, "create identity, sync key and store")
    init.add_argument("--name", default="", help="a name for this node")
    init.add_argument("--key", help="use this sync key (from `peer key export`)")
    init.add_argument("--relay", action="store_true", help="no sync key: store and forward only")
    command(commands, "id", cmd_id, "print this node's id")

    key = commands.add_parser("key", help="export or import the sync key")
    key_commands = key.add_subparsers(title="key commands", metavar="ACTION", required=True)
    command(key_commands, "export", cmd_key_export, "print the sync key (one line)")
    key_import = command(key_commands, "import", cmd_key_import, "set the sync key")
    key_import.add_argument("key", help="the key text, or - to read its first line from stdin")
    command(key_commands, "rotate", _rotate, "draw a new sync key for every device of the roster")

    append = command(commands, "append", cmd_append, "append records to one of your logs")
    append.add_argument("--tag", required=True, help="the log's tag (a-z 0-9 . _ -)")
    append.add_argument(
        "data",
        nargs="?",
        help="the record (default: one per stdin line; a line over the record limit "
        "stops there, the lines before it kept)",
    )

    tail = command(commands, "tail", cmd_tail, "print decrypted records as JSON lines")
    tail.epilog = (
        "Exit status 3: every record was printed, but some could not be opened with this "
        "node's sync key (a wrong key names both keys on stderr; a relay opens none and "
        "exits 0)."
    )
    tail.add_argument("--tag", help="only this tag")
    tail.add_argument("--limit", type=whole(1, MAX_LIMIT), help="only the last N records")
    tail.add_argument("--follow", action="store_true", help="keep printing new records")

    command(commands, "status", cmd_status, "index, forks and identity")
    command(commands, "verify", cmd_verify, "check chains, signatures and decryption")


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
    from peer.relay import require_sync_key

    sync = require_sync_key(home_of(args).load().sync)
    if args.json:
        print_json({"key": sync.to_text(), "key_id": sync.key_id_text})
    else:
        print(sync.to_text())
    return 0


async def cmd_key_import(args: argparse.Namespace) -> int:
    from peer.crypto import SyncKey

    sync = SyncKey.from_text(_stdin_key() if args.key == "-" else args.key)
    async with open_node(args) as node:
        await node.import_sync_key(sync)
    if args.json:
        print_json({"key_id": sync.key_id_text})
    else:
        print(f"sync key {sync.key_id_text} imported")
    return 0


async def _rotate(args: argparse.Namespace) -> int:
    from peer.cli.devices import cmd_key_rotate

    return await cmd_key_rotate(args)


async def cmd_append(args: argparse.Namespace) -> int:
    streamed = None if args.data is not None else await _append_stdin_to_daemon(args)
    if streamed is not None:
        host, ranges = streamed
    else:
        async with open_node(args) as node:
            if args.data is not None:
                records = await node.append(args.tag, [os.fsencode(args.data)])
                ranges = [(records[0].idx, records[0].idx)]
            else:
                ranges = await _append_stdin(node, args.tag)
            host = node.identity.host
    count = sum(last - first + 1 for first, last in ranges)
    if args.json:
        print_json(
            {
                "host": host.hex(),
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
    """Bulk append; another writer may interleave between chunks, hence the ranges. A
    line over the record limit ends the input: the lines before it are appended (and
    durable), then InvalidRecord names it; nothing after it is read."""
    from peer.progress import Progress

    progress = Progress(f"appending to {tag}")
    ranges: list[tuple[int, int]] = []
    count = 0
    over: list[int] = []  # the number of the line over the limit, if one was
    async for first, last in node.append_many(tag, _stdin_lines(over)):
        if ranges and ranges[-1][1] + 1 == first:
            ranges[-1] = (ranges[-1][0], last)
        else:
            ranges.append((first, last))
        count += last - first + 1
        progress.update(count)
    progress.finish()
    _refuse_long_line(over, count)
    return ranges


async def _append_stdin_to_daemon(
    args: argparse.Namespace,
) -> tuple[bytes, list[tuple[int, int]]] | None:
    """With a daemon serving the home, stdin goes through its AppendStream, the path
    programs use (group commit, acks, flow control); None when no daemon runs. A
    failure names what was durable: the daemon acknowledged exactly those ranges."""
    from peer import api
    from peer.errors import PeerError, PeerUnavailable
    from peer.progress import Progress

    home = home_of(args)
    if home.serving() is None:
        return None
    host = home.load().host
    progress = Progress(f"appending to {args.tag}")
    over: list[int] = []
    writer: api.Writer | None = None
    try:
        connection = await api.connect(home.root)
        async with connection, connection.writer(args.tag) as writer:
            for number, line in enumerate(_stdin_lines(over), 1):
                await writer.write(line)
                if number % 10_000 == 0:
                    progress.update(writer.durable)
    except PeerError as error:
        progress.finish()
        acked = writer.acked if writer is not None else []
        if acked or isinstance(error, PeerUnavailable):
            durable = ", ".join(f"{a}..{b}" for a, b in acked) or "none"
            say("note", [f"records acknowledged as durable before the failure: idx {durable}"])
        raise
    progress.update(writer.durable)
    progress.finish()
    _refuse_long_line(over, writer.durable)
    return host, writer.acked


def _stdin_lines(over: list[int]) -> Iterator[bytes]:
    """Stdin's lines; at a line over the record limit, its number goes to `over` and
    the lines end."""
    from peer.crypto import MAX_PLAINTEXT
    from peer.inputs import read_lines

    for number, line in read_lines(sys.stdin.buffer, MAX_PLAINTEXT):
        if line is None:
            over.append(number)
            return
        yield line


def _refuse_long_line(over: list[int], count: int) -> None:
    from peer.crypto import MAX_PLAINTEXT
    from peer.errors import InvalidRecord

    if over:
        raise InvalidRecord(
            f"stdin line {over[0]} is longer than the record limit of {MAX_PLAINTEXT:,} "
            f"bytes: stopped there, the {count} line(s) before it were appended"
        )


def _stdin_key() -> str:
    """The first line of stdin, read in bounded memory (stdin may be endless)."""
    from peer.errors import KeyFormatError
    from peer.inputs import first_line

    line = first_line(sys.stdin.buffer, KEY_LINE_LIMIT)
    if line is None:
        raise KeyFormatError(
            f"not a peer sync key: the first line of stdin is longer than {KEY_LINE_LIMIT:,} bytes"
        )
    return line.decode("utf-8", "replace")


async def cmd_tail(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        entries = await node.tail(args.tag, args.limit)
        last = _print_entries(entries)
        if args.follow:
            last = last or await node.newest(args.tag)
            while True:
                await asyncio.sleep(FOLLOW_POLL_S)
                last = _print_entries(await node.follow(args.tag, last)) or last
        unreadable = node.unreadable(entries)
        held = node.identity.sync.key_id_text if node.identity.sync else ""
    if unreadable is None:
        return 0
    sys.stderr.write(f"peer: {_unreadable_line(unreadable, held)}\n")
    return EXIT_UNREADABLE


def _unreadable_line(unreadable: Unreadable, held: str) -> str:
    """A script piping `tail --json` must not take an unreadable log for success."""
    count = f"{unreadable.count} of {unreadable.shown} record(s) could not be opened"
    if not unreadable.other_keys:
        return f"{count}: they were altered (run `peer verify`)"
    keys = ", ".join(unreadable.other_keys)
    return (
        f"{count}: written with key {keys}; this node holds key {held} "
        "(import the right one: `peer key import`)"
    )


def _print_entries(entries: Sequence[Entry]) -> int:
    for entry in entries:
        print_json(render.entry_json(entry))
    sys.stdout.flush()
    return entries[-1].seq if entries else 0


async def cmd_status(args: argparse.Namespace) -> int:
    live = await _daemon_status(args)
    if live is None:
        from peer.devices import with_roster

        async with open_node(args) as node:
            live = await with_roster(node, await node.status())
    status = {**live.as_json(), "warnings": home_of(args).exposed()}
    if args.json:
        print_json(status)
    else:
        print("\n".join(render.status_lines(status)))
        say("warning", status["warnings"])
    return 0


async def _daemon_status(args: argparse.Namespace) -> NodeStatus | None:
    """The live status of the home's running daemon, or None if none answers."""
    from peer.client import LocalClient
    from peer.errors import PeerUnavailable, StoreError

    serving = home_of(args).serving()
    if serving is None:
        return None
    try:
        async with LocalClient(serving.socket) as client:
            return await client.status()
    except (PeerUnavailable, StoreError):  # UNAVAILABLE: its store failed it, say
        return None  # it just stopped: fall back to reading the store


async def cmd_verify(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        report = await node.verify()
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
            print(f"problem: {printable(problem)}")
        verdict = "ok" if report.ok else "FAILED"
        print(
            f"{verdict}: {report.logs} log(s), {report.records} record(s) checked, "
            f"{report.decrypted} decrypted, {len(report.problems)} problem(s), "
            f"{report.forks} fork(s)"
        )
        say("warning", warnings)
    return 0 if report.ok else 1
