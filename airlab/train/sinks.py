"""Where a run's metric records go: a list of sinks, each told every record the run loop makes.

The loop writes every record through its sinks and never to a file itself. The first two are the
metrics file (`metrics.jsonl`, the source of truth) and the terminal (the `step ...` and
`eval ...` lines); a tracker (TensorBoard, MLflow) is one more file with a class implementing
`Sink`, registered by name in `SINKS` below. Only the main process of a run has sinks (see
airlab.train.process).

A sink's life in one process: built from a `Context` (no I/O yet) -> `resume(Resume)` when the
process continues a run from a checkpoint (forget what came after its step) -> `open()` as
training starts -> `write(record)` for each record -> `finish(summary)` when the run completes
(summary.json, curves.png and the samples are written by then) -> `close()` (also after a failure).
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

from airlab.train import rundir
from airlab.train.trackers import TRACKERS


@dataclass(frozen=True)
class Record:
    """One logged or evaluated step: the training metrics since the last record, or one split's
    evaluation."""

    step: int  # optimizer steps done, from 1
    split: str  # "train", "val" or "test"
    metrics: dict[str, float]  # name -> value, in the task's order
    epoch: float  # epochs done at this step: step / steps per epoch (summary.json's `epochs`, the
    #               terminal's `epoch`)
    epoch_index: int  # the epoch this step ran in, from 0 (trackers that want a whole number)
    wall: float  # time.time() when recorded
    lr: float | None = None  # train records: the learning rate of the step
    samples_per_s: float | None = None  # train records: training throughput since the last record

    def as_json(self, t0: float) -> dict:
        """The metrics.jsonl line of this record, its time counted from `t0`."""
        extra = {} if self.split != "train" else {"lr": self.lr, "samples_per_s": round(self.samples_per_s, 2)}
        return {"step": self.step, "epoch": round(self.epoch, 4), "split": self.split, "metrics": self.metrics,
                **extra, "time": round(self.wall - t0, 3)}


@dataclass(frozen=True)
class Resume:
    """A process continues a run from the checkpoint at `step`: records after it are not part of
    the run any more (the resumed process writes them again)."""

    step: int
    checkpoint: Path
    run_dir: Path
    config_changes: tuple[str, ...] = ()  # config keys changed by --allow-config-change


@dataclass(frozen=True)
class Context:
    """What a sink may know of its run, given when it is built."""

    run_dir: Path
    config: Any  # the resolved config (airlab.config.schema)
    reporter: Any  # airlab.train.progress.Reporter: the terminal (and `message` for a line to people)


class Sink(Protocol):
    def resume(self, resume: Resume) -> None:
        """Before `open`, in a process that continues a run: drop what came after resume.step."""

    def open(self) -> None:
        """Training starts in this process."""

    def write(self, record: Record) -> None:
        """One record; a failure to write raises (OSError for a full disk), and the run stops."""

    def finish(self, summary: dict) -> None:
        """The run completed: `summary` is summary.json's content, and its files (summary.json,
        curves.png, the samples) are in the run directory. Not called for a run that stops early
        by a signal or a failure."""

    def close(self) -> None:
        """The run ends in this process, however it ends; safe when `open` never ran."""


class MetricsFile:
    """metrics.jsonl: one JSON object per record, flushed as written; `time` counts from the
    moment this process opened the file."""

    def __init__(self, context: Context):
        self.path = Path(context.run_dir) / "metrics.jsonl"
        self._message = context.reporter.message
        self._f = None
        self.t0 = 0.0

    def resume(self, resume: Resume) -> None:
        rundir.truncate_metrics(self.path, resume.step, warn=self._message)

    def open(self) -> None:
        self._f = open(self.path, "a", encoding="utf-8")
        self.t0 = time.time()

    def write(self, record: Record) -> None:
        self._f.write(json.dumps(record.as_json(self.t0), sort_keys=False) + "\n")
        self._f.flush()

    def finish(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class Terminal:
    """The run's lines for people: `step ...` for training records, `eval ...` for evaluations,
    and what a resume does."""

    def __init__(self, context: Context):
        self.reporter = context.reporter

    def resume(self, resume: Resume) -> None:
        if resume.config_changes:
            self.reporter.message(f"config changed at step {resume.step}: {', '.join(resume.config_changes)}")
        self.reporter.message(f"resuming {resume.run_dir} from {resume.checkpoint.name}")

    def open(self) -> None:
        pass

    def write(self, record: Record) -> None:
        if record.split == "train":
            self.reporter.train(record.step, record.epoch, record.metrics, record.lr, record.samples_per_s)
        else:
            self.reporter.eval(record.step, record.split, record.metrics)

    def finish(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        pass


# Every sink by name, as "module:Class" imported on first use (a tracker's library is imported
# only by a run that asks for it). A tracker adds one line to airlab.train.trackers.TRACKERS.
SINKS: dict[str, str] = {
    "metrics": "airlab.train.sinks:MetricsFile",
    "terminal": "airlab.train.sinks:Terminal",
    **TRACKERS,
}
DEFAULT: tuple[str, ...] = ("metrics", "terminal")  # every run's, in this order


def names_for(config) -> tuple[str, ...]:
    """The sinks of a run of `config`: the default ones, then the trackers it names
    (`output.trackers`)."""
    trackers = getattr(getattr(config, "output", None), "trackers", None) or ()
    return DEFAULT + tuple(t for t in trackers if t not in DEFAULT)


def _sink_class(name: str):
    module, _, attr = SINKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


class Sinks:
    """The run's sinks as one: each hook runs on every sink in order. `close` closes them all
    and then raises the first failure."""

    def __init__(self, sinks: Iterable[Sink] = ()):
        self.sinks: list[Sink] = list(sinks)

    @classmethod
    def build(cls, names: Iterable[str], context: Context) -> "Sinks":
        return cls(_sink_class(name)(context) for name in names)

    def __iter__(self):
        return iter(self.sinks)

    def __len__(self) -> int:
        return len(self.sinks)

    def resume(self, resume: Resume) -> None:
        for sink in self.sinks:
            sink.resume(resume)

    def open(self) -> None:
        for sink in self.sinks:
            sink.open()

    def write(self, record: Record) -> None:
        for sink in self.sinks:
            sink.write(record)

    def finish(self, summary: dict) -> None:
        for sink in self.sinks:
            sink.finish(summary)

    def close(self) -> None:
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as e:  # close the others first
                first = first or e
        if first is not None:
            raise first


__all__ = ["Context", "DEFAULT", "MetricsFile", "Record", "Resume", "SINKS", "Sink", "Sinks", "Terminal",
           "names_for"]
