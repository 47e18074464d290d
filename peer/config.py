"""The settings of a node, built and validated once, in one place.

Each setting comes from the first of these that gives it:

    flags        `overrides` by dotted key ("listen", "sync.interval"); None means not given
    environment  PEER_LISTEN, PEER_SYNC_INTERVAL, PEER_DISCOVERY, PEER_LIMITS_RATE, ...
    file         HOME/config.toml (`config_template()` documents every key)
    defaults     the field defaults of `Config` and its sections (`peer.settings`)

A bad value stops the start with one line naming where it came from and what is
expected (`config.toml: sync.interval must be a number of seconds between 0.01 and 86400
(1 day), got "abc"`); unknown keys are errors too, with the nearest known key suggested.
Durations and counts are bounded on both sides, and the file in size and nesting, so no
value (1e308, arrays nested 100,000 deep, a 1 GB file) reaches the daemon or fails
later as an unexpected error. The kinds and bounds are the dataclasses' own (each
checks itself when built, in code too); this module adds where a value came from.
Nothing downstream reads the environment: it gets a frozen `Config`, whose sections
are the values the mesh and the server run with.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.addresses import DEFAULT_LISTEN, is_loopback, split_address
from peer.errors import ConfigError, SettingError, UsageError
from peer.home import Home
from peer.identity import parse_node_id
from peer.kinds import ADDRESS, BOOLEAN, UP_TO_A_DAY, Invalid, shown
from peer.settings import (
    DiscoveryConfig,
    Limits,
    Schedule,
    Setting,
    check,
    setting,
    settings_of,
)
from peer.store import TrustedPeer

ENV_PREFIX = "PEER_"
DEFAULT_SOURCE = "the default"
ENV_NOT_SETTINGS = frozenset({"PEER_HOME"})  # chooses the home, so it is read before this
MAX_FILE_BYTES = 1 << 20  # a config file holds a few settings; more is the wrong file


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every setting of a node: two of its own, its sections, and its pinned peers."""

    listen: str = setting(
        DEFAULT_LISTEN,
        ADDRESS,
        "where `peer serve` listens for peers (0.0.0.0:7417 for the LAN)",
    )
    insecure: bool = setting(
        False, BOOLEAN, "plaintext instead of mutual TLS; allowed on loopback only"
    )
    compact_every: float = setting(
        60.0,
        UP_TO_A_DAY,
        "seconds between the daemon's merges of small segments (single appends, live "
        "traffic) into larger ones, when the store changed",
    )
    sync: Schedule = field(default_factory=Schedule)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    limits: Limits = field(default_factory=Limits)
    peers: tuple[TrustedPeer, ...] = ()  # pinned at start (added to the trust list)

    def __post_init__(self) -> None:
        check(self, "")
        if self.insecure and not is_loopback(split_address(self.listen)[0]):
            raise SettingError(
                "insecure (plaintext) is only allowed on a loopback address, "
                f"but listen is {self.listen}",
                ("insecure",),
                sourced="listen",
            )


SECTIONS: dict[str, type[Schedule | DiscoveryConfig | Limits]] = {
    section.SECTION: section for section in (Schedule, DiscoveryConfig, Limits)
}


def _settings() -> dict[str, Setting]:
    """Every setting by dotted key, in the order of the template: the dataclasses'."""
    table = dict(settings_of(Config))
    for name, section in SECTIONS.items():
        table.update({f"{name}.{key}": spec for key, spec in settings_of(section).items()})
    return table


SETTINGS = _settings()
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
    return {key: _value_of(Config(), key) for key in SETTINGS}


def _value_of(config: Config, key: str) -> Any:
    value: Any = config
    for name in key.split("."):
        value = getattr(value, name)
    return value


# -- loading --------------------------------------------------------------------------------


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
        except Invalid:
            raise ConfigError(f"{where}: {kind.refusal(value, from_text, prefix)}") from None
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
                raise ConfigError(f"{path}: {name} must be a table ([{name}]), got {shown(value)}")
            for sub, inner in value.items():
                _apply_file_key(layers, path, f"{name}.{sub}", inner)
        elif name != "peers":
            _apply_file_key(layers, path, name, value)


def _apply_file_key(layers: _Layers, path: Path, key: str, value: object) -> None:
    if key not in SETTINGS:
        known = [*SETTINGS, "peers"]
        raise ConfigError(f'{path}: unknown key "{key}"' + _suggestion(key, known))
    layers.set(key, value, False, str(path), f"{key} ")


def _peers(path: Path, value: object) -> tuple[TrustedPeer, ...]:
    """`[[peers]]`: each with an `id` (a node id), an optional `address` and `name`."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: peers must be an array of tables ([[peers]])")
    entries: list[TrustedPeer] = []
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


def _peer(where: str, table: Mapping[str, object]) -> TrustedPeer:
    node_id, address, name = table.get("id"), table.get("address"), table.get("name", "")
    if not isinstance(node_id, str):
        raise ConfigError(f"{where}.id must be a node id (as `peer id` prints it)")
    try:
        parsed = parse_node_id(node_id)
    except UsageError as exc:
        raise ConfigError(f"{where}.id: {exc}") from exc
    if address is not None:
        try:
            address = ADDRESS.parse(address, False)
        except Invalid:
            raise ConfigError(f"{where}.{ADDRESS.refusal(address, False, 'address ')}") from None
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name must be text, got {shown(name)}")
    return TrustedPeer(parsed, name, address or "")


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


def _build(layers: _Layers, peers: tuple[TrustedPeer, ...]) -> Config:
    """The merged values as a Config, whose sections check the rules that span two
    settings; a refusal names the source to blame."""
    values = layers.values

    def section(name: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}

    try:
        return Config(
            listen=values["listen"],
            insecure=values["insecure"],
            compact_every=values["compact_every"],
            sync=Schedule(**section("sync")),
            discovery=DiscoveryConfig(**section("discovery")),
            limits=Limits(**section("limits")),
            peers=peers,
        )
    except SettingError as exc:
        cited = f" (from {layers.sources[exc.sourced]})" if exc.sourced else ""
        raise ConfigError(f"{layers.blame(*exc.keys)}: {exc}{cited}") from None


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
    return _build(layers, peers)


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
