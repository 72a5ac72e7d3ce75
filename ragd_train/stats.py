"""Paired statistics for A/B comparisons: bootstrap confidence intervals and a sign-flip test."""

from __future__ import annotations

from typing import Any

import numpy as np


def paired_bootstrap(
    base: np.ndarray, new: np.ndarray, *, samples: int = 10_000, alpha: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """Mean difference ``new - base`` with a percentile bootstrap CI over queries (paired resampling)."""
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if base.shape != new.shape or base.ndim != 1 or base.size == 0:
        raise ValueError("paired_bootstrap needs two non-empty 1-d arrays of equal length")
    diff = new - base
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 1000):  # blocks bound memory for large query sets
        stop = min(start + 1000, samples)
        idx = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = diff[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {
        "delta": float(diff.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": 1 - alpha,
    }


def sign_flip_test(base: np.ndarray, new: np.ndarray, *, samples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation test p-value for a zero mean difference."""
    diff = np.asarray(new, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    observed = abs(diff.mean())
    if not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, samples, 1000):
        stop = min(start + 1000, samples)
        signs = rng.choice((-1.0, 1.0), size=(stop - start, diff.size))
        hits += int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return (hits + 1) / (samples + 1)
