"""Rates with 95% confidence intervals."""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: sane at 0% and 100%, unlike the
    normal approximation, which collapses to a zero-width interval there."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, no rounding crumbs
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def rate_with_ci(k: int, n: int) -> dict:
    low, high = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": k / n if n else float("nan"), "ci_low": low, "ci_high": high}


def difference_with_ci(k1: int, n1: int, k2: int, n2: int) -> dict:
    """The difference of two independent proportions k1/n1 - k2/n2 with Newcombe's 95% interval
    (his method 10: from the two Wilson intervals; sane at 0% and 100%, never zero width)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    d = p1 - p2
    return {"difference": d, "ci_low": d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            "ci_high": d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)}


def mean_with_ci(values: list[float], z: float = Z95) -> dict:
    """Mean with a 95% normal-approximation interval (fine for the n >= 100 cells we report)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def bootstrap_seeds(cells: list[tuple[int, int]], reps: int = 4000, seed: int = 0) -> dict:
    """Mean rate over seeds with a 95% percentile bootstrap interval over seeds and prompts:
    each replicate draws the seeds with replacement, then each drawn seed's prompts (binomially,
    at its own rate). `cells` is (k, n) per seed. With one seed it is a prompt bootstrap only."""
    import numpy as np
    cells = [(k, n) for k, n in cells if n]
    if not cells:
        return {"n": 0, "rate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "seeds": 0}
    rng = np.random.default_rng(seed)
    k, n = (np.array(x) for x in zip(*cells))
    drawn = rng.integers(0, len(cells), size=(reps, len(cells)))
    means = (rng.binomial(n[drawn], k[drawn] / n[drawn]) / n[drawn]).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"n": int(n.sum()), "rate": float((k / n).mean()), "ci_low": float(low), "ci_high": float(high),
            "seeds": len(cells)}
