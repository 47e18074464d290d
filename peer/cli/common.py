"""What every command of the CLI shares: the parser's one-line mistakes, running a
command with every error made one line and an exit code (1 for a failure, 2 for a usage
mistake; no traceback unless `--debug`), bounded number flags, the home, JSON output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from peer.cli.basics import fail

if TYPE_CHECKING:
    from peer.home import Home
    from peer.node import Node

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
MAX_LIMIT = 1_000_000_000  # records or entries shown; SQLite's integers end at 2**63


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one command, turning every error into one line and an exit code."""
    from peer.errors import PeerError, UsageError

    try:
        return asyncio.run(handler(args))
    except UsageError as exc:
        return fail(str(exc), 2)
    except PeerError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except Exception as exc:
        if args.debug:
            raise
        return fail(f"unexpected failure: {exc} (run with --debug for details)", 1)


def say(kind: str, lines: Sequence[str]) -> None:
    """One stderr line per note or warning: `peer: warning: ...`."""
    for line in lines:
        sys.stderr.write(f"peer: {kind}: {line}\n")


def command(commands: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=handler)
    return sub


def home_of(args: argparse.Namespace) -> Home:
    from peer.home import Home
    from peer.locate import default_home

    return Home(args.home if args.home else default_home(os.environ))


@asynccontextmanager
async def open_node(args: argparse.Namespace, *, serving: bool = False) -> AsyncIterator[Node]:
    """The node of `--home`, closed when the command is done with it. Every commit of
    records is told to the home's daemon (`tell_daemon`), unless this is the daemon."""
    from peer.node import Node

    async with await Node.open(home_of(args)) as node:
        if not serving:
            home = node.home
            node.store.on_change(lambda: tell_daemon(home))
        yield node


def tell_daemon(home: Home) -> None:
    """Tell the home's running daemon, if one runs, that this process wrote to its store,
    so that it publishes the records at once rather than at its next poll. Costs a file
    read and a datagram; never waits, never fails (no daemon: nothing is sent)."""
    from peer.watch import doorbell_path, ring

    serving = home.serving()
    if serving is not None and serving.socket:
        ring(doorbell_path(serving.socket))


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
