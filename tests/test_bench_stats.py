"""The benchmarks' verdict statistic (``experiments/_bench_common.py``): the median of per-round
paired ratios with a distribution-free 95% confidence interval.

``median_ci(n)`` must be the tightest pair of order statistics whose miss probability is at most
5% (checked against the binomial sums directly), and its coverage must hold on samples with a
known median (a seeded simulation: the interval is exact for continuous data, so its coverage is
at least 95%; 4,000 draws put the observed rate within ~0.35% of the true one, so 0.94 is ~3
standard deviations below the smallest coverage any n here has). No timing: data are given.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import _bench_common as common

SAMPLE_SIZES = [6, 7, 10, 12, 30, 60, 100, 300]


def _miss(n: int, k: int) -> float:
    """P(the median lies outside [x_(k), x_(n-1-k)]) = 2 P(Bin(n, 1/2) <= k)."""
    return 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n


@pytest.mark.parametrize("n", [1, 2, 5, *SAMPLE_SIZES])
def test_median_ci_is_the_tightest_valid_pair(n: int) -> None:
    ranks = common.median_ci(n)
    if _miss(n, 0) > 0.05:  # even (min, max) misses too often: no interval
        assert ranks is None
        return
    k, hi = ranks
    assert hi == n - 1 - k
    assert _miss(n, k) <= 0.05
    assert k + 1 >= n / 2 or _miss(n, k + 1) > 0.05  # one rank further in would be invalid


@pytest.mark.parametrize("n", SAMPLE_SIZES)
def test_paired_ratio_covers_the_true_median(n: int) -> None:
    rng = np.random.default_rng(n)
    trials, hits = 4000, 0
    # per-round times: a common load factor (paired away) times lognormal noise; the true median
    # ratio is 0.9
    for _ in range(trials):
        load = rng.uniform(1, 5, n)
        a = 0.9 * load * rng.lognormal(0, 0.2, n)
        b = load * rng.lognormal(0, 0.2, n)
        r = common.paired_ratio(list(a), list(b))
        hits += r["lo"] <= 0.9 <= r["hi"]
    assert hits / trials >= 0.94


VERDICTS = [  # (a, b, verdict): per-round times
    ([1.0] * 10, [2.0] * 10, "faster"),
    ([2.0] * 10, [1.0] * 10, "slower"),
    ([1.0, 2.0] * 5, [1.5] * 10, "tie"),
    ([0.5] * 27 + [3.0] * 3, [1.0] * 30, "faster"),  # three outlier rounds do not decide it
]


@pytest.mark.parametrize(("a", "b", "verdict"), VERDICTS)
def test_paired_ratio_verdicts(a: list[float], b: list[float], verdict: str) -> None:
    r = common.paired_ratio(a, b)
    assert r["verdict"] == verdict
    assert r["lo"] <= r["median"] <= r["hi"]
    assert r["rounds"] == len(a)


def test_paired_ratio_needs_pairs_and_enough_rounds() -> None:
    assert common.paired_ratio([1.0] * 5, [1.0] * 5) is None  # 5 rounds: no 95% interval
    assert common.paired_ratio([1.0] * 10, [1.0] * 9) is None  # unpaired
