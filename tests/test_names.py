"""Text from elsewhere on a terminal (`peer.cli.render.printable`) and node names
(`peer.names`): escapes shown, never sent; names bounded to 64 characters."""

from __future__ import annotations

import pytest

from peer.cli.render import node_name, printable
from peer.errors import UsageError
from peer.names import MAX_NAME, check_name, clean_name

HOSTILE = "\x1b[2J\x1b]0;title\x07\r\n FAKE line\t\x7f\x9b1m\u202eend"


def test_printable_writes_every_control_as_its_escape_on_one_line() -> None:
    shown = printable(HOSTILE)
    assert shown == r"\x1b[2J\x1b]0;title\x07\r\n FAKE line\t\x7f\x9b1m\u202eend"
    assert shown.isprintable()


def test_printable_keeps_printable_text_as_it_is_and_cuts_at_the_limit() -> None:
    text = r"grep -r 'ünïcode ✓ 日本' C:\path\n"  # backslashes are text, not escapes
    assert printable(text) == text
    assert printable("a" * 70, 64) == "a" * 64 + "…"
    assert printable("a" * 64, 64) == "a" * 64
    assert node_name("\x1b" * 100) == r"\x1b" * MAX_NAME + "…"


def test_a_received_name_is_cleaned_and_bounded_never_refused() -> None:
    assert clean_name(HOSTILE) == "[2J]0;title   FAKE line 1mend"
    assert clean_name("x" * 3_000_000) == "x" * MAX_NAME
    assert clean_name("\x00" * 1000 + "phone") == "phone"
    assert clean_name("  laptop  ") == "laptop"


def test_a_name_the_user_gives_is_refused_if_too_long_or_not_printable() -> None:
    assert check_name("my laptop ✓") == "my laptop ✓"
    assert check_name("") == ""
    with pytest.raises(UsageError, match="a node name is at most 64 characters, not 65"):
        check_name("n" * 65)
    with pytest.raises(UsageError, match=r"a node name is printable text: it holds '\\x1b'"):
        check_name("a\x1bb")
