"""What every command needs, the lean ones too (`peer.cli.quick`, the shell hook): the
parser's one-line mistakes, bounded number flags, text made safe to print, one-line
failures. Standard library only: a shell hook imports this and little else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"peer: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


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


def printable(text: str, limit: int | None = None) -> str:
    """`text` safe to print on a terminal, on one line: every non-printable character
    (C0 and C1 controls, DEL, bidi overrides, line separators) written as its escape
    (`\\x1b`, `\\n`, `\\u202e`); cut at `limit` characters with "…" if longer."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def fail(message: str, code: int) -> int:
    sys.stderr.write(f"peer: {printable(message)}\n")  # it may quote remote text
    return code
