"""Read input that may be hostile in bounded memory, and never block on a FIFO.

A command's input (a history file, stdin) may be endless (`/dev/zero`), huge (a sparse
file), never written (a FIFO) or one giant line. So every read here is bounded, a
path must name a regular file once symlinks are followed, and a line longer than its
limit is handed on as a marker (None), not as bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from peer.errors import UsageError

SKIP_CHUNK = 1 << 20  # bytes read at a time while skipping the rest of an over-long line

Line = tuple[int, bytes | None]  # (number from 1, the line without its ending | None: too long)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular(path: Path) -> os.stat_result:
    """The stat of `path`, symlinks followed; UsageError unless it is a regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    _require_regular(path, info.st_mode)
    return info


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file. It is checked before it is
    opened (a FIFO is never opened), and opened non-blocking and checked again, so one
    swapped in between cannot block either."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        _require_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb", buffering=SKIP_CHUNK)  # O_NONBLOCK: no effect on its reads


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise UsageError(f"cannot read {path}: it is {kind}, not a regular file")


def read_lines(stream: BinaryIO, limit: int) -> Iterator[Line]:
    """The lines of `stream` without their ending (`\\n` or `\\r\\n`), in memory bounded
    by `limit`: a line longer than `limit` bytes comes as None. Its rest is skipped only
    when the next line is asked for, so a caller that stops there reads no further."""
    number = 0
    while data := stream.readline(limit + 2):
        number += 1
        line = data[:-1] if data.endswith(b"\n") else data
        line = line.removesuffix(b"\r")
        yield number, line if len(line) <= limit else None
        if not data.endswith(b"\n") and len(data) == limit + 2:
            _skip_rest(stream)


def _skip_rest(stream: BinaryIO) -> None:
    """Read past the rest of a line, SKIP_CHUNK bytes at a time; in a file, jump over
    holes rather than read them (they read as NUL bytes, so they hold no line end)."""
    while True:
        _skip_hole(stream)
        rest = stream.readline(SKIP_CHUNK)
        if not rest or rest.endswith(b"\n"):
            return


def _skip_hole(stream: BinaryIO) -> None:
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not backed by a file (io.BytesIO)
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe, a terminal, /dev/zero
        return
    here = stream.tell()
    behind = os.lseek(fd, 0, os.SEEK_CUR)  # where the buffered reader left the fd
    try:
        after = os.lseek(fd, here, os.SEEK_DATA)
    except OSError as exc:  # ENXIO: a hole up to the end; else no SEEK_DATA here
        after = os.lseek(fd, 0, os.SEEK_END) if exc.errno == errno.ENXIO else here
    os.lseek(fd, behind, os.SEEK_SET)  # as the reader expects, until it seeks itself
    if after > here:
        stream.seek(after)


def first_line(stream: BinaryIO, limit: int) -> bytes | None:
    """The first line of `stream` (b"" if it is empty); None if it is longer than
    `limit` bytes, having read at most `limit` + 2 bytes."""
    return next(read_lines(stream, limit), (0, b""))[1]


def read_all(stream: BinaryIO, limit: int) -> bytes | None:
    """Everything `stream` holds, or None as soon as it is more than `limit` bytes."""
    data = stream.read(limit + 1)
    return data if len(data) <= limit else None
