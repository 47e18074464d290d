"""D5: daemons whose clocks are days and years apart (libfaketime, per process) still
complete mutual-TLS handshakes (certificates valid 2000-9999) and converge; sync is
decided by idx, not by time. A short-lived certificate made here reproduces the
failure that wide validity avoids, and the CLI must say clearly what went wrong.

In-process HLC skew (a peer's timestamps days ahead, the floor never dragged along)
is covered by tests/test_convergence.py; this test checks it across real processes:
each node's own timestamps stay strictly increasing and near its own (skewed) clock.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from peer.crypto import TLS_SERVER_NAME
from tests.reliability.conftest import Report
from tests.reliability.netfaults import (
    Daemon,
    SkewNetwork,
    all_heads_equal,
    cli,
    eventually,
    faketime_env,
    free_port,
    init_homes,
    leftovers,
    libfaketime,
    start_mesh,
    stop_all,
    tail_data,
    write_config,
)

SKEWS = ["-3d", "+5y", "-1y"]
YEAR_S = 365.25 * 24 * 3600
OFFSETS_S = {"-3d": -3 * 86400, "+5y": 5 * YEAR_S, "-1y": -YEAR_S}
SETTINGS = {"interval": 1.0, "backoff_initial": 0.2, "backoff_max": 1.0}
RECORDS = 50
TAG = "skew"


def short_lived(home: Path) -> None:
    """Replace the home's certificate by one valid from an hour ago for one day."""
    key = serialization.load_pem_private_key((home / "tls.key").read_bytes(), None)
    old = x509.load_pem_x509_certificate((home / "tls.crt").read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (home / "tls.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


async def short_cert_failure(tmp_path: Path, skewed: Daemon) -> str:
    """`peer sync` from a node 5 years ahead to a node with a one-day certificate."""
    ((home, _),) = await init_homes(tmp_path / "short", ["short"])
    short_lived(home)
    short_id = (await cli(home, "id")).strip()
    skewed_id = (await cli(skewed.home, "id")).strip()
    port = free_port()
    write_config(home, {"auto": False}, [(skewed_id, skewed.listen)])
    server = Daemon("short", home, f"127.0.0.1:{port}")
    try:
        await server.start()
        await cli(skewed.home, "peers", "add", short_id, server.listen, "--name", "short")
        return await cli(skewed.home, "sync", "short", env=faketime_env("+5y"), check=False)
    finally:
        await server.kill()


async def test_d5_clock_skew_tls_and_sync(tmp_path: Path, report: Report) -> None:
    if libfaketime() is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    network = SkewNetwork(SKEWS)
    daemons: list[Daemon] = []
    try:
        daemons = await start_mesh(tmp_path, network, len(SKEWS), SETTINGS)
        started = time.monotonic()
        for i, daemon in enumerate(daemons):
            lines = "".join(f"{daemon.name}-{n}\n" for n in range(RECORDS))
            await cli(
                daemon.home,
                "append",
                "--tag",
                TAG,
                stdin=lines,
                env=network.env(i),
            )
        await eventually(
            functools.partial(all_heads_equal, daemons, len(daemons)), "convergence", 60
        )
        converge_s = time.monotonic() - started  # from the first append
        reads = [await tail_data(d, TAG) for d in daemons]
        verified = [await cli(d.home, "verify", "--json", check=False) for d in daemons]
        failure = await short_cert_failure(tmp_path, daemons[1])
    finally:
        await stop_all(daemons)
    left = leftovers(tmp_path)  # faketime forks: the whole process group must be gone
    now = time.time()
    complete = sum(1 for read in reads if len(read) == RECORDS * len(SKEWS))
    skew_seen = {}
    increasing = 0
    for i, daemon in enumerate(daemons):
        mine = sorted(
            (r["idx"], r["timestamp"]) for r in reads[0] if r["data"].startswith(daemon.name)
        )
        stamps = [t for _, t in mine]
        increasing += all(a < b for a, b in itertools.pairwise(stamps))
        skew_seen[SKEWS[i]] = stamps[0] / 1e9 - now
    clocks_ok = all(
        abs(skew_seen[s] - OFFSETS_S[s]) < 2 * 86400 for s in SKEWS
    )  # faketime really moved each clock
    verify_ok = sum(1 for out in verified if '"ok": true' in out)
    clear = "certificate" in failure.lower() and (
        "expired" in failure.lower() or "valid" in failure.lower()
    )
    passed = complete == len(SKEWS) and verify_ok == len(SKEWS) and clocks_ok and clear
    passed = passed and increasing == len(SKEWS)
    report(
        "nodes at -3 d, +5 y, -1 y: mTLS handshakes succeed, sync converges; a short-lived "
        "certificate reproduces the expiry failure and the CLI reports it clearly",
        f"{len(SKEWS)} skews ({', '.join(SKEWS)}), {complete}/{len(SKEWS)} converge in "
        f"{converge_s:.1f} s ({RECORDS} records each); own timestamps increasing on "
        f"{increasing}/{len(SKEWS)}; short cert: {'clear error' if clear else 'UNCLEAR'}: "
        f"{failure.strip()[:160]!r}",
        passed,
        converged=complete,
        converge_s=round(converge_s, 2),
        clear_error=clear,
    )
    assert not left, f"processes left running: {left}"
    assert clocks_ok, skew_seen
    assert complete == len(SKEWS)
    assert verify_ok == len(SKEWS), verified
    assert increasing == len(SKEWS)
    assert clear, failure
