"""`peer history search -i`: the full-screen history search that ctrl-r opens.

Drawn on the terminal (/dev/tty), so that the shell widget can read the chosen command
from stdout (`peer shell-init` puts it on the prompt line). Each keystroke asks SQLite
for one screenful (`peer.store.finder`): newest first, one line per distinct command;
ctrl-r switches what is searched (all hosts, this host, this session, this directory).
Enter or tab: the command goes to stdout, exit 0; esc or ctrl-c: nothing, exit 1.
With `--widget` (what the shell widgets pass), a first line says which key chose it:
`run` (enter: the widget runs the command) or `edit` (tab: it only puts it on the
prompt line).

Lean like the shell hook: it starts on a key press, so it reads the store through
`peer.store.direct`, and only a view that is behind (records synced since, with no
daemon to apply them) opens the node the full way to catch it up first.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from peer.cli.basics import Parser, fail, printable
from peer.cli.quick import command_at, without_command

if TYPE_CHECKING:
    from prompt_toolkit.application import Application
    from prompt_toolkit.formatted_text import StyleAndTextTuples

    from peer.home import Home
    from peer.store import HistoryEntry
    from peer.store.direct import Direct
    from peer.store.finder import Scope

MODES = ("all", "host", "session", "directory")
MODE_TITLES = {
    "all": "all hosts",
    "host": "this host",
    "session": "this session",
    "directory": "this directory",
}
NOTHING_CHOSEN = 1
Picked = tuple["HistoryEntry", bool]  # the entry chosen; whether to run it (enter)
CHROME_ROWS = 2  # the status line and the query line


def handles(argv: Sequence[str]) -> bool:
    """Whether `argv` is `[--home DIR] [--debug] history search ... -i ...`."""
    rest = list(argv[command_at(argv) :])
    options = set(rest[2 : rest.index("--") if "--" in rest else len(rest)])
    return (
        rest[:2] == ["history", "search"]
        and bool({"-i", "--interactive"} & options)
        and not {"-h", "--help"} & options
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The interactive flags of `history search` (here and in `peer.cli.apps`)."""
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="full-screen search (what ctrl-r opens)"
    )
    parser.add_argument("--mode", choices=MODES, default="all", help="what -i searches first")
    parser.add_argument(
        "--session", help="this shell session, for --mode session (default: $PEER_SESSION)"
    )
    parser.add_argument("--cwd", help="this directory, for --mode directory (default: here)")
    parser.add_argument(
        "--widget",
        action="store_true",
        help="for shell widgets: print `run` (enter) or `edit` (tab) on a line before it",
    )


def _parser() -> Parser:
    parser = Parser(prog="peer history search")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the chosen entry as JSON")
    parser.add_argument("query", nargs="?", default="", help="what to start with")
    parser.add_argument("--limit", type=int, help="(ignored with -i: a screenful)")
    add_arguments(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    """`peer history search -i` on the lean path."""
    args = _parser().parse_args(without_command(argv))
    import asyncio

    from peer.errors import PeerError, UsageError

    try:
        return asyncio.run(pick(args))
    except UsageError as exc:
        return fail(str(exc), 2)
    except PeerError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return NOTHING_CHOSEN


async def pick(args: argparse.Namespace) -> int:
    """Open the search; print the chosen command (or entry, with --json)."""
    from peer.home import Home
    from peer.locate import default_home

    home = Home(args.home if args.home else default_home(os.environ))
    direct = await _open_caught_up(home)
    with direct, _terminal() as tty:
        here = Here(
            os.uname().nodename,
            args.session if args.session is not None else os.environ.get("PEER_SESSION", ""),
            args.cwd if args.cwd is not None else _cwd(),
        )
        search = Search(direct, here, MODES.index(args.mode), args.widget)
        picked = await search.application(tty, args.query or "").run_async()
    if picked is None:
        return NOTHING_CHOSEN
    chosen, run = picked
    if args.widget:
        print("run" if run else "edit")
    if args.json:
        import json

        print(json.dumps(chosen.as_json(), sort_keys=True))
    else:
        print(chosen.command)
    return 0


async def _open_caught_up(home: Home) -> Direct:
    """The store for reading, its views caught up (the full way, only if behind)."""
    from peer.errors import NotInitialized, StoreError
    from peer.relay import HAS_NO_VIEWS, require_sync_key
    from peer.store.direct import Direct

    if not home.exists():
        raise NotInitialized(f"no peer identity in {home.root}: run `peer init` first")
    if not home.sync_key.exists():  # a relay (its key, if damaged, is refused by a read)
        require_sync_key(None, HAS_NO_VIEWS)
    direct = Direct.open(home.database)
    if direct is not None and not direct.views_behind(("history",)):
        return direct
    if direct is not None:
        direct.close()
    from peer.node import Node

    async with await Node.open(home) as node:
        await node.views.catch_up(required=True)
    direct = Direct.open(home.database)
    if direct is None:  # the node opened it, so created and migrated it: not expected
        raise StoreError(f"could not open the store {home.database} after catching up")
    return direct


@contextmanager
def _terminal() -> Iterator[tuple[TextIO, TextIO]]:
    """The controlling terminal, for keys and drawing (stdout is for the result)."""
    from peer.errors import UsageError

    with ExitStack() as stack:
        try:
            keys = stack.enter_context(open("/dev/tty"))
            screen = stack.enter_context(open("/dev/tty", "w"))
        except OSError as exc:
            raise UsageError(
                f"the interactive search needs a terminal (/dev/tty: {exc.strerror or exc})"
            ) from exc
        yield keys, screen


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return os.environ.get("PWD", "")


@dataclass(frozen=True, slots=True)
class Here:
    """Where the search was opened: what the narrower modes keep."""

    hostname: str
    session: str
    cwd: str

    def scope(self, mode: str) -> Scope:
        from peer.store.finder import Scope

        if mode == "host":
            return Scope(hostname=self.hostname)
        if mode == "session":
            return Scope(hostname=self.hostname, session=self.session)
        if mode == "directory":
            return Scope(cwd=self.cwd)
        return Scope()


class Search:
    """The state of one search: the mode, the lines shown, the one selected."""

    def __init__(self, direct: Direct, here: Here, mode: int = 0, widget: bool = False) -> None:
        self.direct = direct
        self.widget = widget  # enter runs the command, tab puts it on the line
        self.here = here
        self.mode = mode
        self.found: list[HistoryEntry] = []
        self.selected = 0  # 0: the newest, drawn at the bottom, next to the query
        self.rows = 24
        self.text = ""

    def refresh(self, text: str) -> None:
        """Search again (after a keystroke or a mode switch)."""
        self.text = text
        scope = self.here.scope(MODES[self.mode])
        self.found = self.direct.history_find(text, scope, max(self.rows - CHROME_ROWS, 1))
        self.selected = 0

    def move(self, older: int) -> None:
        self.selected = max(0, min(self.selected + older, len(self.found) - 1))

    def lines(self, width: int, rows: int) -> StyleAndTextTuples:
        """The results, oldest at the top, the selected one marked (searched again if
        the terminal's height changed)."""
        if rows != self.rows:
            self.rows = rows
            self.refresh(self.text)
        out: StyleAndTextTuples = []
        blank = max(self.rows - CHROME_ROWS - len(self.found), 0)
        out.extend(("", "\n") for _ in range(blank))
        now = time.time_ns()
        for index in reversed(range(len(self.found))):
            mine = index == self.selected
            out.extend(self._line(self.found[index], now, width, mine))
            out.append(("", "\n"))
        return out

    def _line(self, e: HistoryEntry, now: int, width: int, mine: bool) -> StyleAndTextTuples:
        base = "class:selected" if mine else ""
        parts: StyleAndTextTuples = [
            (base, "> " if mine else "  "),
            (f"{base} class:ago", f"{ago(now - e.timestamp):>4} "),
            (f"{base} class:duration", f"{duration(e.duration):>6} "),
        ]
        if e.exit not in (None, 0):
            parts.append((f"{base} class:failed", f"exit {e.exit} "))
        if e.hostname != self.here.hostname:
            parts.append((f"{base} class:host", f"{printable(e.hostname, 24)} "))
        used = sum(len(part[1]) for part in parts)
        parts.append((base, printable(e.command, max(width - used - 1, 8))))
        return parts

    def status(self) -> str:
        title = MODE_TITLES[MODES[self.mode]]
        keys = "enter: run   tab: edit" if self.widget else "enter/tab: choose"
        return f" [{title}] {len(self.found)} shown   ctrl-r: mode   {keys}   esc: leave"

    def application(self, tty: tuple[TextIO, TextIO], query: str) -> Application[Picked | None]:
        """The full-screen application on `tty`, starting with `query` typed."""
        return build_application(self, tty, query)


def build_application(
    search: Search, tty: tuple[TextIO, TextIO], query: str
) -> Application[Picked | None]:
    from prompt_toolkit.application import Application
    from prompt_toolkit.buffer import Buffer
    from prompt_toolkit.document import Document
    from prompt_toolkit.input import create_input
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
    from prompt_toolkit.layout import HSplit, Layout, Window
    from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
    from prompt_toolkit.output import create_output
    from prompt_toolkit.styles import Style

    keys_in, screen = tty
    output = create_output(stdout=screen)
    search.rows = output.get_size().rows
    buffer = Buffer(multiline=False, document=Document(query, len(query)))
    search.refresh(query)
    buffer.on_text_changed += lambda b: search.refresh(b.text)
    keys = KeyBindings()

    @keys.add("up")
    @keys.add("c-p")
    def _older(event: KeyPressEvent) -> None:
        search.move(+1)

    @keys.add("down")
    @keys.add("c-n")
    def _newer(event: KeyPressEvent) -> None:
        search.move(-1)

    @keys.add("enter")
    def _run(event: KeyPressEvent) -> None:
        found = search.found
        event.app.exit(result=(found[search.selected], True) if found else None)

    @keys.add("tab")
    def _edit(event: KeyPressEvent) -> None:
        found = search.found
        event.app.exit(result=(found[search.selected], False) if found else None)

    @keys.add("escape", eager=True)
    @keys.add("c-c")
    @keys.add("c-g")
    def _leave(event: KeyPressEvent) -> None:
        event.app.exit(result=None)

    @keys.add("c-r")
    def _mode(event: KeyPressEvent) -> None:
        search.mode = (search.mode + 1) % len(MODES)
        search.refresh(buffer.text)

    def lines() -> StyleAndTextTuples:
        size = output.get_size()
        return search.lines(size.columns, size.rows)

    results = FormattedTextControl(lines)
    layout = Layout(
        HSplit(
            [
                Window(results, wrap_lines=False),
                Window(FormattedTextControl(search.status), height=1, style="class:status"),
                Window(BufferControl(buffer), height=1, get_line_prefix=lambda *_: "> "),
            ]
        )
    )
    style = Style.from_dict(
        {
            "selected": "reverse",
            "failed": "fg:ansired",
            "host": "fg:ansicyan",
            "ago": "fg:ansibrightblack",
            "status": "reverse",
        }
    )
    app: Application[Picked | None] = Application(
        layout=layout,
        key_bindings=keys,
        style=style,
        full_screen=True,
        input=create_input(stdin=keys_in),
        output=output,
    )
    app.ttimeoutlen = 0.05  # esc alone leaves at once, not after half a second
    return app


def ago(ns: int) -> str:
    """How long ago, in one short unit: `12s`, `5m`, `3h`, `2d`, `7w`."""
    seconds = max(ns, 0) // 10**9
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(ns: int | None) -> str:
    """How long a command ran: `-` (unknown), `850ms`, `3.2s`, `4m10s`, `2h05m`."""
    if ns is None:
        return "-"
    ms = ns // 10**6
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
