"""Per-caller limits: a request rate, and strikes for invalid data that cut a peer off.

A peer that sends forged, tampered, gapped, forked or malformed data gets a strike;
at STRIKES_TO_BAN strikes within the window it is refused for BAN_S seconds (Hypercore
backs off and tears down at repeated invalid requests, the same idea). A caller that
keeps calling over the rate limit (flood_to_ban refusals within the window) is cut off
the same way. Honest peers never hit these limits: a sync session is a handful of calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.errors import (
    ForgeryError,
    ForkDetected,
    GapError,
    InvalidRecord,
    PeerError,
    ProtocolError,
    Throttled,
)

# A fork is authentic data, but presenting one is how a keyed node rewrites its past;
# an honest relay stops offering a log once we hold it frozen (it shows in our index).
OFFENCES = (ForgeryError, InvalidRecord, ProtocolError, GapError, ForkDetected)


MAX_BAN_DOUBLINGS = 6
MAX_CALLERS = 4096  # callers remembered; past it, those idle longest are forgotten


@dataclass
class _Caller:
    tokens: float
    refilled: float
    strikes: list[float] = field(default_factory=list)
    banned_until: float = 0.0
    refused: int = 0  # calls refused by the rate limit since `refused_since`
    refused_since: float = 0.0
    ban_reason: str = ""
    bans: int = 0  # how often this caller was cut off: each ban lasts twice the last


class CallerPolicy:
    """Admits or refuses each call of a caller; counts its offences."""

    def __init__(
        self,
        rate: float = 50.0,
        burst: int = 200,
        strikes_to_ban: int = 5,
        window_s: float = 60.0,
        ban_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        flood_to_ban: int = 1000,
        offences: tuple[type[PeerError], ...] = OFFENCES,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.strikes_to_ban, self.window_s, self.ban_s = strikes_to_ban, window_s, ban_s
        self.flood_to_ban = flood_to_ban  # calls over the rate within the window: a flood
        self.clock = clock
        self.offences = offences
        self.max_callers = max_callers
        self.bans = 0  # how many times a caller was cut off (peer_backoffs)
        self._callers: dict[str, _Caller] = {}

    def admit(self, caller: str) -> None:
        """Raise Throttled if the caller is cut off or calls too fast."""
        now = self.clock()
        state = self._state(caller, now)
        if now < state.banned_until:
            raise Throttled(
                f"{state.ban_reason}: refused for {state.banned_until - now:.0f} more seconds"
            )
        state.tokens = min(self.burst, state.tokens + (now - state.refilled) * self.rate)
        state.refilled = now
        if state.tokens < 1:
            if now - state.refused_since > self.window_s:
                state.refused, state.refused_since = 0, now
            state.refused += 1
            if state.refused >= self.flood_to_ban:  # it keeps calling: cut it off
                self._ban(state, now, "too many requests over the rate limit from you")
            raise Throttled(f"too many requests: at most {self.rate:.0f} per second")
        state.tokens -= 1

    def note(self, caller: str, error: BaseException) -> None:
        """Count an offence (invalid data) against the caller."""
        if not isinstance(error, self.offences):
            return
        now = self.clock()
        state = self._state(caller, now)
        state.strikes = [t for t in state.strikes if now - t < self.window_s] + [now]
        if len(state.strikes) >= self.strikes_to_ban:
            self._ban(state, now, "too many invalid requests from you")

    def _ban(self, state: _Caller, now: float, reason: str) -> None:
        """Cut the caller off; a repeat offender for twice as long each time (up to 64x),
        so that one that keeps flooding stays cut off."""
        state.bans += 1
        state.banned_until = now + self.ban_s * 2 ** min(state.bans - 1, MAX_BAN_DOUBLINGS)
        state.ban_reason = reason
        state.strikes.clear()
        state.refused = 0
        self.bans += 1

    def strikes(self, caller: str) -> int:
        state = self._callers.get(caller)
        return 0 if state is None else len(state.strikes)

    def banned(self, caller: str) -> bool:
        state = self._callers.get(caller)
        return state is not None and self.clock() < state.banned_until

    def _state(self, caller: str, now: float) -> _Caller:
        state = self._callers.get(caller)
        if state is None:
            if len(self._callers) >= self.max_callers:
                self._forget(now)
            state = self._callers[caller] = _Caller(float(self.burst), now)
        return state

    def _forget(self, now: float) -> None:
        """Bound the memory a stream of new addresses can take: drop the half of the
        callers that called longest ago, never one that is cut off."""
        idle = sorted((s.refilled, c) for c, s in self._callers.items() if s.banned_until <= now)
        for _, caller in idle[: max(1, len(self._callers) // 2)]:
            del self._callers[caller]


def is_offence(error: PeerError) -> bool:
    return isinstance(error, OFFENCES)
