"""What the reliability tests share: the harness of benchmarks/reliability (the long scripts run the
same code with long settings) and a private redis-server fixture.

Not a conftest.py on purpose: tests/ has no __init__.py, so a second conftest module would replace
tests/conftest.py in sys.modules and break `from conftest import ...` in the other test files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import GENEROUS_BOUND

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "reliability"))

import harness  # noqa: E402


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own: nobody else's flushdb can touch its jobs."""
    server = harness.RedisServer(tmp_path / "redis").start(GENEROUS_BOUND)
    yield server
    server.stop("sigkill", GENEROUS_BOUND)


def assert_verdict_names_each_broken_check(failed_checks, report: dict, broken: dict[str, dict]) -> None:
    """A script's verdict (its failed_checks: its exit status, and benchmarks/long_runs.py's) read on this
    real report, then on copies of it that each break one check: exactly one more failure, naming it."""
    base = failed_checks(report)
    for words, change in broken.items():
        extra = [f for f in failed_checks({**report, **change}) if f not in base]
        assert len(extra) == 1 and words in extra[0], (words, extra)
