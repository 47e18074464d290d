"""Parse shell histories for `peer history import`: bash, zsh, fish and atuin.

The parsers are pure (numbered lines in, commands and problems out): a line that does
not follow its format, is longer than LINE_LIMIT, or holds a command too big for one
record is reported with its line number and skipped, the rest imported. The file is
read line by line in bounded memory (`peer.inputs`), so its size costs no memory.
`to_entries` gives every command a deterministic id built from what identifies it
(format, hostname, timestamp, command, and which occurrence of that pair in the file
it is), so importing the same file again, or a longer version of it, adds only the
commands not imported before.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peer.apps.history import MAX_COMMAND, SURELY_FITS, import_id, too_big
from peer.errors import UsageError
from peer.inputs import Line, open_regular, read_lines
from peer.store import HistoryEntry
from peer.store.atuin import AtuinRow, read_atuin

FORMATS = ("bash", "zsh", "fish", "atuin")
NS = 1_000_000_000
MAX_SECONDS = (2**63 - 1) // NS
LINE_LIMIT = MAX_COMMAND  # bytes: any line of a real history is far shorter
_HOSTNAME_BOUND = "x" * 255  # no hostname is longer (for checking a command's size early)
_SURELY_FITS = SURELY_FITS - len(_HOSTNAME_BOUND) - 32  # less the hostname and the id
_BASH_STAMP = re.compile(rb"#(\d+)\s*")
_ZSH_LINE = re.compile(r": *(\d+):(\d+);(.*)", re.DOTALL)
_ZSH_META = 0x83


@dataclass(frozen=True, slots=True)
class Command:
    """One command read from a history file (times in ns; None when the file has none)."""

    line: int
    command: str
    timestamp: int | None = None
    duration: int | None = None
    cwd: str = ""
    exit: int | None = None
    session: str = ""
    hostname: str | None = None
    source_id: str | None = None  # the id the source gave it (atuin)


@dataclass(frozen=True, slots=True)
class Problem:
    """A line (or atuin row) that was skipped, and why."""

    line: int
    reason: str


@dataclass(slots=True)
class Parsed:
    """What a history file holds: the commands, and the lines that were skipped."""

    commands: list[Command] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    deleted: int = 0  # entries the source marks deleted (atuin), not imported


def guess_format(path: Path) -> str:
    """The format a file's name suggests (bash when nothing does)."""
    name = path.name.lower()
    for fmt, hint in (("atuin", ".db"), ("fish", "fish"), ("zsh", "zsh")):
        if hint in name:
            return fmt
    return "bash"


def load(path: Path, fmt: str) -> Parsed:
    """Read and parse a history file; UsageError if it cannot be read at all (missing,
    or not a regular file: a FIFO, a device or a directory)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown history format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "atuin":
        return _fitting(parse_atuin(read_atuin(path)))
    parse = {"bash": parse_bash, "zsh": parse_zsh, "fish": parse_fish}[fmt]
    try:
        with open_regular(path) as stream:
            return _fitting(parse(read_lines(stream, LINE_LIMIT)))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def lines_of(data: bytes) -> Iterator[Line]:
    """The numbered lines of a history held in memory, as `load` reads a file."""
    return read_lines(io.BytesIO(data), LINE_LIMIT)


def _fitting(parsed: Parsed) -> Parsed:
    """`parsed` without the commands too big for one history record (reported)."""
    kept: list[Command] = []
    for c in parsed.commands:
        if len(c.command) + len(c.cwd) + len(c.session) <= _SURELY_FITS:
            kept.append(c)
            continue
        probe = HistoryEntry(
            "0" * 32, c.command, c.cwd, -(2**63), -(2**63), -(2**63), _HOSTNAME_BOUND, c.session
        )
        reason = too_big(probe)
        if reason is None:
            kept.append(c)
        else:
            parsed.problems.append(Problem(c.line, reason))
    parsed.commands = kept
    parsed.problems.sort(key=lambda p: p.line)
    return parsed


def _too_long(number: int, parsed: Parsed) -> None:
    parsed.problems.append(Problem(number, f"longer than {LINE_LIMIT:,} bytes"))


def _command_too_long(number: int, parsed: Parsed) -> None:
    parsed.problems.append(Problem(number, f"a command longer than {LINE_LIMIT:,} bytes"))


def _text(raw: bytes, number: int, parsed: Parsed) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        parsed.problems.append(Problem(number, "not valid UTF-8"))
        return None


def _seconds(text: bytes | str, number: int, parsed: Parsed) -> int | None:
    value = int(text)
    if value > MAX_SECONDS:
        parsed.problems.append(Problem(number, f"timestamp {value} is out of range"))
        return None
    return value * NS


# -- bash --------------------------------------------------------------------------


def parse_bash(lines: Iterable[Line]) -> Parsed:
    """One command per line; with HISTTIMEFORMAT, `#SECONDS` lines stamp what follows
    (and a command then runs until the next stamp, so multi-line commands stay whole).
    Once a stamp is seen, every `#SECONDS` line is one (before, there were none). A
    stamped command with a line too long, or longer than LINE_LIMIT in all, is dropped."""
    parsed = Parsed()
    stamp: tuple[int, int | None] | None = None  # (line number, timestamp) of a stamp
    body: list[str] = []
    size = 0  # bytes in `body`
    broken = False  # the stamped command is dropped (reported already)
    for number, raw in lines:
        if raw is None:
            _too_long(number, parsed)
            broken, body = stamp is not None, []
            continue
        match = _BASH_STAMP.fullmatch(raw)
        if match:
            _flush_bash(stamp, body, broken, parsed)
            stamp, body, size, broken = (number, _seconds(match[1], number, parsed)), [], 0, False
            continue
        text = _text(raw, number, parsed)
        if text is None or not text.strip():
            continue
        if stamp is None:
            parsed.commands.append(Command(number, text))
        elif not broken:
            size += len(raw) + 1
            if size > LINE_LIMIT:
                _command_too_long(stamp[0] + 1, parsed)
                broken, body = True, []
            else:
                body.append(text)
    _flush_bash(stamp, body, broken, parsed)
    return parsed


def _flush_bash(
    stamp: tuple[int, int | None] | None, body: list[str], broken: bool, parsed: Parsed
) -> None:
    if stamp is None or broken:
        return
    number, timestamp = stamp
    if not body:
        parsed.problems.append(Problem(number, "a timestamp line with no command after it"))
    elif timestamp is not None:
        parsed.commands.append(Command(number + 1, "\n".join(body), timestamp))


# -- zsh ---------------------------------------------------------------------------


def parse_zsh(lines: Iterable[Line]) -> Parsed:
    """Extended history: `: START:DURATION;COMMAND`, a trailing backslash continuing
    the command on the next line; non-ASCII text may be "metafied" by zsh. A command
    longer than LINE_LIMIT in all is dropped; after a line too long, the next line
    starts afresh (whether that line continued cannot be told)."""
    parsed = Parsed()
    first = 0  # the line the command being read starts on
    parts: list[bytes] = []
    size = 0  # bytes in `parts`
    dropping = False  # the command being read is too long: pass over its continuation
    for number, raw in lines:
        if raw is None:
            _too_long(number, parsed)
            parts, size, dropping = [], 0, False
            continue
        if not parts and not dropping:
            first = number
        continued = raw.endswith(b"\\")
        if not dropping:
            size += len(raw)
            if size > LINE_LIMIT:
                _command_too_long(first, parsed)
                parts, dropping = [], True
            else:
                parts.append(raw[:-1] if continued else raw)
        if continued:
            continue
        if parts:
            _zsh_line(b"\n".join(parts), first, parsed)
        parts, size, dropping = [], 0, False
    if parts:  # the last line ends in a backslash
        parts[-1] += b"\\"
        _zsh_line(b"\n".join(parts), first, parsed)
    return parsed


def _zsh_line(raw: bytes, number: int, parsed: Parsed) -> None:
    text = _zsh_text(raw, number, parsed)
    if text is not None:
        _zsh_command(text, number, parsed)


def _zsh_command(text: str, number: int, parsed: Parsed) -> None:
    match = _ZSH_LINE.fullmatch(text)
    if match is None:
        parsed.problems.append(Problem(number, "not a zsh extended history line"))
        return
    start = _seconds(match[1], number, parsed)
    if start is not None:
        duration = min(int(match[2]), MAX_SECONDS) * NS
        parsed.commands.append(Command(number, match[3], start, duration))


def _zsh_text(raw: bytes, number: int, parsed: Parsed) -> str | None:
    if _ZSH_META in raw:
        try:
            return unmetafy(raw).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _text(raw, number, parsed)


def unmetafy(raw: bytes) -> bytes:
    """Undo zsh's encoding of special bytes: 0x83 then (byte XOR 32)."""
    out = bytearray()
    meta = False
    for byte in raw:
        if meta:
            out.append(byte ^ 32)
            meta = False
        elif byte == _ZSH_META:
            meta = True
        else:
            out.append(byte)
    return bytes(out)


# -- fish --------------------------------------------------------------------------


def parse_fish(lines: Iterable[Line]) -> Parsed:
    """fish_history: `- cmd: COMMAND` then `  when: SECONDS` and `  paths:` items. After
    a `- cmd:` line that is too long, its `when` and `paths` lines are passed over."""
    parsed = Parsed()
    current: tuple[int, str] | None = None  # (line number, command) awaiting its `when`
    when: int | None = None
    dropped = False  # the entry being read had a line too long: skip to the next `- cmd:`
    for number, raw in lines:
        if raw is None:
            _too_long(number, parsed)
            _flush_fish(current, when, parsed)
            current, when, dropped = None, None, True
            continue
        text = _text(raw, number, parsed)
        if text is None:
            continue
        if text.startswith("- cmd:"):
            _flush_fish(current, when, parsed)
            current, when, dropped = (number, fish_unescape(text[6:].strip())), None, False
        elif text.startswith("  when:") and current is not None:
            when = _fish_when(text[7:].strip(), number, parsed)
        elif not _fish_nothing(text, dropped):
            parsed.problems.append(Problem(number, "not a fish history line"))
    _flush_fish(current, when, parsed)
    return parsed


def _fish_nothing(text: str, dropped: bool) -> bool:
    """A line with nothing to read: blank, `paths` items, or the `when` of a dropped entry."""
    return (
        not text.strip()
        or text.startswith(("  paths:", "    - "))
        or (dropped and text.startswith("  when:"))
    )


def _fish_when(text: str, number: int, parsed: Parsed) -> int | None:
    if not text.isdigit():
        parsed.problems.append(Problem(number, f"when {text!r} is not a number of seconds"))
        return None
    return _seconds(text, number, parsed)


def _flush_fish(current: tuple[int, str] | None, when: int | None, parsed: Parsed) -> None:
    if current is not None:
        parsed.commands.append(Command(current[0], current[1], when))


def fish_unescape(text: str) -> str:
    """fish writes a newline as `\\n` and a backslash as `\\\\`."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


# -- atuin -------------------------------------------------------------------------


def parse_atuin(rows: Sequence[AtuinRow]) -> Parsed:
    """Rows of atuin's `history` table (ns times); its deleted rows are left out."""
    parsed = Parsed()
    for number, row in enumerate(rows, 1):
        if row[-1] is not None:  # deleted_at
            parsed.deleted += 1
            continue
        read = _atuin_command(number, row)
        if isinstance(read, Problem):
            parsed.problems.append(read)
        else:
            parsed.commands.append(read)
    return parsed


def _atuin_command(number: int, row: AtuinRow) -> Command | Problem:
    source_id, timestamp, duration, code, command, cwd, session, hostname, _ = row
    if not (
        isinstance(source_id, str)
        and isinstance(command, str)
        and isinstance(cwd, str)
        and isinstance(session, str)
        and isinstance(hostname, str)
        and type(timestamp) is int
        and type(duration) is int
        and type(code) is int
    ):
        return Problem(number, "an atuin row with missing or mistyped fields")
    if not 0 <= timestamp < 2**63:
        return Problem(number, f"timestamp {timestamp} is out of range")
    length = duration if 0 <= duration < 2**63 else None
    return Command(number, command, timestamp, length, cwd, code, session, hostname, source_id)


# -- entries -----------------------------------------------------------------------


def to_entries(
    commands: Sequence[Command], fmt: str, hostname: str, mtime_ns: int
) -> list[HistoryEntry]:
    """History entries with deterministic ids; commands with no time are placed just
    before the file's modification time, 1 ms apart, in file order."""
    seen: dict[tuple[int | None, str], int] = {}
    entries: list[HistoryEntry] = []
    for position, c in enumerate(commands):
        host = c.hostname if c.hostname is not None else hostname
        occurrence = seen.get((c.timestamp, c.command), 0)
        seen[(c.timestamp, c.command)] = occurrence + 1
        if c.source_id is not None:
            source: list[object] = ["atuin", c.source_id]
        else:
            source = [fmt, host, c.timestamp, c.command, occurrence]
        timestamp = c.timestamp
        if timestamp is None:
            timestamp = max(mtime_ns - (len(commands) - 1 - position) * 1_000_000, 0)
        entry_id = import_id(source)
        entries.append(
            HistoryEntry(entry_id, c.command, c.cwd, c.exit, c.duration, timestamp, host, c.session)
        )
    return entries
