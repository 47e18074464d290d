"""Node names: at most MAX_NAME printable characters, whoever gave them.

A name the user gives (`peer init --name`, `peer peers add --name`) that breaks the
rule is refused (`check_name`); a name received from another node (pairing, a LAN
announcement) is cleaned and kept (`clean_name`): a hostile peer must not be able to
write terminal escapes or megabytes into our trust list, nor to fail a pairing.
"""

from __future__ import annotations

from itertools import islice

from peer.errors import UsageError

MAX_NAME = 64  # characters


def clean_name(text: str) -> str:
    """A name received from elsewhere, safe to store and print: whitespace made spaces,
    other non-printable characters (controls, escapes, bidi overrides) dropped, cut to
    MAX_NAME characters (reading stops once that many are kept)."""
    kept = (" " if c.isspace() else c for c in text)
    return "".join(islice((c for c in kept if c.isprintable()), MAX_NAME)).strip()


def check_name(text: str) -> str:
    """A name the user gave, unchanged; UsageError if it is too long or not printable."""
    if len(text) > MAX_NAME:
        raise UsageError(f"a node name is at most {MAX_NAME} characters, not {len(text):,}")
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        raise UsageError(f"a node name is printable text: it holds {bad!r}")
    return text
