"""The payload body of app records: one compact JSON object with an `op` field.

Pure helpers shared by the kv and history formats. Anything not matching a format
raises Malformed, which the views count and skip (never a crash).
"""

from __future__ import annotations

import json
from typing import Any

# One encoder, made once: `json.dumps` with options builds a new encoder per call,
# which was a third of the cost of importing a large history.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Malformed(ValueError):
    """A payload that decrypts but does not follow its format."""


def dump(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()


def dump_text(value: object) -> str:
    """Compact JSON text of any JSON value (for hashing a canonical form)."""
    return _ENCODER.encode(value)


def load(plaintext: bytes) -> dict[str, Any]:
    """The JSON object of a payload; Malformed if it is anything else."""
    try:
        body = json.loads(plaintext)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed("the payload is not JSON") from exc
    if not isinstance(body, dict):
        raise Malformed("the payload is not a JSON object")
    return body


def text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise Malformed(f"field {name!r} must be text")
    return value


def integer(body: dict[str, Any], name: str, optional: bool = False) -> int | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise Malformed(f"field {name!r} must be a 64-bit integer")
    return value
