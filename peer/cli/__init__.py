"""The `peer` command line (the `peer` script and `python -m peer.cli`).

main      the parser, built from each group's `register`, and the entry point
common    what every command shares: errors made one line, bounded flags, the home
local     the node's own store: init, id, key, append, tail, status, verify
net       serve, sync, the trust list (peers), invite and join
apps      kv, history and the views (store rebuild)
render    what a person sees: text from elsewhere escaped, status, sync lines
"""

from __future__ import annotations

from peer.cli.main import main

__all__ = ["main"]
