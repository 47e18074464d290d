"""`peer history add`, the shell hook's command, on a lean path: it runs after every
command a person types, so it imports only what the write needs (no asyncio, no
aiosqlite, no grpc). With a daemon running it hands the entry over (`peer.handoff`:
no cryptography, no sqlite3 either); otherwise, or when the daemon does not answer,
it writes through `peer.store.direct`, the record exactly as the full path writes it
(sealed, signed, next idx, view updated), and rings a running daemon to publish it at
once. A store that is missing or at an older schema takes the full path (which
creates or migrates it). `tests/test_history_hook.py` and `tests/test_handoff.py`
check the imports."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from peer.cli.basics import Parser
    from peer.home import Home

EXIT_RANGE = (-(2**31), 2**31 - 1)  # any platform's exit status (Windows' are 32-bit)
MAX_DURATION_NS = 10 * 365 * 86400 * 10**9  # bounded, so `now - duration` stays a time
_GLOBAL_FLAGS = {"--debug"}


def command_at(argv: Sequence[str]) -> int:
    """Where the command's words start, after the global flags (`--home`, `--debug`)."""
    at = 0
    while at < len(argv) and (argv[at] in _GLOBAL_FLAGS or argv[at].startswith("--home")):
        at += 2 if argv[at] == "--home" else 1
    return at


def without_command(argv: Sequence[str]) -> list[str]:
    """`argv` less the words `history add` (the global flags stay: the parsers here know
    them too)."""
    at = command_at(argv)
    return [*argv[:at], *argv[at + 2 :]]


def handles(argv: Sequence[str]) -> bool:
    """Whether `argv` is `[--home DIR] [--debug] history add ...` (not asking for help)."""
    rest = list(argv[command_at(argv) :])
    if rest[:2] != ["history", "add"]:
        return False
    before_command = rest[: rest.index("--")] if "--" in rest else rest
    return not {"-h", "--help"} & set(before_command)


_VALUED = {  # the flags with a value, and their names
    "--home": "home",
    "--cwd": "cwd",
    "--exit": "exit",
    "--duration": "duration",
    "--session": "session",
}
_BOUNDS = {"exit": EXIT_RANGE, "duration": (0, MAX_DURATION_NS)}


def parse(argv: Sequence[str]) -> SimpleNamespace | None:
    """`history add`'s arguments as a shell hook passes them (flags, `--`, the command),
    read without argparse (whose import and set-up cost more than the write); None for
    anything else (a mistake, an abbreviation), which argparse then reads and explains."""
    args = SimpleNamespace(
        home=None, debug=False, json=False, cwd=None, exit=None, duration=None, session=""
    )
    tokens = without_command(argv)
    while tokens and tokens[0] != "--":
        flag = tokens.pop(0)
        name, _, value = flag.partition("=") if flag.startswith("--") else (flag, "", "")
        if name in ("--debug", "--json") and not value:
            setattr(args, name[2:], True)
        elif name in _VALUED:
            if not value:
                if not tokens:
                    return None
                value = tokens.pop(0)
            setattr(args, _VALUED[name], value)
        else:
            return None
    if len(tokens) < 2:
        return None
    args.command = tokens[1:]
    for name, (low, high) in _BOUNDS.items():
        text = getattr(args, name)
        if text is not None:
            number = _whole(text)
            if number is None or not low <= number <= high:
                return None
            setattr(args, name, number)
    args.home = None if args.home is None else Path(args.home)
    return args


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `history add` (here and in the full parser, `peer.cli.apps`)."""
    from peer.cli.basics import whole

    parser.add_argument("--cwd", help="where it ran (default: here)")
    parser.add_argument("--exit", type=whole(*EXIT_RANGE), help="its exit status")
    parser.add_argument(
        "--duration",
        type=whole(0, MAX_DURATION_NS, "nanoseconds", "10 years"),
        help="how long it ran, in nanoseconds",
    )
    parser.add_argument("--session", default="", help="the shell session it ran in")
    parser.add_argument("command", nargs="+", help="the command (after --)")


def full_parser() -> Parser:
    from peer.cli.basics import Parser

    parser = Parser(prog="peer history add")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--json", action="store_true")
    add_arguments(parser)
    return parser


def entry_of(args: argparse.Namespace | SimpleNamespace) -> dict[str, Any]:
    """The entry `history add` records, as its JSON fields (`HistoryEntry.as_json`): a
    fresh id, started `duration` ago, here. Plain data, so that handing it to the daemon
    imports nothing of the store."""
    duration = args.duration
    return {
        "id": os.urandom(16).hex(),  # peer.apps.history.new_id, without its imports
        "command": " ".join(args.command),
        "cwd": args.cwd if args.cwd is not None else _cwd(),
        "exit": args.exit,
        "duration": duration,
        "timestamp": time.time_ns() - (duration or 0),
        "hostname": os.uname().nodename,  # socket.gethostname(), without importing socket
        "session": args.session,
    }


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed under the shell
        return os.environ.get("PWD", "")


def main(argv: Sequence[str]) -> int | None:
    """Run `history add` on the lean path; None: the store needs the full CLI."""
    args = parse(argv) or full_parser().parse_args(without_command(argv))
    from peer.errors import PeerError, UsageError

    try:
        added = _add(args)
    except PeerError as exc:
        from peer.cli.basics import fail

        return fail(str(exc), 2 if isinstance(exc, UsageError) else 1)
    if added is None:
        return None
    _print(added, args.json)
    return 0


def _add(args: argparse.Namespace | SimpleNamespace) -> dict[str, Any] | None:
    """Hand the entry to the running daemon (`peer.handoff`); with none, or when it
    does not answer that the record is durable, write it here, with the same id."""
    from peer.handoff import hand_off, handoff_path
    from peer.locate import SERVE_FILE, default_home, serving_fields

    root = args.home if args.home else default_home(os.environ)
    entry = entry_of(args)
    serving = serving_fields(root / SERVE_FILE)  # not peer.home: its imports cost
    socket = serving.get("socket") if serving else None
    if isinstance(socket, str) and socket and hand_off(handoff_path(socket), entry):
        return entry
    from peer.home import Home

    return _add_here(Home(root), entry)


def _add_here(home: Home, fields: dict[str, Any]) -> dict[str, Any] | None:
    """Seal, sign and write the entry in this process (`peer.store.direct`)."""
    from peer.apps.direct import add_directly
    from peer.crypto import Author
    from peer.doorbell import doorbell_path, ring
    from peer.relay import CANNOT_WRITE, require_sync_key
    from peer.store import HistoryEntry

    identity = home.load()
    author = Author(identity.signing, require_sync_key(identity.sync, CANNOT_WRITE))
    written = add_directly(home.database, author, HistoryEntry(**fields))
    if written is None:
        return None
    if not written:  # the daemon wrote it: only its answer was lost
        return fields
    serving = home.serving()  # read again: a daemon that died meanwhile is not rung
    if serving is not None and serving.socket:
        ring(doorbell_path(serving.socket))
    return fields


def _print(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import json

        print(json.dumps(entry, sort_keys=True))
    else:
        print(entry["id"])
