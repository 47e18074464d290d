"""Hybrid logical clock for record timestamps (nanoseconds since the Unix epoch).

A timestamp is never below the wall clock and strictly above every timestamp this
node has issued or accepted, so a write made after syncing another node's write
orders after it even when the wall clocks disagree by days. A timestamp from too far
in the future is stored but does not drag the clock along (one bad clock must not
push every node's clock into the future for good).

The clock state is one integer, the *floor*: the largest timestamp seen. The store
persists it in the same transaction as the records, so it survives restarts and is
shared by every process writing to one store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

# A peer's clock may run up to a week ahead and still move ours: clocks "skewed by
# days" must order a write made after syncing after what was synced (SPEC §7); a
# clock further ahead is wrong, and must not drag every node into its future.
DEFAULT_MAX_AHEAD_NS = 7 * 24 * 3600 * 10**9


def tick(floor: int, wall: int) -> int:
    """The next timestamp to issue: the wall clock, or just above the floor."""
    return max(wall, floor + 1)


def ticks(floor: int, wall: int, count: int) -> range:
    """`count` timestamps issued in a row at one wall clock reading (what `tick`
    gives, each time at the last): from `tick(floor, wall)` up, one apart."""
    first = tick(floor, wall)
    return range(first, first + count)


def observe(floor: int, seen: Iterable[int], wall: int, max_ahead_ns: int) -> int:
    """The floor after accepting timestamps `seen`; those too far ahead are ignored."""
    limit = wall + max_ahead_ns
    return max([floor, *(t for t in seen if t <= limit)])


def wall_clock_ns() -> int:
    """The wall clock, in the clock's unit; one place to fake it in tests."""
    return time.time_ns()
