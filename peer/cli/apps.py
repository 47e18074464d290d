"""The CLI's app commands: `peer kv`, `peer history` and `peer store rebuild`.

Same rules as `peer.cli`: build objects, call one library function, print. `kv set`
and `history add` run from shell hooks, so this module imports nothing heavy at the
top (no grpc): check with `python -X importtime -m peer.cli history add -- true`.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peer.cli import picker, quick
from peer.cli.basics import printable, whole
from peer.cli.common import MAX_LIMIT, command, open_node, print_json

if TYPE_CHECKING:
    from peer.apps.history import ImportResult
    from peer.apps.views import ViewReport
    from peer.node import Node
    from peer.store import HistoryEntry, KvItem
    from peer.store.stats import Count

DEFAULT_NS = "default"  # peer.apps.kv.DEFAULT_NS, without importing it at startup
MAX_PROBLEMS_SHOWN = 20


def register(commands: Any) -> None:
    """Add the kv, history and store commands to the top-level subparsers."""
    _register_kv(commands)
    _register_history(commands)
    store = commands.add_parser("store", help="maintain the local store")
    store_commands = store.add_subparsers(title="store commands", metavar="ACTION", required=True)
    command(store_commands, "rebuild", cmd_store_rebuild, "recompute the views from the log")


def _register_kv(commands: Any) -> None:
    kv = commands.add_parser("kv", help="a key-value store shared by your devices")
    actions = kv.add_subparsers(title="kv commands", metavar="ACTION", required=True)
    kv_set = _namespaced(command(actions, "set", cmd_kv_set, "set KEY to VALUE"))
    kv_set.add_argument("key")
    kv_set.add_argument(
        "value", help="the value, or - to read it from stdin (one trailing newline dropped)"
    )
    get = _namespaced(command(actions, "get", cmd_kv_get, "print the value of KEY"))
    get.add_argument("key")
    delete = _namespaced(command(actions, "delete", cmd_kv_delete, "delete KEY"))
    delete.add_argument("key")
    listing = _namespaced(command(actions, "list", cmd_kv_list, "the keys and their values"))
    listing.add_argument("--all", action="store_true", help="every namespace")


def _namespaced(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("-n", "--namespace", default=DEFAULT_NS, help="default: %(default)s")
    return parser


def _register_history(commands: Any) -> None:
    history = commands.add_parser("history", help="your shell history, on every device")
    actions = history.add_subparsers(title="history commands", metavar="ACTION", required=True)
    add = command(actions, "add", cmd_history_add, "record one command (for shell hooks)")
    quick.add_arguments(add)
    imp = command(actions, "import", cmd_history_import, "import a shell's history file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=("bash", "zsh", "fish", "atuin"), help="default: guess")
    listing = command(actions, "list", cmd_history_list, "the latest commands, oldest first")
    listing.add_argument("--limit", type=whole(1, MAX_LIMIT), help="only the last N")
    search = command(
        actions, "search", cmd_history_search, "commands containing QUERY; -i: what ctrl-r opens"
    )
    search.add_argument("query", nargs="?", help="the text (with -i: what to start with)")
    search.add_argument("--limit", type=whole(1, MAX_LIMIT), help="only the newest N")
    picker.add_arguments(search)
    stats = command(actions, "stats", cmd_history_stats, "top commands, hosts, failure rate")
    stats.add_argument("--top", type=whole(1, 1000), default=10, help="commands shown (10)")
    delete = command(actions, "delete", cmd_history_delete, "delete one entry, everywhere")
    delete.add_argument("id")


# -- kv ----------------------------------------------------------------------------


async def cmd_kv_set(args: argparse.Namespace) -> int:
    value = _stdin_value() if args.value == "-" else os.fsencode(args.value)
    async with open_node(args) as node:
        record = await node.kv.set(args.key, value, args.namespace)
    if args.json:
        print_json(
            {
                "ns": args.namespace,
                "key": args.key,
                "host": record.host.hex(),
                "idx": record.idx,
                "timestamp": record.timestamp,
            }
        )
    return 0


def _stdin_value() -> bytes:
    """All of stdin, bounded by the record limit, without one trailing newline (so that
    `peer kv get K | peer kv set K2 -` copies a value exactly)."""
    from peer.crypto import MAX_PLAINTEXT
    from peer.errors import InvalidRecord
    from peer.inputs import read_all

    value = read_all(sys.stdin.buffer, MAX_PLAINTEXT)
    if value is None:
        raise InvalidRecord(
            f"the value on stdin is longer than the record limit of {MAX_PLAINTEXT:,} bytes"
        )
    return value.removesuffix(b"\n")


async def cmd_kv_get(args: argparse.Namespace) -> int:
    from peer.errors import NotFound

    async with open_node(args) as node:
        value = await node.kv.get(args.key, args.namespace)
    if value is None:
        raise NotFound(f"no key {args.key!r} in namespace {args.namespace!r}")
    if args.json:
        print_json({"ns": args.namespace, "key": args.key, **_value_json(value)})
    else:
        sys.stdout.buffer.write(value + b"\n")
    return 0


async def cmd_kv_delete(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        existed = await node.kv.delete(args.key, args.namespace)
    if args.json:
        print_json({"ns": args.namespace, "key": args.key, "existed": existed})
    elif not existed:
        print(f"{printable(args.key)} was not set (deleted anyway, on every device)")
    return 0


async def cmd_kv_list(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        items = await node.kv.items(None if args.all else args.namespace)
    if args.json:
        print_json([_kv_json(item) for item in items])
    for item in [] if args.json else items:
        key, value = printable(item.key), printable(item.value.decode("utf-8", "backslashreplace"))
        print(f"{printable(item.ns)}\t{key}\t{value}" if args.all else f"{key}\t{value}")
    return 0


def _kv_json(item: KvItem) -> dict[str, Any]:
    return {
        "ns": item.ns,
        "key": item.key,
        **_value_json(item.value),
        "timestamp": item.timestamp,
        "host": item.host.hex(),
    }


def _value_json(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_b64": base64.b64encode(value).decode()}


# -- history -----------------------------------------------------------------------


async def cmd_history_add(args: argparse.Namespace) -> int:
    """The full path of `history add` (`peer.cli.quick` takes the lean one first)."""
    from peer.store import HistoryEntry

    entry = HistoryEntry(**quick.entry_of(args))
    async with open_node(args) as node:
        await node.history.add(entry)
    if args.json:
        print_json(entry.as_json())
    else:
        print(entry.id)
    return 0


async def cmd_history_import(args: argparse.Namespace) -> int:
    import socket

    from peer.apps import imports

    path: Path = args.file
    fmt = args.format or imports.guess_format(path)
    parsed = imports.load(path, fmt)
    mtime = path.stat().st_mtime_ns
    entries = imports.to_entries(parsed.commands, fmt, socket.gethostname(), mtime)
    async with open_node(args) as node:
        result = await _import_with_progress(node, path, entries)
    problems = [{"line": p.line, "reason": p.reason} for p in parsed.problems]
    if args.json:
        print_json(
            {
                "format": fmt,
                "read": len(entries),
                "added": result.added,
                "already": result.already,
                "deleted_in_source": parsed.deleted,
                "problems": problems,
            }
        )
        return 0
    _warn_skipped(path, problems)
    print(
        f"imported {result.added} command(s) from {printable(str(path))} ({fmt}); "
        f"{result.already} already held, {len(problems)} line(s) skipped"
    )
    return 0


async def _import_with_progress(
    node: Node, path: Path, entries: list[HistoryEntry]
) -> ImportResult:
    """Two stages on stderr: writing the records, then (rarely) catching the view up."""
    from peer.progress import Progress

    bars = [Progress(f"importing {path.name}", total=len(entries))]

    def viewing(count: int) -> None:
        if len(bars) == 1:  # the append is done: close its bar, open the view's
            bars[0].finish()
            bars.append(Progress("updating the history view"))
        bars[-1].update(count)

    result = await node.history.import_entries(entries, bars[0].update, viewing)
    bars[-1].finish()
    return result


def _warn_skipped(path: Path, problems: list[dict[str, Any]]) -> None:
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        where = f"{printable(str(path))}: line {problem['line']}"
        sys.stderr.write(f"peer: {where}: {printable(problem['reason'])}, skipped\n")
    if len(problems) > MAX_PROBLEMS_SHOWN:
        sys.stderr.write(f"peer: … and {len(problems) - MAX_PROBLEMS_SHOWN} more lines skipped\n")


async def cmd_history_list(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        entries = await node.history.recent(args.limit)
    _print_entries(entries, args.json)
    return 0


async def cmd_history_search(args: argparse.Namespace) -> int:
    if args.interactive:  # usually taken by `peer.cli.picker.main` before this parser
        return await picker.pick(args)
    if args.query is None:
        from peer.errors import UsageError

        raise UsageError("history search needs a QUERY (or -i, to search interactively)")
    async with open_node(args) as node:
        entries = await node.history.search(args.query, args.limit)
    _print_entries(entries, args.json)
    return 0


async def cmd_history_stats(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        stats = await node.history.stats(args.top)
    if args.json:
        print_json(
            {
                **_count_json(stats.total),
                "commands": [{"command": c.name, **_count_json(c)} for c in stats.commands],
                "hosts": [{"hostname": h.name, **_count_json(h)} for h in stats.hosts],
            }
        )
        return 0
    t = stats.total
    print(
        f"{t.runs:,} command(s) on {len(stats.hosts)} host(s); {_rate(t)} failed "
        f"(of {t.known_exit:,} with a known exit status)"
    )
    for title, counts in (("top commands", stats.commands), ("hosts", stats.hosts)):
        print(f"{title}:")
        width = max((len(printable(c.name, 40)) for c in counts), default=0)
        for c in counts:
            print(f"  {c.runs:>8,}  {printable(c.name, 40):<{width}}  {_rate(c)} failed")
    return 0


def _count_json(count: Count) -> dict[str, Any]:
    rate = count.failed / count.known_exit if count.known_exit else None
    return {
        "runs": count.runs,
        "failed": count.failed,
        "known_exit": count.known_exit,
        "failure_rate": rate,
    }


def _rate(count: Count) -> str:
    return f"{100 * count.failed / count.known_exit:.1f}%" if count.known_exit else "-"


async def cmd_history_delete(args: argparse.Namespace) -> int:
    async with open_node(args) as node:
        entry = await node.history.delete(args.id)
    if args.json:
        print_json(entry.as_json())
    else:
        print(f"deleted {printable(entry.id)}: {printable(entry.command)}")
    return 0


def _print_entries(entries: list[HistoryEntry], as_json: bool) -> None:
    if as_json:
        print_json([e.as_json() for e in entries])
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.timestamp // 10**9))
        print(f"{when}  {printable(e.id)}  {printable(e.command)}")


# -- store -------------------------------------------------------------------------


async def cmd_store_rebuild(args: argparse.Namespace) -> int:
    from peer.progress import Progress

    progress = Progress("rebuilding views")
    async with open_node(args) as node:
        report = await node.views.rebuild(progress.update)
        keys, entries = await node.views.sizes()
    progress.finish()
    if args.json:
        print_json({**_report_json(report), "kv_keys": keys, "history_entries": entries})
    else:
        s = report.skipped
        print(
            f"rebuilt the views from {report.applied} record(s): {keys} key(s), {entries} "
            f"history entries; skipped {s.undecryptable} undecryptable, {s.unknown_version} "
            f"of an unknown version, {s.malformed} malformed"
        )
    return 0


def _report_json(report: ViewReport) -> dict[str, int]:
    s = report.skipped
    return {
        "applied": report.applied,
        "undecryptable": s.undecryptable,
        "unknown_version": s.unknown_version,
        "malformed": s.malformed,
    }
