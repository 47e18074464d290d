"""Kinds of setting values: what each accepts, and how it says so when refused.

A kind parses a value (a TOML value, or text from the environment or a flag) into the
value a setting holds, or raises `Invalid`; its description completes "must be ...".
The settings (`peer.settings`) check themselves with these, and `peer.config` reads
files, variables and flags with the same ones, so a bound is written once and a
refused value reads the same wherever it came from.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peer.addresses import MAX_PORT, split_address
from peer.errors import UsageError

MIN_SECONDS = 0.01  # below this a duration is a busy loop, not a setting
HOUR, DAY = 3600.0, 86400.0
MAX_SHOWN = 80  # characters of a bad value quoted in a message


class Invalid(ValueError):
    """A value does not fit its kind; the kind's description says what would."""


@dataclass(frozen=True, slots=True)
class Kind:
    """What a setting accepts: `parse(value, from_text)` -> value, or Invalid.
    `from_text` is true for environment variables and flags given as text."""

    expected: str
    parse: Callable[[object, bool], Any]
    expected_text: str = ""  # when text is read more loosely than a TOML value

    def describe(self, from_text: bool) -> str:
        return self.expected_text if from_text and self.expected_text else self.expected

    def refusal(self, value: object, from_text: bool, prefix: str = "") -> str:
        """`<prefix>must be <what this kind accepts>, got <value>`: one line."""
        return f"{prefix}must be {self.describe(from_text)}, got {shown(value)}"


def shown(value: object) -> str:
    """The value as the user wrote it, cut short: a message stays one readable line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    except RecursionError:
        text = "[a value nested too deep to show]"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def _boolean(value: object, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise Invalid


def _number(value: object, from_text: bool) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif from_text and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise Invalid from None
    else:
        raise Invalid
    if not math.isfinite(number):
        raise Invalid
    return number


def _positive(value: object, from_text: bool) -> float:
    number = _number(value, from_text)
    if number <= 0:
        raise Invalid
    return number


def seconds(most: float, span: str) -> Kind:
    """A duration from MIN_SECONDS to `most` seconds (`span` says it in words)."""

    def parse(value: object, from_text: bool) -> float:
        number = _number(value, from_text)
        if not MIN_SECONDS <= number <= most:
            raise Invalid
        return number

    return Kind(f"a number of seconds between {MIN_SECONDS:g} and {most:g} ({span})", parse)


def _fraction(value: object, from_text: bool) -> float:
    number = _number(value, from_text)
    if not 0 <= number < 1:
        raise Invalid
    return number


def integer(low: int, high: int) -> Kind:
    """An integer from `low` to `high`; text must be decimal digits (no 1.0, no 1e3)."""

    def parse(value: object, from_text: bool) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif from_text and isinstance(value, str) and _is_decimal(value.strip().lstrip("+-")):
            try:
                number = int(value)
            except ValueError:  # more than 4300 digits
                raise Invalid from None
        else:
            raise Invalid
        if not low <= number <= high:
            raise Invalid
        return number

    return Kind(f"an integer between {low} and {high}", parse)


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _address(value: object, from_text: bool) -> str:
    if not isinstance(value, str):
        raise Invalid
    try:
        split_address(value)
    except UsageError:
        raise Invalid from None
    return value


def _ip_list(value: object, from_text: bool) -> tuple[str, ...]:
    if from_text and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise Invalid
    for item in value:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise Invalid from None
    return tuple(value)


BOOLEAN = Kind("true or false", _boolean, "one of true/false, yes/no, on/off, 1/0")
UP_TO_AN_HOUR = seconds(HOUR, "1 hour")
UP_TO_A_DAY = seconds(DAY, "1 day")
POSITIVE = Kind("a positive number", _positive)
FRACTION = Kind("a number from 0 up to (not including) 1", _fraction)
ADDRESS = Kind(
    f"HOST:PORT with a port from 0 to {MAX_PORT} (an IPv6 host in brackets: [::1]:7417)",
    _address,
)
IP_LIST = Kind("a list of IP addresses of this machine (empty for all)", _ip_list)
