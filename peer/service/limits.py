"""The sync service's limits in one frozen value: the daemon builds it from its config,
the servicer enforces it, the server's channel options are made from it."""

from __future__ import annotations

from dataclasses import dataclass

from peer.batches import DEFAULT_BATCH
from peer.codec.wire import MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class Limits:
    """What one caller may ask of this node at once."""

    streams_per_caller: int = 8
    max_batch: int = 2048
    default_batch: int = DEFAULT_BATCH
    subscriber_queue: int = 64
    max_message_bytes: int = MAX_MESSAGE_BYTES
    rate: float = 50.0  # calls per second per caller (mTLS callers)
    burst: int = 200
    idle_s: float = 60.0  # a push that sends (a pull that reads) nothing this long: closed
    write_idle_s: float = 10.0  # a subscriber that fell behind and reads nothing: cut
    min_ping_interval: float = 10.0  # seconds; pings more frequent than this are strikes
