"""The settings of a node, built and validated once, in one place.

Each setting comes from the first of these that gives it:

    flags        `overrides` by dotted key ("listen", "sync.interval"); None means not given
    environment  PEER_LISTEN, PEER_SYNC_INTERVAL, PEER_DISCOVERY, PEER_LIMITS_RATE, ...
    file         HOME/config.toml (`config_template()` documents every key)
    defaults     the field defaults of the dataclasses below

A bad value stops the start with one line naming where it came from and what is
expected (`config.toml: sync.interval must be a number of seconds between 0.01 and 86400
(1 day), got "abc"`); unknown keys are errors too, with the nearest known key suggested.
Durations and counts are bounded on both sides, and the file in size and nesting, so no
value (1e308, arrays nested 100,000 deep, a 1 GB file) reaches the daemon or fails
later as an unexpected error. Nothing downstream reads the environment: it gets a
frozen `Config`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from peer.addresses import DEFAULT_LISTEN, MAX_PORT, is_loopback, split_address
from peer.errors import ConfigError, UsageError
from peer.home import Home
from peer.identity import parse_node_id

ENV_PREFIX = "PEER_"
DEFAULT_SOURCE = "the default"
ENV_NOT_SETTINGS = frozenset({"PEER_HOME"})  # chooses the home, so it is read before this
MAX_FILE_BYTES = 1 << 20  # a config file holds a few settings; more is the wrong file
MAX_SHOWN = 80  # characters of a bad value quoted in a message
MIN_SECONDS = 0.01  # below this a duration is a busy loop, not a setting
HOUR, DAY = 3600.0, 86400.0


@dataclass(frozen=True, slots=True)
class SyncConfig:
    auto: bool = True
    interval: float = 60.0
    jitter: float = 0.1
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    batch: int = 1000
    live: bool = True
    keepalive: float = 30.0
    keepalive_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    enabled: bool = True
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    streams_per_caller: int = 8
    max_batch: int = 2048
    subscriber_queue: int = 64
    rate: float = 50.0
    burst: int = 200


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A peer pinned at start (added to the trust list), from `[[peers]]`."""

    node_id: bytes
    address: str | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    listen: str = DEFAULT_LISTEN
    insecure: bool = False
    sync: SyncConfig = field(default_factory=SyncConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    peers: tuple[PeerEntry, ...] = ()


# -- kinds of values ----------------------------------------------------------------------


class _Invalid(ValueError):
    """A value does not fit its kind; the kind's description says what would."""


@dataclass(frozen=True, slots=True)
class Kind:
    """What a setting accepts: `parse(value, from_text)` -> value, or _Invalid.
    `from_text` is true for environment variables and flags given as text."""

    expected: str
    parse: Callable[[object, bool], Any]
    expected_text: str = ""  # when text is read more loosely than a TOML value

    def describe(self, from_text: bool) -> str:
        return self.expected_text if from_text and self.expected_text else self.expected


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def _boolean(value: object, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise _Invalid


def _number(value: object, from_text: bool) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif from_text and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _Invalid from None
    else:
        raise _Invalid
    if not math.isfinite(number):
        raise _Invalid
    return number


def _positive(value: object, from_text: bool) -> float:
    number = _number(value, from_text)
    if number <= 0:
        raise _Invalid
    return number


def _seconds(most: float, span: str) -> Kind:
    """A duration from MIN_SECONDS to `most` seconds (`span` says it in words)."""

    def parse(value: object, from_text: bool) -> float:
        number = _number(value, from_text)
        if not MIN_SECONDS <= number <= most:
            raise _Invalid
        return number

    return Kind(f"a number of seconds between {MIN_SECONDS:g} and {most:g} ({span})", parse)


def _fraction(value: object, from_text: bool) -> float:
    number = _number(value, from_text)
    if not 0 <= number < 1:
        raise _Invalid
    return number


def _integer(low: int, high: int) -> Kind:
    def parse(value: object, from_text: bool) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif from_text and isinstance(value, str) and _is_decimal(value.strip().lstrip("+-")):
            try:
                number = int(value)
            except ValueError:  # more than 4300 digits
                raise _Invalid from None
        else:
            raise _Invalid
        if not low <= number <= high:
            raise _Invalid
        return number

    return Kind(f"an integer between {low} and {high}", parse)


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _address(value: object, from_text: bool) -> str:
    if not isinstance(value, str):
        raise _Invalid
    try:
        split_address(value)
    except UsageError:
        raise _Invalid from None
    return value


def _ip_list(value: object, from_text: bool) -> tuple[str, ...]:
    if from_text and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _Invalid
    for item in value:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise _Invalid from None
    return tuple(value)


BOOLEAN = Kind("true or false", _boolean, "one of true/false, yes/no, on/off, 1/0")
UP_TO_AN_HOUR = _seconds(HOUR, "1 hour")
UP_TO_A_DAY = _seconds(DAY, "1 day")
POSITIVE = Kind("a positive number", _positive)
FRACTION = Kind("a number from 0 up to (not including) 1", _fraction)
ADDRESS = Kind(
    f"HOST:PORT with a port from 0 to {MAX_PORT} (an IPv6 host in brackets: [::1]:7417)",
    _address,
)
IP_LIST = Kind("a list of IP addresses of this machine (empty for all)", _ip_list)


@dataclass(frozen=True, slots=True)
class Setting:
    kind: Kind
    doc: str


SETTINGS: dict[str, Setting] = {
    "listen": Setting(ADDRESS, "where `peer serve` listens for peers (0.0.0.0:7417 for the LAN)"),
    "insecure": Setting(BOOLEAN, "plaintext instead of mutual TLS; allowed on loopback only"),
    "sync.auto": Setting(
        BOOLEAN, "scheduled and live sync; when off the node still serves and `peer sync` works"
    ),
    "sync.interval": Setting(UP_TO_A_DAY, "seconds between sync rounds with each peer"),
    "sync.jitter": Setting(FRACTION, "random spread of the interval, as a fraction (+-)"),
    "sync.backoff_initial": Setting(
        UP_TO_AN_HOUR, "seconds to wait after a failure; doubles each time"
    ),
    "sync.backoff_max": Setting(UP_TO_A_DAY, "the longest wait after failures, in seconds"),
    "sync.batch": Setting(_integer(1, 100_000), "records per message asked of peers"),
    "sync.live": Setting(BOOLEAN, "keep Subscribe streams to reachable peers (live propagation)"),
    "sync.keepalive": Setting(
        UP_TO_AN_HOUR, "seconds between pings on a quiet connection (a dead peer is noticed)"
    ),
    "sync.keepalive_timeout": Setting(
        UP_TO_AN_HOUR, "seconds to wait for a ping's answer before the connection counts as dead"
    ),
    "discovery.enabled": Setting(BOOLEAN, "announce this node and find peers on the LAN (mDNS)"),
    "discovery.interfaces": Setting(IP_LIST, "IP addresses to announce on; empty = all"),
    "limits.streams_per_caller": Setting(_integer(1, 1024), "concurrent streams per peer"),
    "limits.max_batch": Setting(_integer(1, 100_000), "most records sent in one message"),
    "limits.subscriber_queue": Setting(
        _integer(1, 100_000), "batches queued per live subscriber before it is cut off"
    ),
    "limits.rate": Setting(POSITIVE, "calls per second allowed to each peer"),
    "limits.burst": Setting(
        _integer(1, 1_000_000), "calls a peer may make in a burst before the rate applies"
    ),
}

SECTIONS: dict[str, type[SyncConfig | DiscoveryConfig | LimitsConfig]] = {
    "sync": SyncConfig,
    "discovery": DiscoveryConfig,
    "limits": LimitsConfig,
}
PEER_KEYS = ("id", "address", "name")


def env_name(key: str) -> str:
    """The environment variable of a setting: PEER_SYNC_INTERVAL, PEER_DISCOVERY, ..."""
    if key == "discovery.enabled":
        return "PEER_DISCOVERY"
    return ENV_PREFIX + key.replace(".", "_").upper()


def flag_name(key: str) -> str:
    """How a flag overriding a setting is named in messages: --listen, --sync-interval."""
    return "--" + key.replace(".", "-").replace("_", "-")


ENV_KEYS = {env_name(key): key for key in SETTINGS}


def defaults() -> dict[str, Any]:
    """Every setting's default, by dotted key."""
    config = Config()
    flat: dict[str, Any] = {"listen": config.listen, "insecure": config.insecure}
    for section in SECTIONS:
        values = getattr(config, section)
        for item in fields(values):
            flat[f"{section}.{item.name}"] = getattr(values, item.name)
    return flat


# -- loading --------------------------------------------------------------------------------


def _shown(value: object) -> str:
    """The value as the user wrote it, cut short: a message stays one readable line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    except RecursionError:
        text = "[a value nested too deep to show]"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _suggestion(name: str, known: list[str], quote: str = '"') -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {quote}{close[0]}{quote}?)" if close else ""


class _Layers:
    """The settings as they are merged, with where each one came from."""

    def __init__(self) -> None:
        self.values = defaults()
        self.sources = dict.fromkeys(self.values, DEFAULT_SOURCE)

    def set(self, key: str, value: object, from_text: bool, where: str, prefix: str) -> None:
        """Validate and take one value; ConfigError worded as `<where>: <prefix>must be ...`."""
        kind = SETTINGS[key].kind
        try:
            self.values[key] = kind.parse(value, from_text)
        except _Invalid:
            raise ConfigError(
                f"{where}: {prefix}must be {kind.describe(from_text)}, got {_shown(value)}"
            ) from None
        self.sources[key] = where

    def blame(self, *keys: str) -> str:
        """The source to name for a rule over `keys`: the first not left at its default."""
        given = [self.sources[key] for key in keys if self.sources[key] != DEFAULT_SOURCE]
        return given[0] if given else DEFAULT_SOURCE


def _read_file(path: Path) -> dict[str, Any]:
    """The TOML document of `path` ({} if there is none); bounded in size and depth."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path}: over 1 MiB, too large for a config file (is it the right file?)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read the config file: not UTF-8 text") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except ValueError:  # int() refuses more than 4300 digits, before TOML can check
        raise ConfigError(f"{path}: not valid TOML: a number with too many digits") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: not valid TOML: too deeply nested") from None


def _apply_file(layers: _Layers, path: Path, document: Mapping[str, Any]) -> None:
    for name, value in document.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {name} must be a table ([{name}]), got {_shown(value)}")
            for sub, inner in value.items():
                _apply_file_key(layers, path, f"{name}.{sub}", inner)
        elif name != "peers":
            _apply_file_key(layers, path, name, value)


def _apply_file_key(layers: _Layers, path: Path, key: str, value: object) -> None:
    if key not in SETTINGS:
        known = [*SETTINGS, "peers"]
        raise ConfigError(f'{path}: unknown key "{key}"' + _suggestion(key, known))
    layers.set(key, value, False, str(path), f"{key} ")


def _peers(path: Path, value: object) -> tuple[PeerEntry, ...]:
    """`[[peers]]`: each with an `id` (a node id), an optional `address` and `name`."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: peers must be an array of tables ([[peers]])")
    entries: list[PeerEntry] = []
    for number, table in enumerate(value, 1):
        where = f"{path}: peers[{number}]"
        for key in table:
            if key not in PEER_KEYS:
                suggestion = _suggestion(key, list(PEER_KEYS))
                raise ConfigError(f'{where}: unknown key "{key}"{suggestion}')
        entries.append(_peer(where, table))
    ids = [entry.node_id for entry in entries]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: peers lists the same node id twice")
    return tuple(entries)


def _peer(where: str, table: Mapping[str, object]) -> PeerEntry:
    node_id, address, name = table.get("id"), table.get("address"), table.get("name", "")
    if not isinstance(node_id, str):
        raise ConfigError(f"{where}.id must be a node id (as `peer id` prints it)")
    try:
        parsed = parse_node_id(node_id)
    except UsageError as exc:
        raise ConfigError(f"{where}.id: {exc}") from exc
    if address is not None:
        try:
            address = _address(address, False)
        except _Invalid:
            raise ConfigError(
                f"{where}.address must be {ADDRESS.expected}, got {_shown(address)}"
            ) from None
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name must be text, got {_shown(name)}")
    return PeerEntry(parsed, address, name)


def _apply_env(layers: _Layers, env: Mapping[str, str]) -> None:
    for name, value in sorted(env.items()):
        if name in ENV_KEYS:
            layers.set(ENV_KEYS[name], value, True, name, "")
        elif _looks_like_ours(name):
            raise ConfigError(f"{name}: unknown setting" + _suggestion(name, list(ENV_KEYS), ""))


def _looks_like_ours(name: str) -> bool:
    """A PEER_* variable that is neither a setting nor PEER_HOME is an error when it
    names a config section or is close to a setting (a typo); other PEER_* variables
    (of tests, or of other programs called peer) are left alone."""
    if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
        return False
    sections = tuple(f"{ENV_PREFIX}{section.upper()}" for section in SECTIONS)
    return name.startswith(sections) or bool(difflib.get_close_matches(name, ENV_KEYS, 1, 0.85))


def _apply_overrides(layers: _Layers, overrides: Mapping[str, object]) -> None:
    for key, value in overrides.items():
        if key not in SETTINGS:
            raise ConfigError(f'unknown setting "{key}"' + _suggestion(key, list(SETTINGS)))
        if value is not None:
            layers.set(key, value, True, flag_name(key), "")


def _check_together(layers: _Layers) -> None:
    """Rules that span two settings, checked once every source is merged."""
    values, sources = layers.values, layers.sources
    initial, most = values["sync.backoff_initial"], values["sync.backoff_max"]
    if most < initial:
        raise ConfigError(
            f"{layers.blame('sync.backoff_max', 'sync.backoff_initial')}: sync.backoff_max "
            f"({most:g}) must be at least sync.backoff_initial ({initial:g})"
        )
    if values["insecure"] and not is_loopback(split_address(values["listen"])[0]):
        raise ConfigError(
            f"{layers.blame('insecure')}: insecure (plaintext) is only allowed on a loopback "
            f"address, but listen is {values['listen']} (from {sources['listen']})"
        )


def _build(values: Mapping[str, Any], peers: tuple[PeerEntry, ...]) -> Config:
    def section(name: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}

    return Config(
        listen=values["listen"],
        insecure=values["insecure"],
        sync=SyncConfig(**section("sync")),
        discovery=DiscoveryConfig(**section("discovery")),
        limits=LimitsConfig(**section("limits")),
        peers=peers,
    )


def load_config(
    home: Home | Path,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """The node's settings: flags > environment > config.toml > defaults, validated.

    `home` is the home directory (or its `Home`); `overrides` maps dotted keys to flag
    values, None meaning the flag was not given. ConfigError names the bad source.
    """
    path = (home if isinstance(home, Home) else Home(home)).config_file
    layers = _Layers()
    document = _read_file(path)
    _apply_file(layers, path, document)
    peers = _peers(path, document["peers"]) if "peers" in document else ()
    _apply_env(layers, env)
    _apply_overrides(layers, overrides or {})
    _check_together(layers)
    return _build(layers.values, peers)


# -- the template ---------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def config_template() -> str:
    """A config.toml holding every setting at its default, each with what it means."""
    lines = [
        "# peer settings. Every key is optional; the values below are the defaults.",
        "# Environment variables override this file (PEER_LISTEN, PEER_SYNC_INTERVAL,",
        "# PEER_DISCOVERY, PEER_DISCOVERY_INTERFACES=a,b, PEER_LIMITS_RATE, ...),",
        "# and flags override both.",
        "",
    ]
    section = ""
    for key, value in defaults().items():
        name, _, sub = key.rpartition(".")
        if name != section:
            section = name
            lines += ["", f"[{name}]"]
        lines += [f"# {SETTINGS[key].doc}", f"{sub} = {_toml_value(value)}"]
    lines += [
        "",
        "# Peers pinned at start (added to the trust list), one table each:",
        "# [[peers]]",
        '# id = "NODE-ID"            # as `peer id` prints it on that node',
        '# address = "host:7417"     # optional: where to reach it',
        '# name = "laptop"           # optional',
    ]
    return "\n".join(lines) + "\n"
