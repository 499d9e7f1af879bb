"""Progress for people: a rich bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import os
import sys
import time

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
        self.closed = False  # the output pipe closed: the run loop saves and stops

    def _print(self, text: str) -> None:
        try:
            self.console.print(text, highlight=False)
        except OSError:  # a closed pipe (EPIPE), or a terminal that hung up (EIO)
            self.closed, self.quiet = True, True
            silence_closed_output(self.console.file)

    def begin(self, total: int, start: int, description: str) -> None:
        self._total, self._start, self._t0 = total, start, time.time()
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

    def train(self, step: int, epoch: int, metrics: dict, lr: float, sps: float) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=step, sps=f"{sps:,.0f} samples/s",
                                  loss=f"loss {metrics.get('loss', float('nan')):.4g}")
            return
        done = step - self._start
        rate = done / max(1e-9, time.time() - self._t0)
        eta = (self._total - step) / rate if rate > 0 else 0
        self._print(f"step {step}/{self._total} epoch {epoch} {_fmt_metrics(metrics)} lr {lr:.3g} "
                    f"{sps:,.0f} samples/s eta {_fmt_eta(eta)}")

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
