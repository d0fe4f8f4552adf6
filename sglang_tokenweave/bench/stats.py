"""Figures of repeated runs: the median with the min-max of the repeats, for measurements and
for ratios (a ratio's spread comes from the per-repeat pairs, e.g. ours and stock of the same
repeat, not from dividing two medians)."""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def spread(samples: Sequence[float | None]) -> dict | None:
    """{median, min, max, samples} of the samples present (None where a repeat had none)."""
    values = [float(s) for s in samples if s is not None and not math.isnan(s)]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "samples": values}


def ratio_spread(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> dict | None:
    """Spread of numerator_i / denominator_i over the repeats i where both exist."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators for {len(denominators)} denominators: pairs needed")
    return spread([n / d for n, d in zip(numerators, denominators) if n is not None and d])


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100): a value that occurred."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fmt(s: dict | None, digits: int = 2) -> str:
    """'1.02 (0.98-1.05)' for a spread; '-' for none."""
    if s is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"
