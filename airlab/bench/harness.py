"""The timing harness: warm-up, device-synchronized timed repeats, and their statistics.

The harness knows nothing of frameworks. A backend hands it a workload (`run()` one iteration,
optionally `flush()` to evict caches between timed iterations) and a clock:

- `WallClock(sync)`: the host's monotonic clock, with the device synchronized before reading
  the start and the end, so queued asynchronous work is inside the window.
- a device clock (CUDA events, from the torch backend): `start()`/`stop()` record events on the
  stream and `finish()` synchronizes once, after all repeats, before `elapsed()` is read.

Each repeat times `inner` back-to-back iterations (calibrated from the warm-up so a window is not
shorter than `min_window_s`; 1 whenever a flush is needed between iterations) and yields the time
per iteration. The statistic reported is the median over repeats; the spread is the
inter-quartile range relative to the median, with the minimum and maximum kept beside it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

STATISTIC = ("median over timed repeats of the time per iteration (each repeat: `inner` back-to-back iterations "
             "between two device-synchronized clock readings); spread = (q3 - q1) / median")


class Clock(Protocol):
    def start(self) -> Any: ...

    def stop(self) -> Any: ...

    def finish(self) -> None:
        """Wait until every recorded mark is complete (device synchronize)."""

    def elapsed(self, start: Any, stop: Any) -> float:
        """Seconds between two marks; valid after finish()."""


class WallClock:
    """perf_counter readings taken after a device synchronize (`now` is a seam for tests: a virtual time)."""

    def __init__(self, sync: Callable[[], None] = lambda: None, now: Callable[[], float] = time.perf_counter):
        self.sync = sync
        self.now = now

    def start(self) -> float:
        self.sync()
        return self.now()

    def stop(self) -> float:
        self.sync()
        return self.now()

    def finish(self) -> None:
        self.sync()

    def elapsed(self, start: float, stop: float) -> float:
        return stop - start


class Workload(Protocol):
    def run(self) -> None: ...


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Stats:
    """Seconds per iteration over the timed repeats."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    repeats: int
    inner: int = 1
    samples: list[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """Inter-quartile range relative to the median (0.05 = 5 %)."""
        return (self.q3 - self.q1) / self.median if self.median > 0 else float("nan")

    @classmethod
    def of(cls, samples: list[float], inner: int = 1) -> "Stats":
        s = sorted(samples)
        return cls(median=statistics.median(s), q1=quantile(s, 0.25), q3=quantile(s, 0.75), min=s[0], max=s[-1],
                   repeats=len(s), inner=inner, samples=list(samples))

    def as_dict(self) -> dict:
        return {"median_s": self.median, "q1_s": self.q1, "q3_s": self.q3, "min_s": self.min, "max_s": self.max,
                "spread": self.spread, "repeats": self.repeats, "inner": self.inner}


def calibrate_inner(seconds_per_iteration: float, min_window_s: float, max_inner: int = 10_000) -> int:
    """Iterations per timed window so that a window lasts at least `min_window_s`."""
    if seconds_per_iteration <= 0 or not math.isfinite(seconds_per_iteration):
        return max_inner
    return max(1, min(max_inner, math.ceil(min_window_s / seconds_per_iteration - 1e-9)))


def measure(run: Callable[[], None], clock: Clock, *, warmup: int = 2, repeats: int = 5,
            min_window_s: float = 0.0, flush: Callable[[], None] | None = None,
            inner: int | None = None, on_window: Callable[[], Any] | None = None,
            budget_s: float | None = None, min_repeats: int = 3, warmup_s: float = 0.0) -> Stats:
    """Time `run` (one iteration) and return seconds per iteration over `repeats` windows.

    Warm-up iterations are run first (at least one, which also calibrates `inner` unless it is
    given): `warmup` of them, then more until `warmup_s` seconds of warm-up have passed (a
    framework's first products in a process run slower: thread pools, kernel caches, first
    touch). With `flush`, the cache is flushed before every timed iteration, outside the window,
    and `inner` is 1. Without a fixed `inner`, it is recalibrated after every window from that
    window's time, so a machine that slows down mid-way does not stretch the run. With
    `budget_s`, timing stops once that many seconds have passed and `min_repeats` are done.
    `on_window`, if given, is a context-manager factory entered around the timed repeats
    (telemetry).
    """
    if repeats < 1:
        raise ValueError(f"Expected `repeats` >= 1. Received: repeats={repeats}")
    warm_t = float("inf")
    warm_start, done = time.perf_counter(), 0
    while done < max(1, warmup) or time.perf_counter() - warm_start < warmup_s:
        if flush is not None:
            flush()
        a = clock.start()
        run()
        b = clock.stop()
        clock.finish()
        warm_t = clock.elapsed(a, b)  # the last warm-up iteration: the most representative
        done += 1
    adaptive = inner is None and flush is None
    if flush is not None:
        inner = 1
    elif inner is None:
        inner = calibrate_inner(warm_t, min_window_s)

    from contextlib import nullcontext

    marks, inners = [], []
    t0 = time.perf_counter()
    with (on_window() if on_window is not None else nullcontext()):
        for i in range(repeats):
            if flush is not None:
                flush()
            a = clock.start()
            for _ in range(inner):
                run()
            b = clock.stop()
            marks.append((a, b))
            inners.append(inner)
            if adaptive or budget_s is not None:
                clock.finish()  # a wall clock's stop() has synchronized already; events need it
                last = clock.elapsed(a, b) / inner
                if adaptive:
                    inner = calibrate_inner(last, min_window_s)
                if budget_s is not None and i + 1 >= min_repeats and time.perf_counter() - t0 > budget_s:
                    break
        clock.finish()
    samples = [clock.elapsed(a, b) / n for (a, b), n in zip(marks, inners)]
    return Stats.of(samples, inner=max(set(inners), key=inners.count))
