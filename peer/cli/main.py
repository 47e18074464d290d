"""The `peer` command line: parse, call one library function, print, map errors.

Each group of commands registers itself (`local`: the node's own store; `net`: serving,
syncing, the trust list and pairing; `apps`: kv, history and the views). Heavy modules
are imported inside the commands, so that short commands (a shell hook) start fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from peer.cli import apps, devices, local, net, shells
from peer.cli.basics import Parser, fail
from peer.cli.common import run


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # refused handshakes are not news
    args = build_parser().parse_args(argv)
    if not hasattr(args, "handler"):
        return fail("a command is required (see `peer --help`)", 2)
    return run(args.handler, args)


def build_parser() -> Parser:
    parser = Parser(prog="peer", description="Serverless, end-to-end encrypted log sync.")
    parser.add_argument("--home", type=Path, help="node home directory (default: $PEER_HOME)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    local.register(commands)
    net.register(commands)
    apps.register(commands)
    shells.register(commands)
    devices.register(commands)
    return parser
