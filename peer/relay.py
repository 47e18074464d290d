"""A relay: a node that holds no sync key.

It stores, verifies and forwards records it can neither read nor write (`peer init
--relay`, or joining through a relay invitation). Whatever needs the key (writing,
the views, showing the key) asks `require_sync_key`, so a relay is refused in one
sentence everywhere, followed by what it therefore cannot do.
"""

from __future__ import annotations

from typing import TypeVar

from peer.errors import UsageError

NO_SYNC_KEY = "this node holds no sync key (a relay)"
CANNOT_WRITE = "it cannot write records"  # what follows "so" when a relay is refused
HAS_NO_VIEWS = "it has no views"

Held = TypeVar("Held")


def require_sync_key(held: Held | None, so: str | None = None) -> Held:
    """`held` (the sync key, or what is made of it: an Author), or UsageError on a
    relay, which has none; `so` says what it cannot do then ("it has no views")."""
    if held is None:
        raise UsageError(NO_SYNC_KEY if so is None else f"{NO_SYNC_KEY}, so {so}")
    return held
