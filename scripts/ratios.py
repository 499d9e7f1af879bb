"""The ratio arithmetic of the side-by-side benchmarks (bench_trainer_overhead, bench_vs_tuned,
tuned_tf, bench_trackers): arms run in rounds that rotate their order, and a ratio is the median
of the per-round ratios with its interquartile range. No framework is imported here."""

from __future__ import annotations

import statistics
from typing import Callable


def rounds_of(arms: dict[str, Callable[[], float]], n: int) -> dict[str, list[float]]:
    """n rounds of every arm; each round rotates the order, so no arm always runs first."""
    names = list(arms)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(n):
        shift = r % len(names)
        for k in names[shift:] + names[:shift]:
            out[k].append(arms[k]())
    return out


def paired(values: list[float], reference: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range of the per-round ratios values/reference."""
    ratios = [v / r for v, r in zip(values, reference)]
    med = statistics.median(ratios)
    if len(ratios) < 2:
        return med, med, med
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return med, q1, q3
