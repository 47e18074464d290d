"""C19: every non-OK status the group C tests saw over raw calls (collected by
rel_c.answer in this session; this file runs after the others of group C)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.reliability.conftest import Report
from tests.reliability.rel_c import LEAK, NOT_OK_ALLOWED, SEEN


def test_c19_error_details_never_leak(report: Report) -> None:
    if not SEEN:
        pytest.skip("run with the other group C tests: no status was collected")
    codes = Counter(code for code, _ in SEEN)
    bad_codes = {code: n for code, n in codes.items() if code not in NOT_OK_ALLOWED}
    leaks = sorted({details for _, details in SEEN if LEAK.search(details)})
    distinct = len({details for _, details in SEEN})
    print(f"{len(SEEN)} non-OK statuses: {dict(codes)}; {distinct} distinct details")
    report(
        "every non-OK status seen by the group C tests: 0 UNKNOWN/INTERNAL (codes from the "
        "documented set), details free of exception text, Python type names and paths",
        f"{len(SEEN):,} non-OK statuses ({distinct} distinct details), "
        f"{sum(bad_codes.values())} with an unexpected code, {len(leaks)} leaks",
        not bad_codes and not leaks,
        statuses=len(SEEN),
        codes=dict(codes),
        leaks=len(leaks),
    )
    assert not bad_codes, bad_codes
    assert not leaks, leaks[:5]
