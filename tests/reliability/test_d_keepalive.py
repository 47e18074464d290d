"""D2: a silent blackhole (no RST, no FIN) between two syncing daemons is noticed by
the HTTP/2 keepalive within keepalive + timeout, not left hanging until a deadline;
after the heal the link reconnects by itself. The sync interval is set far beyond the
test's length, so only the keepalive (not a scheduled round) can notice the dead peer.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.reliability.conftest import Report
from tests.reliability.netfaults import (
    Daemon,
    cli,
    eventually,
    make_network,
    start_mesh,
    stop_all,
)

KEEPALIVE_S, KEEPALIVE_TIMEOUT_S = 2.0, 2.0
SETTINGS = {
    "interval": 600.0,  # no scheduled round during the test: the keepalive must notice
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "keepalive": KEEPALIVE_S,
    "keepalive_timeout": KEEPALIVE_TIMEOUT_S,
}
SLACK_S = 2.0  # status polling and scheduling on a loaded 2-core machine
RECONNECT_LIMIT_S = 5.0
CALM = ("ENHANCE_YOUR_CALM", "too_many_pings", "too many pings")


async def link(daemon: Daemon) -> dict[str, Any]:
    status = await daemon.status()
    assert status is not None, f"{daemon.name} does not answer"
    value: dict[str, Any] = status["peers"][0]["link"] or {}
    return value


async def holds(daemon: Daemon, count: int) -> bool:
    status = await daemon.status()
    return status is not None and sum(log["next_idx"] for log in status["logs"]) >= count


async def test_d2_blackhole_detected_by_keepalive(tmp_path: Path, report: Report) -> None:
    network = await make_network(2)
    daemons: list[Daemon] = []
    errors: list[str] = []
    try:
        daemons = await start_mesh(tmp_path, network, 2, SETTINGS)
        a, b = daemons

        async def both_live() -> bool:
            return all([(await link(d)).get("live") for d in daemons])

        await eventually(both_live, "live streams both ways", 30)
        await cli(b.home, "append", "--tag", "k", "before")
        await eventually(lambda: holds(a, 1), "the live record", 10)
        for _ in range(int(4 * KEEPALIVE_S / 0.25)):  # idle streams, pinged: no GOAWAY
            states = [await link(d) for d in daemons]
            assert all(s.get("live") and not s.get("failures") for s in states), states
            await asyncio.sleep(0.25)
        await network.partition([[0], [1]])
        cut = time.monotonic()

        async def a_noticed() -> bool:
            return not (await link(a)).get("live")

        detect_s = await eventually(a_noticed, "A to notice the dead link", 60)
        errors.append(str((await link(a)).get("last_error")))
        await cli(b.home, "append", "--tag", "k", "after")  # held by B while cut off
        await network.heal()
        healed = time.monotonic()
        await eventually(lambda: holds(a, 2), "the record sent after the heal", 30)
        await eventually(both_live, "live streams again", 30)
        reconnect_s = time.monotonic() - healed
        errors += [str((await link(d)).get("last_error")) for d in daemons]
        # A hung peer (SIGSTOP): its kernel still ACKs the bytes, so only the HTTP/2
        # ping's own timeout can tell (TCP_USER_TIMEOUT cannot).
        b.pause()
        try:
            hung_s = await eventually(a_noticed, "A to notice the hung peer", 60)
        finally:
            b.resume()
        errors.append(str((await link(a)).get("last_error")))
        await eventually(both_live, "live streams after the pause", 30)
        logs = "".join(d.stderr_text() for d in daemons)
        blackholed_s = healed - cut
    finally:
        await stop_all(daemons)
        await network.close()
    calm = sum(text.count(word) for word in CALM for text in [*errors, logs])
    bound = KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + SLACK_S
    passed = max(detect_s, hung_s) <= bound and reconnect_s <= RECONNECT_LIMIT_S and calm == 0
    report(
        "a blackholed (or hung) peer's stream fails within keepalive time + timeout (not at "
        "its deadline); "
        "reconnects within 5 s of the heal; client and server keepalive agree",
        f"{network.kind}: dead peer detected in {detect_s:.1f} s (keepalive {KEEPALIVE_S:.0f} "
        f"+ {KEEPALIVE_TIMEOUT_S:.0f} s, sync interval {SETTINGS['interval']:.0f} s); "
        f"reconnected and synced {reconnect_s:.1f} s after heal; hung (SIGSTOP) peer "
        f"detected in {hung_s:.1f} s; {calm} ENHANCE_YOUR_CALM",
        passed,
        detect_s=round(detect_s, 2),
        reconnect_s=round(reconnect_s, 2),
        hung_s=round(hung_s, 2),
        blackholed_s=round(blackholed_s, 2),
        enhance_your_calm=calm,
    )
    assert detect_s <= bound, errors
    assert hung_s <= bound, errors
    assert reconnect_s <= RECONNECT_LIMIT_S
    assert calm == 0, errors
