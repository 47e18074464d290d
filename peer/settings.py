"""The settings a node runs with: each config section is the very value the code uses.

`Schedule` ([sync]) tells the mesh when links sync; `Limits` ([limits], and a few knobs
only code sets) is what the servicer enforces and the server's options are made of;
`DiscoveryConfig` ([discovery]) is where the daemon announces. Each field that is a
setting carries its kind and its meaning (`setting`), and every section checks itself
when built: a `Schedule` made in code with a zero interval is refused with the same
sentence `peer.config` prints for the file, minus where the value came from. So no
setting reaches the mesh or the server unchecked, whoever built it, and a bound or a
default is written once. `peer.config` layers the file, variables and flags over these
defaults and names the source of a refused value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from peer.errors import SettingError
from peer.kinds import (
    BOOLEAN,
    FRACTION,
    IP_LIST,
    POSITIVE,
    UP_TO_A_DAY,
    UP_TO_AN_HOUR,
    Invalid,
    Kind,
    integer,
)

KEEPALIVE_S = 30.0  # seconds between pings on a quiet connection, both directions
KEEPALIVE_TIMEOUT_S = 10.0  # a ping unanswered this long: the connection is dead
MIN_PING_INTERVAL_S = 10.0  # pings accepted from a peer; more often are strikes
DEFAULT_BATCH = 1000  # records per message, asked for or sent when none is asked
MAX_MESSAGE_BYTES = 8 << 20  # one gRPC message received, either way, on every channel
STOCK_MESSAGE_BYTES = 4 << 20  # what every official gRPC library receives by default: the
# most this node sends in one message, so that any client can read it
_SETTING = "setting"  # the field metadata key of a setting


@dataclass(frozen=True, slots=True)
class Setting:
    """A field that is a setting: the values it accepts, and what it means."""

    kind: Kind
    doc: str


def setting(default: Any, kind: Kind, doc: str) -> Any:
    """A dataclass field that is a setting, with its default, kind and meaning."""
    return field(default=default, metadata={_SETTING: Setting(kind, doc)})


def settings_of(cls: type) -> dict[str, Setting]:
    """The fields of a dataclass that are settings, in their order, by name."""
    found = ((item.name, item.metadata.get(_SETTING)) for item in fields(cls))
    return {name: spec for name, spec in found if spec is not None}


def check(instance: Any, section: str) -> None:
    """Parse every setting of `instance` with its kind, keeping the parsed value (5 is
    kept as 5.0 for a number of seconds); SettingError naming `section.name` if one
    does not fit. `section` is "" for top-level settings."""
    prefix = f"{section}." if section else ""
    for name, spec in settings_of(type(instance)).items():
        value = getattr(instance, name)
        try:
            parsed = spec.kind.parse(value, False)
        except Invalid:
            key = prefix + name
            raise SettingError(spec.kind.refusal(value, False, f"{key} "), (key,)) from None
        object.__setattr__(instance, name, parsed)  # frozen: set once, while being built


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When links sync ([sync]): the interval (with jitter), the backoff, the batch
    size, whether to stay live, and the keepalive of the connections to peers."""

    SECTION: ClassVar[str] = "sync"

    auto: bool = setting(
        True,
        BOOLEAN,
        "scheduled and live sync; when off the node still serves and `peer sync` works",
    )
    interval: float = setting(60.0, UP_TO_A_DAY, "seconds between sync rounds with each peer")
    jitter: float = setting(0.1, FRACTION, "random spread of the interval, as a fraction (+-)")
    backoff_initial: float = setting(
        1.0, UP_TO_AN_HOUR, "seconds to wait after a failure; doubles each time"
    )
    backoff_max: float = setting(300.0, UP_TO_A_DAY, "the longest wait after failures, in seconds")
    batch: int = setting(DEFAULT_BATCH, integer(1, 100_000), "records per message asked of peers")
    live: bool = setting(
        True, BOOLEAN, "keep Subscribe streams to reachable peers (live propagation)"
    )
    graft_after: float = setting(
        1.0,
        UP_TO_AN_HOUR,
        "seconds a log may stay behind what a neighbour noted before that neighbour "
        "feeds it instead (each switch costs a copy of what is in flight)",
    )
    keepalive: float = setting(
        KEEPALIVE_S,
        UP_TO_AN_HOUR,
        "seconds between pings on a quiet connection (a dead peer is noticed)",
    )
    keepalive_timeout: float = setting(
        KEEPALIVE_TIMEOUT_S,
        UP_TO_AN_HOUR,
        "seconds to wait for a ping's answer before the connection counts as dead",
    )

    def __post_init__(self) -> None:
        check(self, self.SECTION)
        if self.backoff_max < self.backoff_initial:
            raise SettingError(
                f"sync.backoff_max ({self.backoff_max:g}) must be at least "
                f"sync.backoff_initial ({self.backoff_initial:g})",
                ("sync.backoff_max", "sync.backoff_initial"),
            )

    def next_round(self, rng: random.Random) -> float:
        """Seconds to the next round: the interval, give or take `jitter` of it."""
        return self.interval * (1.0 + rng.uniform(-self.jitter, self.jitter))

    def backoff(self, failures: int, retryable: bool = True) -> float:
        """Seconds to wait after `failures` failures in a row: doubling, capped. The cap
        at once if the last one was not `retryable`: trying sooner changes nothing until
        someone acts, and a peer upgraded or repaired calls us (which wakes the link)."""
        if failures <= 0:
            return 0.0
        if not retryable:
            return self.backoff_max
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 62))


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryConfig:
    """Whether and where this node announces itself and looks for peers ([discovery])."""

    SECTION: ClassVar[str] = "discovery"

    enabled: bool = setting(True, BOOLEAN, "announce this node and find peers on the LAN (mDNS)")
    interfaces: tuple[str, ...] = setting((), IP_LIST, "IP addresses to announce on; empty = all")

    def __post_init__(self) -> None:
        check(self, self.SECTION)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one caller may ask of this node at once ([limits]; the fields that are not
    settings are set by code: tests, and the daemon's ping floor)."""

    SECTION: ClassVar[str] = "limits"

    streams_per_caller: int = setting(8, integer(1, 1024), "concurrent streams per peer")
    max_batch: int = setting(2048, integer(1, 100_000), "most records sent in one message")
    default_batch: int = DEFAULT_BATCH
    subscriber_queue: int = setting(
        64, integer(1, 100_000), "batches queued per live subscriber before it is cut off"
    )
    max_message_bytes: int = MAX_MESSAGE_BYTES
    rate: float = setting(50.0, POSITIVE, "calls per second allowed to each peer")
    burst: int = setting(
        200, integer(1, 1_000_000), "calls a peer may make in a burst before the rate applies"
    )
    idle_s: float = 60.0  # a push that sends (a pull that reads) nothing this long: closed
    write_idle_s: float = 10.0  # a subscriber that fell behind and reads nothing: cut
    min_ping_interval: float = MIN_PING_INTERVAL_S  # seconds; more frequent pings are strikes

    def __post_init__(self) -> None:
        check(self, self.SECTION)
