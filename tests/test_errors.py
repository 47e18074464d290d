"""The tree drawn in peer/errors.py's docstring is the tree of classes, in order: a class
added, moved or renamed without redrawing it (Throttled once was) fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator

from peer import errors
from peer.errors import PeerError

DRAWN = re.compile(r"^    (?P<indent>[│├└─ ]*)(?P<name>[A-Z]\w+)\s")


def walk(kind: type[PeerError] = PeerError, depth: int = 0) -> Iterator[tuple[int, str]]:
    """Every class of the tree (depth, name), depth first in the order they are defined."""
    yield depth, kind.__name__
    for sub in kind.__subclasses__():
        if sub.__module__ == errors.__name__:
            yield from walk(sub, depth + 1)


def drawn() -> list[tuple[int, str]]:
    """(depth, name) of each class in the docstring's drawing: four columns a level."""
    found = [DRAWN.match(line) for line in (errors.__doc__ or "").splitlines()]
    return [(len(m["indent"]) // 4, m["name"]) for m in found if m]


def test_the_docstring_draws_every_class_where_it_is_in_the_tree() -> None:
    classes = list(walk())
    assert drawn() == classes
    assert (2, "Throttled") in classes
    assert len(classes) >= 25
