"""The `peer` command line (the `peer` script and `python -m peer.cli`).

main      the parser, built from each group's `register`, and the entry point
basics    what even the lean commands share: one-line mistakes, bounded flags, printing
common    what every command shares: errors made one line, the home, JSON output
quick     `history add` on its lean path (the shell hook, after every command)
local     the node's own store: init, id, key, append, tail, status, verify
net       serve, sync, the trust list (peers), invite and join
apps      kv, history and the views (store rebuild)
picker    the interactive history search (`history search -i`, ctrl-r)
shells    `shell-init`: the hook and key bindings of bash, zsh and fish
render    what a person sees: text from elsewhere escaped, status, sync lines
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The `peer` command: `history add` and `history search -i` (the shell's hook and
    ctrl-r) take their lean paths, the rest the full CLI."""
    from peer.cli import quick

    args = list(sys.argv[1:] if argv is None else argv)
    if quick.handles(args) and (done := quick.main(args)) is not None:
        return done
    from peer.cli import picker, shells

    if picker.handles(args):
        return picker.main(args)
    if shells.handles(args):
        return shells.main(args)
    from peer.cli.main import main as full

    return full(args)


__all__ = ["main"]
