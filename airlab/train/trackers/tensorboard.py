"""The TensorBoard tracker: event files in the run directory, written by tensorboardX.

tensorboardX writes TensorBoard's event files without TensorFlow (and without PyTorch: airlab
imports it with torch hidden, so a TensorFlow run or `airlab export` does not load torch for it).
The files go into the run directory itself, so `tensorboard --logdir runs/` lists every run under
its directory's name; there is nothing else in a run directory TensorBoard would read.

Scalars are tagged as Lightning and the HF Trainer tag them (`train/loss`, `val/accuracy`,
`test/loss`, `train/lr`, `train/epoch`, `train/samples_per_s`), at the record's optimizer step
and wall time; the resolved config is the text `config`, and a completed run adds its
hyperparameters (the flattened config) with its final metrics for TensorBoard's HParams view.

A resumed run (or a second export) has each step once: the run's event files are deleted and
metrics.jsonl, already cut back to the resume step, is replayed into a fresh file before the
run goes on. tensorboardX writes from a thread of its own; `finish` and `close` drain it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airlab.errors import EnvironmentProblem
from airlab.results import export as replay
from airlab.train import rundir
from airlab.train.sinks import Context, Record, Resume

EVENT_GLOB = "events.out.tfevents.*"


def _summary_writer():
    """tensorboardX's SummaryWriter, imported without letting it import torch: tensorboardX takes
    torch only to accept torch tensors, and airlab hands it plain floats."""
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # `import torch` raises ImportError while tensorboardX loads
    try:
        replay.require("tensorboard", "tensorboardX")
        from tensorboardX import SummaryWriter
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import hparams
    finally:
        if hidden and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter, Summary, hparams


def _hparam_value(value):
    """What TensorBoard's HParams view takes: a number, a boolean or a string."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoard:
    """Event files in the run directory (see the module's docstring)."""

    def __init__(self, context: Context):
        self._SummaryWriter, self._Summary, self._hparams = _summary_writer()
        self.run_dir = Path(context.run_dir)
        self.config = context.config
        self._message = context.reporter.message
        self._writer = None
        self._worker = None
        self._replay_upto: int | None = None
        self.end_status: str | None = None  # unused here (MLflow keeps a run status); set by export

    # -- the Sink protocol -------------------------------------------------------------------------
    def resume(self, resume: Resume) -> None:
        """Forget what came after the resume step: the event files go, and `open` replays
        metrics.jsonl (the metrics sink has cut it back to resume.step by now)."""
        self.purge()
        self._replay_upto = resume.step

    def open(self) -> None:
        self._writer = self._SummaryWriter(logdir=str(self.run_dir), max_queue=100, flush_secs=30)
        # tensorboardX's writing thread: if it dies (a full disk), writes would block on its queue
        event_writer = getattr(getattr(self._writer, "file_writer", None), "event_writer", None)
        self._worker = getattr(event_writer, "_worker", None)
        self._writer.add_text("config", "    " + replay.config_text(self.config).replace("\n", "\n    "), 0)
        if self._replay_upto is not None:
            for record in replay.run_records(self.run_dir, upto=self._replay_upto, test=False):
                self._add(record)

    def write(self, record: Record) -> None:
        if self._worker is not None and not self._worker.is_alive():
            self._writer = None  # abandoned: closing it would wait forever on the dead thread's queue
            raise self._failed()
        self._add(record)

    def finish(self, summary: dict) -> None:
        """Hyperparameters and final metrics for the HParams view, then every event on disk."""
        if self._writer is None:
            return
        final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
        metrics = {f"{split}/{name}": float(v) for split, values in final.items() if isinstance(values, dict)
                   for name, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        hparams = {k: _hparam_value(v) for k, v in replay.flat_config(self.config).items()}
        if metrics:  # the metric tags are the run's own scalars: HParams shows their last values
            for event in self._hparams(hparams, metrics):
                self._writer.file_writer.add_summary(event)
        self.close()

    def close(self) -> None:
        """Drain and close the event file. A failure here is raised when the run ended well, and
        only told when the run is failing already (its own error is the one to report)."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        failing = sys.exception() is not None  # close() runs in the loop's `finally`
        try:
            if self._worker is not None and not self._worker.is_alive():
                raise self._failed()  # closing would wait forever on the dead thread's queue
            try:
                writer.close()  # drains the queue, flushes and closes the file
            except OSError as e:
                raise self._failed(e) from None
        except EnvironmentProblem as e:
            if not failing:
                raise
            self._message(f"{e.message}; {e.hint}")

    # -- for export and the tests --------------------------------------------------------------------
    def purge(self) -> None:
        """Delete this run's event files (what a previous process or export wrote)."""
        for path in self.event_files():
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def event_files(self) -> list[Path]:
        return sorted(p for p in self.run_dir.glob(EVENT_GLOB) if p.is_file())

    def where(self) -> dict:
        root = self.run_dir.resolve().parent
        return {"logdir": str(self.run_dir), "event_files": [str(p) for p in self.event_files()],
                "view": f"tensorboard --logdir {root}"}

    # -- inside ------------------------------------------------------------------------------------
    def _add(self, record: Record) -> None:
        """One event per record, holding all its scalars: a quarter of the cost of one
        `add_scalar` per tag (this runs inside the timed training loop)."""
        values = [self._Summary.Value(tag=tag, simple_value=value) for tag, value in replay.scalars(record)]
        self._writer.file_writer.add_summary(self._Summary(value=values), record.step, record.wall)

    def _failed(self, e: OSError | None = None) -> EnvironmentProblem:
        disk = rundir.disk_diagnosis(self.run_dir)
        why = "; ".join(x for x in (e.strerror if e is not None else "", disk) if x)
        return EnvironmentProblem(
            f"output.trackers: tensorboard stopped writing its event file in {self.run_dir}"
            + (f" ({why})" if why else ""),
            hint=f"free disk space or fix permissions; metrics.jsonl is complete: airlab export {self.run_dir} "
                 "--to tensorboard writes the event file again")


__all__ = ["TensorBoard"]
