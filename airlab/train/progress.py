"""Progress for people: a rich bar on a terminal, plain periodic lines otherwise.

A training line reads `step 300/900 epoch 1.50 loss 0.31 lr 0.001 2,345 samples/s eta 0:01:02`:
the epoch is the epochs done, steps / steps per epoch, fractional, as metrics.jsonl's `epoch` and
summary.json's `epochs` count them (after the last step of the first epoch it reads 1.00). A
language model's throughput is in tokens/s (a sample is a window of context tokens). A long run
(`LONG_RUN_S` or more, start to estimated end) also shows the model FLOP/s it achieves and its
MFU against the device's peak (airlab.train.flops): `... 2,345 samples/s 12.3 GFLOP/s MFU 4.1% eta ...`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Console


def silence_closed_output(*streams) -> None:
    """The reader of our output has gone (`airlab train ... | head`): point those streams
    (default: stdout) at /dev/null so nothing more, not even Python's flush at exit, fails on
    the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in streams or (sys.stdout,):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):  # not a real file (tests capture in memory)
                pass
    finally:
        os.close(devnull)


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


# A run this long (elapsed + estimated time left, in seconds) shows FLOP/s and MFU on its lines.
LONG_RUN_S = 60.0


@dataclass(frozen=True)
class Rate:
    """What a training line says of throughput: `unit`s per second (`per_sample` of them in a
    sample), and in a long run the achieved FLOP/s (`flops_per_sample` x samples/s) and the MFU
    (against `peak()`, FLOP/s or None, asked without waiting)."""

    unit: str = "samples"
    per_sample: int = 1
    flops_per_sample: int | None = None
    peak: Callable[[], float | None] | None = None

    def text(self, sps: float, long: bool) -> str:
        out = f"{sps * self.per_sample:,.0f} {self.unit}/s"
        if not long or not self.flops_per_sample:
            return out
        from airlab.train.flops import fmt_flops

        achieved = sps * self.flops_per_sample
        out += f" {fmt_flops(achieved)}"
        peak = self.peak() if self.peak is not None else None
        return out + (f" MFU {100 * achieved / peak:.1f}%" if peak else "")


class Reporter:
    """Shows a run's progress. `rich_bar=None` picks the bar when the console is a terminal."""

    def __init__(self, console: Console | None = None, rich_bar: bool | None = None, quiet: bool = False):
        self.console = console or Console()
        self.rich_bar = self.console.is_terminal if rich_bar is None else rich_bar
        self.quiet = quiet
        self._progress = None
        self._task = None
        self._total = 0
        self._t0 = time.time()
        self._start = 0
        self.rate = Rate()
        self.closed = False  # the output pipe closed: the run loop saves and stops

    def _print(self, text: str) -> None:
        try:
            self.console.print(text, highlight=False)
        except OSError:  # a closed pipe (EPIPE), or a terminal that hung up (EIO)
            self.closed, self.quiet = True, True
            silence_closed_output(self.console.file)

    def begin(self, total: int, start: int, description: str, rate: Rate | None = None) -> None:
        self._total, self._start, self._t0 = total, start, time.time()
        self.rate = rate or Rate()
        if self.quiet:
            return
        if self.rich_bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[sps]}"), TextColumn("{task.fields[loss]}"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self._progress.start()
            from rich.markup import escape

            self._task = self._progress.add_task(escape(description), total=total, completed=start, sps="", loss="")
        else:
            self._print(f"{description}: steps {start}/{total}")

    def step(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def train(self, step: int, epoch: float, metrics: dict, lr: float, sps: float) -> None:
        """A training line; `epoch` is the epochs done (steps / steps per epoch, fractional)."""
        if self.quiet:
            return
        elapsed = max(1e-9, time.time() - self._t0)
        rate = (step - self._start) / elapsed
        eta = (self._total - step) / rate if rate > 0 else 0
        throughput = self.rate.text(sps, long=elapsed + eta >= LONG_RUN_S)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, sps=throughput,
                                  loss=f"loss {metrics.get('loss', float('nan')):.4g}")
            return
        self._print(f"step {step}/{self._total} epoch {epoch:.2f} {_fmt_metrics(metrics)} lr {lr:.3g} "
                    f"{throughput} eta {_fmt_eta(eta)}")

    def eval(self, step: int, split: str, metrics: dict) -> None:
        self.message(f"eval step {step} {split}: {_fmt_metrics(metrics)}")

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            try:
                self._progress.console.print(text, highlight=False)
            except OSError:  # the terminal hung up
                self.closed, self.quiet = True, True
        else:
            self._print(text)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
