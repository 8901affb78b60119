"""The statistics of the benchmark tables: mean ± std over seeds, Wilson intervals, paired McNemar tests.

Every contender predicts the same test images, so two contenders are compared image by
image (McNemar's test on the discordant pairs), not by their accuracies alone. A gap whose
p-value is at or above ``ALPHA`` is written "tie": it is inside the noise of the test set.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALPHA", "Z95", "McNemar", "mcnemar", "mean_std", "verdict", "wilson"]

ALPHA = 0.05
"""Significance level of the paired test; a gap with p >= ALPHA is a tie."""
Z95 = 1.959963984540054
"""The two-sided 95% quantile of the standard normal."""


def mean_std(xs: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for fewer than two values."""
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    return mean, (statistics.stdev(xs) if len(xs) > 1 else None)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (95% by default).

    Raises:
        ValueError: when ``n`` < 1 or ``k`` is not within 0..n.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _log_binom_pmf_half(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of A and B on the same items."""

    a_only: int
    """Items A gets right and B gets wrong."""
    b_only: int
    """Items B gets right and A gets wrong."""
    p_value: float
    """Exact two-sided binomial p-value on the discordant pairs (1.0 when there are none)."""

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Exact McNemar test of A against B, given per-item correctness on the same items in the same order.

    Raises:
        ValueError: when the two sequences differ in length (they are not paired).
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired test needs equal lengths, got {len(a_correct)} and {len(b_correct)}")
    a_only = sum(1 for a, b in zip(a_correct, b_correct, strict=True) if a and not b)
    b_only = sum(1 for a, b in zip(a_correct, b_correct, strict=True) if b and not a)
    return McNemar(a_only, b_only, mcnemar_p(a_only, b_only))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for discordant counts ``b`` and ``c``: 2 P(X <= min(b, c)), X ~ Bin(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    logs = [_log_binom_pmf_half(n, k) for k in range(min(b, c) + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2 * tail)


def verdict(test: McNemar, alpha: float = ALPHA) -> str:
    """'win' / 'loss' for A against B when the paired test says so at ``alpha``, else 'tie'."""
    if test.p_value >= alpha or test.a_only == test.b_only:
        return "tie"
    return "win" if test.a_only > test.b_only else "loss"
