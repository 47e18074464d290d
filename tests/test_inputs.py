"""Reading input that may be hostile (`peer.inputs`): lines read in bounded memory are
exactly the lines a plain split gives, holes of sparse files included; only regular
files are opened, and a FIFO is refused without blocking."""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import pytest

from peer.errors import UsageError
from peer.inputs import check_regular, first_line, open_regular, read_all, read_lines


def split_lines(data: bytes, limit: int) -> list[tuple[int, bytes | None]]:
    """The reference: split on newlines, drop one CR, None for lines over `limit`."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    stripped = [line.removesuffix(b"\r") for line in lines]
    return [(n, line if len(line) <= limit else None) for n, line in enumerate(stripped, 1)]


def random_file(path: Path, rng: random.Random) -> None:
    """Runs of text (some lines long) and holes (sparse NUL runs), in random order."""
    with path.open("wb") as f:
        end = 0
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.4:
                end += rng.choice([1, 10, 5000, 3 << 20])
                f.seek(end)
            else:
                run = bytes(rng.choice(b"\n\r") if rng.random() < 0.05 else 97 for _ in range(300))
                run *= rng.choice([1, 1, 1000])
                f.write(run)
                end += len(run)
        f.truncate(end)


def test_bounded_lines_are_the_lines_of_a_plain_split(tmp_path: Path) -> None:
    rng = random.Random(18)
    path = tmp_path / "file"
    for _ in range(60):
        random_file(path, rng)
        limit = rng.choice([5, 1000, 70_000])
        expected = split_lines(path.read_bytes(), limit)
        with open_regular(path) as stream:
            assert list(read_lines(stream, limit)) == expected
        with path.open("rb", buffering=rng.choice([4096, 8192])) as stream:
            assert list(read_lines(stream, limit)) == expected
        assert list(read_lines(io.BytesIO(path.read_bytes()), limit)) == expected


def test_a_line_that_runs_through_a_hole_is_one_line_too_long(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with path.open("wb") as f:
        f.write(b"first\n")
        f.seek(1 << 30)  # a GiB of hole (NUL bytes, no line end), jumped over where it can be
        f.write(b"x\nlast\n")
    with open_regular(path) as stream:
        assert list(read_lines(stream, 100)) == [(1, b"first"), (2, None), (3, b"last")]


def test_one_line_and_everything_are_read_only_up_to_their_limit() -> None:
    with open("/dev/zero", "rb") as endless:
        assert first_line(endless, 4096) is None
        assert read_all(endless, 1 << 20) is None
    assert first_line(io.BytesIO(b"key\nmore"), 10) == b"key"
    assert first_line(io.BytesIO(b""), 10) == b""
    assert read_all(io.BytesIO(b"1234"), 4) == b"1234"
    assert read_all(io.BytesIO(b"12345"), 4) is None


def test_only_regular_files_are_opened_and_a_fifo_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    kinds = {fifo: "a FIFO (named pipe)", zero: "a character device", tmp_path: "a directory"}
    for path, kind in kinds.items():
        with pytest.raises(UsageError, match=re.escape(f"it is {kind}, not a regular file")):
            open_regular(path)
        with pytest.raises(UsageError, match="not a regular file"):
            check_regular(path)
    with pytest.raises(UsageError, match="No such file"):
        open_regular(tmp_path / "missing")
    real = tmp_path / "real"
    real.write_bytes(b"a\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    with open_regular(link) as stream:
        assert stream.read() == b"a\n"
