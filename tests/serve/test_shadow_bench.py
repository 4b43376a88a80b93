"""benchmarks/shadow_bench.py's verdict on the shadow's cost (issue 17: p99 within 10% with the shadow on):
per-pair p99 ratios, and the distribution-free interval of their median the verdict is read from."""

from __future__ import annotations

import math
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import shadow_bench  # noqa: E402


@pytest.mark.parametrize("n", [3, 6, 8, 12])
def test_the_median_interval_is_the_widest_order_statistics_pair_with_enough_coverage(n):
    values = [1.0 + i / 100 for i in range(n)][::-1]  # unsorted on purpose
    lower, upper, covered = shadow_bench.median_interval(values)
    k = round((lower - 1.0) * 100) + 1  # lower is the k-th smallest
    assert upper == sorted(values)[n - k]
    coverage = lambda k: 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n  # noqa: E731
    assert covered == round(coverage(k), 3)
    assert k == 1 or coverage(k) >= 0.90  # enough: never narrower than the coverage allows
    assert k + 1 > n // 2 or coverage(k + 1) < 0.90  # and the narrowest such interval


def test_the_verdict_needs_the_whole_interval_on_one_side_of_the_goal():
    near = [1.0, 1.02, 0.97, 1.05, 0.99, 1.01, 1.03, 0.98]
    assert shadow_bench.pair_verdict(near)["verdict"] == "within"
    assert shadow_bench.pair_verdict([r + 0.2 for r in near])["verdict"] == "not within"
    noisy = [0.7, 1.4, 0.9, 1.3, 1.0, 1.2, 0.8, 1.1]  # median 1.05, but trials differ by up to 2x
    verdict = shadow_bench.pair_verdict(noisy)
    assert verdict["verdict"] == "unresolved" and verdict["interval"][0] < 1.10 < verdict["interval"][1]
