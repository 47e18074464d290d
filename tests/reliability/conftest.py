"""The reliability suite: every test states its criterion and reports its figure.

Tiers: `pr` (default; runs in `make test` and CI) and `soak` (`PEER_SOAK=1`, run by
`make soak`) with the larger counts. A test picks its sizes with `tier.pick(pr, soak)`.

Each test calls `report(criterion, figure, passed, **numbers)` once; a JSON line goes to
`$PEER_REPORT` (default `build/reliability.jsonl`), and `make reliability` renders them
as the table in docs/reliability.md (`tests/reliability/table.py`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEFAULT_REPORT = Path(__file__).resolve().parents[2] / "build" / "reliability.jsonl"
Report = Callable[..., None]


@dataclass(frozen=True)
class Tier:
    """Which tier runs: `pr` (CI) or `soak` (PEER_SOAK=1)."""

    name: str

    @property
    def soak(self) -> bool:
        return self.name == "soak"

    def pick(self, pr: Any, soak: Any) -> Any:
        return soak if self.soak else pr


def current_tier() -> Tier:
    return Tier("soak" if os.environ.get("PEER_SOAK") == "1" else "pr")


@pytest.fixture
def tier() -> Tier:
    return current_tier()


def report_path() -> Path:
    return Path(os.environ.get("PEER_REPORT") or DEFAULT_REPORT)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Record this test's figure: one JSON line, and the same text on stdout."""
    test = request.node.name
    group = test.split("_", 2)[1].upper() if test.count("_") >= 2 else ""

    def write(criterion: str, figure: str, passed: bool, **numbers: Any) -> None:
        line = {
            "test": test,
            "id": group,
            "tier": current_tier().name,
            "criterion": criterion,
            "figure": figure,
            "pass": bool(passed),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **numbers,
        }
        path = report_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")
        print(f"[{line['tier']}] {test}: {figure} ({'pass' if passed else 'FAIL'})")

    return write
