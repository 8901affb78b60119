"""The benchmark statistics against values worked out by hand or from published tables."""

from __future__ import annotations

import math

import pytest

from benchmarks.stats import mcnemar, mcnemar_p, mean_std, verdict, wilson


def test_wilson_known_values() -> None:
    # 8/10: the textbook Wilson 95% interval is (0.4902, 0.9433).
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4)
    assert hi == pytest.approx(0.94332, abs=1e-4)
    # 0/10 and 10/10: one end at the boundary, the other at n / (n + z^2) = 0.7225.
    assert wilson(0, 10) == pytest.approx((0.0, 1 - 0.72246), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-4)
    # 359 test images at 97.5% (digits): the interval is about +-1.6 points, asymmetric.
    lo, hi = wilson(350, 359)
    assert 0.952 < lo < 0.955 and 0.986 < hi < 0.988


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(3, 2)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson(0, 0)


def test_mcnemar_exact_p_values() -> None:
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024.
    assert mcnemar_p(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_p(9, 1) == pytest.approx(22 / 1024)
    # b=0, c=5: 2 / 32; the smallest count that can reach p < 0.05 with no wins is 6.
    assert mcnemar_p(0, 5) == pytest.approx(0.0625)
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(4, 4) == 1.0  # capped: the two tails overlap
    # Large counts stay finite (log space): scipy.stats.binomtest(400, 920).pvalue = 8.549171e-05.
    assert mcnemar_p(400, 520) == pytest.approx(8.549171e-05, rel=1e-6)


def test_mcnemar_pairs_items_and_verdicts() -> None:
    a = [True] * 90 + [True] * 10 + [False] * 2
    b = [True] * 90 + [False] * 10 + [True] * 2
    test = mcnemar(a, b)
    assert (test.a_only, test.b_only, test.discordant) == (10, 2, 12)
    assert test.p_value == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2**12)
    assert test.p_value == pytest.approx(158 / 4096)  # 0.0386 < 0.05: a significant win for A
    assert verdict(test) == "win"
    # One fewer win for A (9 vs 2): p = 2 * 67 / 2048 = 0.065, inside the noise.
    assert verdict(mcnemar(a[:99] + a[100:], b[:99] + b[100:])) == "tie"


def test_verdict_win_loss_tie() -> None:
    win = mcnemar([True] * 12 + [False] * 1, [False] * 12 + [True] * 1)
    assert win.p_value < 0.01 and verdict(win) == "win"
    loss = mcnemar([False] * 12 + [True] * 1, [True] * 12 + [False] * 1)
    assert verdict(loss) == "loss"
    noise = mcnemar([True, False, True, False], [False, True, False, True])
    assert verdict(noise) == "tie"
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar([True], [True, False])


def test_mean_std() -> None:
    assert mean_std([]) == (None, None)
    assert mean_std([0.9]) == (0.9, None)
    mean, std = mean_std([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02)
