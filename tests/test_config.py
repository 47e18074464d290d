"""Settings: defaults < config.toml < PEER_* environment < flags, each bad value refused
once, in one line naming where it came from and what is expected."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from peer.config import (
    SETTINGS,
    Config,
    config_template,
    env_name,
    load_config,
)
from peer.errors import ConfigError, UsageError
from peer.home import Home
from peer.identity import format_node_id
from peer.settings import DiscoveryConfig, Limits, Schedule
from peer.store import TrustedPeer

A_DAY = "a number of seconds between 0.01 and 86400 (1 day)"
AN_HOUR = "a number of seconds between 0.01 and 3600 (1 hour)"
LAPTOP = bytes(range(32))
PHONE = bytes(range(1, 33))


def write(home: Path, text: str) -> Path:
    (home / "config.toml").write_text(text)
    return home


def refused(home: Path, env: dict[str, str] | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(home, env or {}, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- where values come from -----------------------------------------------------------------


def test_no_file_means_the_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path, {})
    assert config == Config()
    assert config.listen == "127.0.0.1:7417"
    assert config.insecure is False
    assert config.sync == Schedule(
        auto=True,
        interval=60.0,
        jitter=0.1,
        backoff_initial=1.0,
        backoff_max=300.0,
        batch=1000,
        live=True,
    )
    assert config.discovery == DiscoveryConfig(enabled=True, interfaces=())
    assert config.limits == Limits(
        streams_per_caller=8, max_batch=2048, subscriber_queue=64, rate=50.0, burst=200
    )
    assert config.peers == ()


def test_the_file_sets_every_kind_of_value(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        listen = "[::1]:9000"
        insecure = true
        compact_every = 30
        [sync]
        auto = false
        interval = 5          # an integer is a number of seconds too
        jitter = 0.25
        backoff_initial = 0.5
        backoff_max = 30.0
        batch = 50
        live = false
        [discovery]
        enabled = false
        interfaces = ["198.18.0.1", "2001:db8::1"]
        [limits]
        streams_per_caller = 2
        max_batch = 100
        subscriber_queue = 16
        rate = 5.5
        burst = 10
        """,
    )
    config = load_config(Home(tmp_path), {})
    assert config == Config(
        listen="[::1]:9000",
        insecure=True,
        compact_every=30.0,
        sync=Schedule(
            auto=False,
            interval=5.0,
            jitter=0.25,
            backoff_initial=0.5,
            backoff_max=30.0,
            batch=50,
            live=False,
        ),
        discovery=DiscoveryConfig(enabled=False, interfaces=("198.18.0.1", "2001:db8::1")),
        limits=Limits(streams_per_caller=2, max_batch=100, subscriber_queue=16, rate=5.5, burst=10),
    )
    assert isinstance(config.sync.interval, float)


def test_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    write(tmp_path, "[sync]\ninterval = 5\nbatch = 10\n[limits]\nrate = 1.0\nburst = 3\n")
    env = {"PEER_SYNC_INTERVAL": "7.5", "PEER_SYNC_BATCH": "20", "PEER_LIMITS_RATE": "2"}
    config = load_config(tmp_path, env, {"sync.batch": 30, "limits.rate": None})
    assert config.sync.interval == 7.5  # environment over file
    assert config.sync.batch == 30  # flag over environment
    assert config.limits.rate == 2.0  # a flag of None was not given
    assert config.limits.burst == 3  # file over default


def test_every_setting_has_an_environment_variable(tmp_path: Path) -> None:
    env = {
        "PEER_LISTEN": "127.0.0.1:0",
        "PEER_INSECURE": "yes",
        "PEER_COMPACT_EVERY": "30",
        "PEER_SYNC_AUTO": "off",
        "PEER_SYNC_INTERVAL": "1",
        "PEER_SYNC_JITTER": "0",
        "PEER_SYNC_BACKOFF_INITIAL": "2",
        "PEER_SYNC_BACKOFF_MAX": "4",
        "PEER_SYNC_BATCH": "3",
        "PEER_SYNC_LIVE": "0",
        "PEER_SYNC_GRAFT_AFTER": "2.5",
        "PEER_SYNC_KEEPALIVE": "9",
        "PEER_SYNC_KEEPALIVE_TIMEOUT": "4",
        "PEER_DISCOVERY": "no",
        "PEER_DISCOVERY_INTERFACES": "198.18.0.1, 198.18.0.2",
        "PEER_LIMITS_STREAMS_PER_CALLER": "1",
        "PEER_LIMITS_MAX_BATCH": "5",
        "PEER_LIMITS_SUBSCRIBER_QUEUE": "6",
        "PEER_LIMITS_RATE": "7",
        "PEER_LIMITS_BURST": "8",
    }
    assert sorted(env) == sorted(env_name(key) for key in SETTINGS)
    assert load_config(tmp_path, env) == Config(
        listen="127.0.0.1:0",
        insecure=True,
        compact_every=30.0,
        sync=Schedule(
            auto=False,
            interval=1.0,
            jitter=0.0,
            backoff_initial=2.0,
            backoff_max=4.0,
            batch=3,
            live=False,
            graft_after=2.5,
            keepalive=9.0,
            keepalive_timeout=4.0,
        ),
        discovery=DiscoveryConfig(enabled=False, interfaces=("198.18.0.1", "198.18.0.2")),
        limits=Limits(streams_per_caller=1, max_batch=5, subscriber_queue=6, rate=7.0, burst=8),
    )


def test_flags_may_be_text_or_values(tmp_path: Path) -> None:
    overrides = {"listen": "127.0.0.1:1", "insecure": True, "sync.interval": "2.5"}
    config = load_config(tmp_path, {}, overrides)
    assert (config.listen, config.insecure, config.sync.interval) == ("127.0.0.1:1", True, 2.5)


def test_other_peer_variables_are_not_settings(tmp_path: Path) -> None:
    env = {"PEER_HOME": "/elsewhere", "PEER_SOAK_STEPS": "3", "HOME": "/root"}
    assert load_config(tmp_path, env) == Config()


def test_an_empty_interface_list_means_all(tmp_path: Path) -> None:
    write(tmp_path, '[discovery]\ninterfaces = ["198.18.0.1"]\n')
    config = load_config(tmp_path, {"PEER_DISCOVERY_INTERFACES": ""})
    assert config.discovery.interfaces == ()


# -- booleans -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(word, True) for word in ("true", "1", "yes", "on", "TRUE", "Yes", " on ")],
        *[(word, False) for word in ("false", "0", "no", "off", "False", "OFF")],
    ],
)
def test_booleans_in_the_environment(tmp_path: Path, text: str, value: bool) -> None:
    assert load_config(tmp_path, {"PEER_SYNC_LIVE": text}).sync.live is value


@pytest.mark.parametrize("text", ["", "2", "maybe", "y", "enabled"])
def test_other_words_are_not_booleans(tmp_path: Path, text: str) -> None:
    assert refused(tmp_path, {"PEER_SYNC_LIVE": text}) == (
        f'PEER_SYNC_LIVE: must be one of true/false, yes/no, on/off, 1/0, got "{text}"'
    )


def test_the_file_takes_toml_booleans_only(tmp_path: Path) -> None:
    write(tmp_path, 'insecure = "yes"\n')
    assert refused(tmp_path).endswith('config.toml: insecure must be true or false, got "yes"')


# -- invalid values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sync]\ninterval = "abc"', f'sync.interval must be {A_DAY}, got "abc"'),
        ("[sync]\ninterval = 0", f"sync.interval must be {A_DAY}, got 0"),
        ("[sync]\ninterval = -1.5", f"sync.interval must be {A_DAY}, got -1.5"),
        ("[sync]\ninterval = nan", f"sync.interval must be {A_DAY}, got NaN"),
        ("[sync]\ninterval = inf", f"sync.interval must be {A_DAY}, got Infinity"),
        ("[sync]\ninterval = true", f"sync.interval must be {A_DAY}, got true"),
        ("[sync]\ninterval = 86401", f"sync.interval must be {A_DAY}, got 86401"),
        ("[sync]\nkeepalive = 1e308", f"sync.keepalive must be {AN_HOUR}, got 1e+308"),
        ("[sync]\nkeepalive_timeout = 0.001", f"sync.keepalive_timeout must be {AN_HOUR}"),
        ("[sync]\nbackoff_initial = 3601", f"sync.backoff_initial must be {AN_HOUR}"),
        ("[sync]\nbackoff_max = 1e9", f"sync.backoff_max must be {A_DAY}, got 1000000000.0"),
        (
            "[sync]\njitter = 1",
            "sync.jitter must be a number from 0 up to (not including) 1, got 1",
        ),
        ("[sync]\nbatch = 0", "sync.batch must be an integer between 1 and 100000, got 0"),
        ("[sync]\nbatch = 2.5", "sync.batch must be an integer between 1 and 100000, got 2.5"),
        ("[limits]\nrate = 0", "limits.rate must be a positive number, got 0"),
        ("[limits]\nburst = 10000000", "limits.burst must be an integer between 1 and 1000000"),
        (
            "listen = 7417",
            "listen must be HOST:PORT with a port from 0 to 65535 (an IPv6 host in brackets: "
            "[::1]:7417), got 7417",
        ),
        ('listen = "::1:7417"', "listen must be HOST:PORT"),
        ('listen = "host:99999"', "listen must be HOST:PORT"),
        ('[discovery]\ninterfaces = "198.18.0.1"', "discovery.interfaces must be a list of IP"),
        ('[discovery]\ninterfaces = ["eth0"]', "discovery.interfaces must be a list of IP"),
        ("sync = 3", "sync must be a table ([sync]), got 3"),
    ],
)
def test_invalid_values_in_the_file(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, text + "\n")
    assert f"config.toml: {message}" in refused(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("PEER_SYNC_BATCH", "x", 'must be an integer between 1 and 100000, got "x"'),
        ("PEER_SYNC_BATCH", "1.0", 'must be an integer between 1 and 100000, got "1.0"'),
        ("PEER_SYNC_INTERVAL", "inf", f'must be {A_DAY}, got "inf"'),
        ("PEER_SYNC_KEEPALIVE", "1e308", f'must be {AN_HOUR}, got "1e308"'),
        ("PEER_SYNC_BATCH", "9" * 5000, "must be an integer between 1 and 100000, got"),
        ("PEER_LISTEN", "localhost", "must be HOST:PORT"),
        ("PEER_DISCOVERY_INTERFACES", "198.18.0.1,eth0", "must be a list of IP addresses"),
    ],
)
def test_invalid_values_in_the_environment(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    assert refused(tmp_path, {name: text}).startswith(f"{name}: {message}")


def test_invalid_flags_are_named_as_flags(tmp_path: Path) -> None:
    assert refused(tmp_path, **{"sync.interval": "soon"}) == (
        f'--sync-interval: must be {A_DAY}, got "soon"'
    )
    assert refused(tmp_path, **{"sync.interval": "100000"}) == (
        f'--sync-interval: must be {A_DAY}, got "100000"'
    )


def test_backoff_max_below_backoff_initial(tmp_path: Path) -> None:
    assert refused(tmp_path, {"PEER_SYNC_BACKOFF_INITIAL": "600"}) == (
        "PEER_SYNC_BACKOFF_INITIAL: sync.backoff_max (300) must be at least "
        "sync.backoff_initial (600)"
    )


def test_insecure_is_for_loopback_only(tmp_path: Path) -> None:
    write(tmp_path, 'listen = "0.0.0.0:7417"\n')
    message = refused(tmp_path, {"PEER_INSECURE": "1"})
    assert message.startswith("PEER_INSECURE: insecure (plaintext) is only allowed on a loopback")
    assert message.endswith("listen is 0.0.0.0:7417 (from " + str(tmp_path / "config.toml") + ")")
    for listen in ("127.0.0.1:1", "[::1]:1", "localhost:1"):
        assert load_config(tmp_path, {"PEER_INSECURE": "1", "PEER_LISTEN": listen}).insecure


# -- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync]\nintervall = 3", 'unknown key "sync.intervall" (did you mean "sync.interval"?)'),
        ("[sync]\nlisten = 'a:1'", 'unknown key "sync.listen"'),
        ("[discovery]\nenable = false", 'unknown key "discovery.enable" (did you mean'),
        ("[sink]\nx = 1", 'unknown key "sink"'),
        ("zzz = 1", 'unknown key "zzz"'),
    ],
)
def test_unknown_keys_in_the_file_suggest_the_nearest(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path, text + "\n")
    assert f"config.toml: {message}" in refused(tmp_path)


def test_unknown_settings_in_the_environment(tmp_path: Path) -> None:
    assert refused(tmp_path, {"PEER_SYNC_INTERVALL": "3"}) == (
        "PEER_SYNC_INTERVALL: unknown setting (did you mean PEER_SYNC_INTERVAL?)"
    )
    assert refused(tmp_path, {"PEER_LISTN": "a:1"}).endswith("(did you mean PEER_LISTEN?)")
    assert refused(tmp_path, {"PEER_LIMITS_QQQ": "1"}).startswith(
        "PEER_LIMITS_QQQ: unknown setting"
    )


def test_unknown_flags(tmp_path: Path) -> None:
    assert refused(tmp_path, **{"sync.intervl": 1}) == (
        'unknown setting "sync.intervl" (did you mean "sync.interval"?)'
    )


# -- the file itself ------------------------------------------------------------------------


def test_bad_toml_reports_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, 'listen = "127.0.0.1:7417"\n[sync]\ninterval 60\n')
    message = refused(tmp_path)
    assert message.startswith(str(tmp_path / "config.toml") + ": not valid TOML: ")
    assert re.search(r"at line 3, column \d+", message)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    assert "config.toml: cannot read the config file" in refused(tmp_path)


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    write(tmp_path, "[sync]\ninterval = 86400\nbackoff_max = 86400\nkeepalive = 0.01\n")
    config = load_config(tmp_path, {"PEER_SYNC_KEEPALIVE_TIMEOUT": "3600"})
    assert (config.sync.interval, config.sync.keepalive) == (86400.0, 0.01)
    assert config.sync.keepalive_timeout == 3600.0


def test_a_file_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert refused(tmp_path) == f"{tmp_path / 'config.toml'}: not valid TOML: too deeply nested"


def test_a_number_of_5000_digits_in_the_file_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "[sync]\nbatch = " + "9" * 5000 + "\n")
    assert refused(tmp_path).endswith("not valid TOML: a number with too many digits")


def test_a_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    write(tmp_path, "# " + "x" * (1 << 20) + "\n")
    assert refused(tmp_path).endswith(
        "over 1 MiB, too large for a config file (is it the right file?)"
    )


def test_a_long_bad_value_is_shown_cut_short(tmp_path: Path) -> None:
    write(tmp_path, f'[sync]\ninterval = "{"a" * 10_000}"\n')
    message = refused(tmp_path)
    assert message.endswith('got "' + "a" * 78 + "…") and len(message) < 300


def test_config_errors_are_usage_errors() -> None:
    assert issubclass(ConfigError, UsageError)


# -- peers ----------------------------------------------------------------------------------


def test_peers_are_parsed(tmp_path: Path) -> None:
    laptop = format_node_id(LAPTOP)
    phone = format_node_id(PHONE).replace("-", "").lower()
    write(
        tmp_path,
        f"""
        [[peers]]
        id = "{laptop}"
        address = "198.18.0.2:7417"
        name = "laptop"

        [[peers]]
        id = "{phone}"
        """,
    )
    assert load_config(tmp_path, {}).peers == (
        TrustedPeer(LAPTOP, address="198.18.0.2:7417", name="laptop"),
        TrustedPeer(PHONE),  # no address, no name
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('id = "NODE-ID"', "peers[1].id: 'NODE-ID' is not a node id"),
        (f'id = "{format_node_id(LAPTOP)[:-1]}A"', "peers[1].id: node id"),
        ("id = 5", "peers[1].id must be a node id"),
        ('name = "laptop"', "peers[1].id must be a node id"),
        (f'id = "{format_node_id(LAPTOP)}"\naddress = "laptop"', "peers[1].address must be"),
        (f'id = "{format_node_id(LAPTOP)}"\nname = 3', "peers[1].name must be text, got 3"),
        (f'id = "{format_node_id(LAPTOP)}"\nadress = "a:1"', 'unknown key "adress" (did you'),
    ],
)
def test_invalid_peers(tmp_path: Path, body: str, message: str) -> None:
    write(tmp_path, f"[[peers]]\n{body}\n")
    assert message in refused(tmp_path)


def test_a_peer_listed_twice(tmp_path: Path) -> None:
    entry = f'[[peers]]\nid = "{format_node_id(LAPTOP)}"\n'
    write(tmp_path, entry + entry)
    assert refused(tmp_path).endswith("peers lists the same node id twice")


def test_peers_must_be_tables(tmp_path: Path) -> None:
    write(tmp_path, 'peers = ["laptop"]\n')
    assert refused(tmp_path).endswith("peers must be an array of tables ([[peers]])")


# -- the template ---------------------------------------------------------------------------


def test_the_template_loads_as_the_defaults(tmp_path: Path) -> None:
    write(tmp_path, config_template())
    assert load_config(tmp_path, {}) == Config()


def test_the_template_documents_every_setting() -> None:
    template = config_template()
    for key in SETTINGS:
        section, _, name = key.rpartition(".")
        assert re.search(rf"^{name} = ", template, re.MULTILINE), key
        assert not section or f"[{section}]" in template
        assert f"# {SETTINGS[key].doc}\n" in template
    assert "# [[peers]]" in template


def test_the_template_peers_example_is_the_documented_shape(tmp_path: Path) -> None:
    example = config_template().split("# [[peers]]", 1)[1]
    lines = [line.removeprefix("# ") for line in example.splitlines()]
    text = "[[peers]]" + "\n".join(lines).replace("NODE-ID", format_node_id(LAPTOP))
    write(tmp_path, text)
    assert load_config(tmp_path, {}).peers == (
        TrustedPeer(LAPTOP, address="host:7417", name="laptop"),
    )


# -- the sections check themselves ----------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Schedule(interval=0), f"sync.interval must be {A_DAY}, got 0"),
        (lambda: Schedule(keepalive=1e308), f"sync.keepalive must be {AN_HOUR}, got 1e+308"),
        (lambda: Schedule(batch=2.5), "sync.batch must be an integer between 1 and 100000"),
        (
            lambda: Schedule(backoff_initial=600.0),
            "sync.backoff_max (300) must be at least sync.backoff_initial (600)",
        ),
        (lambda: Limits(rate=0), "limits.rate must be a positive number, got 0"),
        (lambda: Limits(streams_per_caller=10_000), "limits.streams_per_caller must be an"),
        (lambda: DiscoveryConfig(interfaces=("eth0",)), "discovery.interfaces must be a list"),
        (lambda: Config(listen="7417"), "listen must be HOST:PORT"),
        (
            lambda: Config(listen="0.0.0.0:7417", insecure=True),
            "insecure (plaintext) is only allowed on a loopback address, but listen is 0.0.0.0",
        ),
    ],
)
def test_a_section_built_in_code_refuses_what_the_file_would(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert str(caught.value).startswith(message)


def test_a_section_built_in_code_keeps_the_parsed_values() -> None:
    schedule = Schedule(interval=5, keepalive=1)
    assert (schedule.interval, schedule.keepalive) == (5.0, 1.0)
    assert isinstance(schedule.interval, float)
    assert DiscoveryConfig(interfaces=["198.18.0.1"]).interfaces == ("198.18.0.1",)  # type: ignore[arg-type]


def test_the_sections_defaults_are_the_settings_defaults() -> None:
    config = Config()
    assert (config.sync.keepalive, config.sync.keepalive_timeout) == (30.0, 10.0)
    assert config.sync.batch == config.limits.default_batch == 1000
