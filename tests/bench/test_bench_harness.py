"""The timing harness against known workloads: synchronization, per-iteration times, statistics.

Real time is asserted only where it holds on a loaded machine (a window is never shorter than the
work it waits for, and never longer than the call that timed it); exact checks use a scripted
clock or a virtual time injected into the wall clock.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from airlab.bench.harness import Stats, WallClock, calibrate_inner, measure, quantile


class AsyncDevice:
    """Work is queued and done by a worker thread, like a GPU stream; sync() waits for it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.q: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()

    def _work(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            time.sleep(self.seconds)
            self.q.task_done()

    def launch(self):
        self.q.put(1)  # returns at once

    def sync(self):
        self.q.join()

    def close(self):
        self.q.put(None)


class VirtualDevice:
    """Work is queued by launch() and done, in virtual time, when the host synchronizes."""

    LAUNCH_S = 1e-6

    def __init__(self, seconds: float):
        self.seconds, self.t, self.queued = seconds, 0.0, 0

    def launch(self):
        self.t += self.LAUNCH_S  # the launch itself
        self.queued += 1

    def sync(self):
        self.t += self.queued * self.seconds
        self.queued = 0

    def now(self) -> float:
        return self.t


class WorkClock:
    """A clock that reads the work done so far, 1 ns per unit: the same however loaded the machine is."""

    def __init__(self):
        self.units = 0

    def now(self) -> float:
        return self.units * 1e-9


def test_a_sleep_is_timed_as_long_as_it_sleeps():
    t0 = time.perf_counter()
    stats = measure(lambda: time.sleep(0.02), WallClock(), warmup=1, repeats=3, inner=1)
    elapsed = time.perf_counter() - t0
    assert stats.repeats == 3
    assert stats.min >= 0.02  # never shorter than the sleep, however loaded the machine
    assert sum(stats.samples) <= elapsed  # each window counted once, all inside the call
    assert stats.min <= stats.q1 <= stats.median <= stats.q3 <= stats.max


def test_queued_work_is_inside_the_window_only_with_the_device_synchronized():
    dev = VirtualDevice(0.02)
    synced = measure(dev.launch, WallClock(dev.sync, now=dev.now), warmup=1, repeats=3, inner=1)
    assert synced.samples == pytest.approx([0.02 + dev.LAUNCH_S] * 3)
    assert dev.queued == 0
    unsynced = measure(dev.launch, WallClock(now=dev.now), warmup=1, repeats=3, inner=1)
    assert unsynced.samples == pytest.approx([dev.LAUNCH_S] * 3)  # it measured only the launch
    assert dev.queued == 4  # the work was still queued when every window closed


def test_a_real_asynchronous_device_is_waited_for():
    dev = AsyncDevice(0.02)
    try:
        synced = measure(dev.launch, WallClock(dev.sync), warmup=1, repeats=3, inner=1)
        assert synced.min >= 0.02  # the window waited for the queued work, however loaded the machine
        assert dev.q.unfinished_tasks == 0
    finally:
        dev.close()


def test_a_fixed_amount_of_arithmetic_scales_with_the_work_and_is_per_iteration():
    wc = WorkClock()
    calls = []

    def work(n):
        def run():
            calls.append(n)
            wc.units += n
        return run

    small = measure(work(20_000), WallClock(now=wc.now), warmup=1, repeats=7, min_window_s=0.02)
    large = measure(work(80_000), WallClock(now=wc.now), warmup=1, repeats=7, min_window_s=0.02)
    # a 0.02 s window holds 1,000 iterations of 20 us, and a quarter as many of the 4x larger ones
    assert (small.inner, large.inner) == (1000, 250)
    assert calls.count(20_000) == 1 + 7 * 1000 and calls.count(80_000) == 1 + 7 * 250
    # each window is divided by its iterations: the time per iteration, 4x for 4x the work
    assert small.samples == pytest.approx([20e-6] * 7) and large.samples == pytest.approx([80e-6] * 7)
    assert large.median / small.median == pytest.approx(4.0)


class ScriptedClock:
    """Returns scripted durations for consecutive windows; records the order of calls."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.events = []
        self.t = 0.0

    def start(self):
        self.events.append("start")
        return self.t

    def stop(self):
        self.events.append("stop")
        self.t += self.durations.pop(0)
        return self.t

    def finish(self):
        self.events.append("finish")

    def elapsed(self, a, b):
        return b - a


def test_statistics_of_known_samples():
    s = Stats.of([5.0, 1.0, 4.0, 2.0, 3.0], inner=2)
    assert (s.median, s.min, s.max, s.repeats, s.inner) == (3.0, 1.0, 5.0, 5, 2)
    assert (s.q1, s.q3) == (2.0, 4.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    assert quantile([1.0, 2.0], 0.5) == 1.5
    assert Stats.of([7.0]).spread == 0.0
    d = s.as_dict()
    assert set(d) == {"median_s", "q1_s", "q3_s", "min_s", "max_s", "spread", "repeats", "inner"}


def test_warmup_is_excluded_and_each_window_is_divided_by_its_iterations():
    # one warm-up window (1 iteration, 10 s), then 3 timed windows of 4 iterations
    clock = ScriptedClock([10.0, 4.0, 8.0, 6.0])
    stats = measure(lambda: None, clock, warmup=1, repeats=3, inner=4)
    assert stats.samples == [1.0, 2.0, 1.5]
    assert stats.median == 1.5 and stats.inner == 4


def test_flush_runs_before_every_timed_iteration_outside_the_window():
    clock = ScriptedClock([1.0] * 10)
    log = clock.events
    stats = measure(lambda: log.append("run"), clock, warmup=2, repeats=3, flush=lambda: log.append("flush"))
    assert stats.inner == 1
    timed = log[log.index("finish", log.index("finish") + 1) + 1:]  # after the two warm-up finishes
    assert timed == ["flush", "start", "run", "stop"] * 3 + ["finish"]


def test_inner_is_calibrated_from_the_warmup_to_fill_the_window():
    assert calibrate_inner(0.001, 0.05) == 50
    assert calibrate_inner(0.2, 0.05) == 1
    assert calibrate_inner(0.0, 0.05) == 10_000
    clock = ScriptedClock([0.01] + [0.1] * 5)  # warm-up: 10 ms per iteration
    stats = measure(lambda: None, clock, warmup=1, repeats=1, min_window_s=0.1)
    assert stats.inner == 10


def test_a_machine_that_slows_down_gets_shorter_windows_and_the_budget_stops_timing():
    # warm-up 2 ms/iteration -> inner 50 for a 0.1 s window; the first window then takes 10 s
    # (200 ms/iteration), so the next windows run one iteration each
    clock = ScriptedClock([0.002, 10.0, 0.2, 0.2, 0.2])
    calls = []
    stats = measure(lambda: calls.append(1), clock, warmup=1, repeats=4, min_window_s=0.1)
    assert len(calls) == 1 + 50 + 1 + 1 + 1
    assert stats.samples == pytest.approx([0.2, 0.2, 0.2, 0.2])
    # a budget already spent stops after min_repeats windows
    clock = ScriptedClock([0.01] * 20)
    stats = measure(lambda: time.sleep(0.001), clock, warmup=1, repeats=10, inner=1, budget_s=0.0, min_repeats=3)
    assert stats.repeats == 3


def test_warmup_lasts_at_least_warmup_s_and_the_timing_starts_after_it():
    calls = []

    def run():
        calls.append(time.perf_counter())
        time.sleep(0.005)

    t0 = time.perf_counter()
    stats = measure(run, WallClock(), warmup=1, repeats=2, inner=1, warmup_s=0.1)
    warm = len(calls) - 2
    assert warm >= 2 or calls[1] - calls[0] >= 0.1, "one 5 ms warm-up iteration cannot fill 0.1 s"
    assert calls[warm] - t0 >= 0.1  # the first timed iteration starts once the warm-up time is spent
    assert stats.repeats == 2
    calls.clear()
    measure(run, WallClock(), warmup=3, repeats=1, inner=1)  # no warmup_s: the count alone
    assert len(calls) == 3 + 1


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, WallClock(), repeats=0)
