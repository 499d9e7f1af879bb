"""Verdicts on figures and the straggler among GPUs.

A figure with a theoretical peak is judged by its fraction of that peak:

- suspicious: above 100 % of peak (or not a positive finite number): the timing, the peak table
  or the clock estimate is wrong, and the figure must not be trusted;
- low: below LOW_MARGIN x the fraction a good run typically reaches on this kind of device;
- ok: otherwise.

A figure without a peak (training throughput, CPU memory copy) gets "n/a".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from airlab.bench.peaks import LOW_MARGIN

OK, LOW, SUSPICIOUS, NA = "ok", "low", "suspicious", "n/a"


@dataclass(frozen=True)
class Verdict:
    label: str
    fraction: float | None  # of peak
    reason: str


def judge(value: float, peak: float | None, expected_fraction: float | None,
          low_margin: float = LOW_MARGIN) -> Verdict:
    if value is None or not math.isfinite(value) or value <= 0:
        return Verdict(SUSPICIOUS, None, f"the measured value {value!r} is not a positive finite number")
    if not peak:
        return Verdict(NA, None, "no theoretical peak to judge against")
    fraction = value / peak
    if fraction > 1.0:
        return Verdict(SUSPICIOUS, fraction, f"{fraction:.0%} of the theoretical peak is impossible: the timing, "
                                             "the peak table entry or the clock estimate is wrong")
    if expected_fraction is not None and fraction < low_margin * expected_fraction * (1 - 1e-9):
        return Verdict(LOW, fraction, f"{fraction:.0%} of peak; about {expected_fraction:.0%} is typical "
                                      f"(low below {low_margin * expected_fraction:.0%})")
    typical = f"; about {expected_fraction:.0%} is typical" if expected_fraction is not None else ""
    return Verdict(OK, fraction, f"{fraction:.0%} of peak{typical}")


def stragglers(values: dict[str, float], tolerance: float = 0.10) -> list[tuple[str, float]]:
    """Devices whose figure (higher is better) is more than `tolerance` below the median of all.

    Returns (device, shortfall) pairs, worst first; nothing with fewer than two devices.
    """
    if len(values) < 2:
        return []
    median = statistics.median(values.values())
    if median <= 0:
        return []
    slow = [(d, 1 - v / median) for d, v in values.items() if v < (1 - tolerance) * median]
    return sorted(slow, key=lambda p: -p[1])
