"""`airlab export RUN --to tensorboard|mlflow`: show a run in a tracker after the fact, and what a
tracker reads back from a run directory when it replays one (on export, and on resume).

An export replays the run's metrics.jsonl, record by record, through the tracker's own sink class
(airlab.train.trackers), then hands it summary.json when the run completed: the event file or the
MLflow run it leaves is the one the run would have left with `output.trackers` set. A tracker
keeps one copy of a run: an export replaces the previous export, or what the run wrote live
(TensorBoard: the run directory's event files; MLflow: the run named in the run's mlflow.json).

Nothing here imports a deep-learning framework; a tracker's library is imported only when asked
for (and its absence is one line naming the extra that installs it).
"""

from __future__ import annotations

import importlib
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from airlab.errors import EnvironmentProblem, UsageError
from airlab.train import rundir, sinks
from airlab.train.trackers import EXTRAS, TRACKERS

# -- what a tracker needs: its library, the config flattened, the records ---------------------


def require(tracker: str, module: str, package: str | None = None):
    """Import a tracker's library, or raise the one line that says how to install it."""
    package = package or module
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == module.split(".")[0]
        what = "which is not installed" if missing else f"which cannot be imported ({type(e).__name__}: {e})"
        raise EnvironmentProblem(f"output.trackers: {tracker} needs {package}, {what}",
                                 hint=f'pip install "airlab[{EXTRAS.get(tracker, tracker)}]"') from None


def config_dict(config: Any) -> dict:
    """A run's resolved config as plain data: a validated config (airlab.config.schema) or the
    mapping read from a run's config.yaml."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return {}


def flat_config(config: Any) -> dict[str, Any]:
    """The config as one level of dotted keys: {"model.hidden": "[256, 128]", "train.lr": 0.001}.
    Numbers, booleans and strings stay as they are; lists and nulls become their JSON text."""
    out: dict[str, Any] = {}

    def walk(value, prefix: str) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:  # lists, nulls, an empty section
            out[prefix] = json.dumps(value, default=str)

    walk(config_dict(config), "")
    return out


def config_text(config: Any) -> str:
    """The resolved config as YAML (what config.yaml holds)."""
    import yaml

    return yaml.safe_dump(config_dict(config), sort_keys=False, default_flow_style=None, allow_unicode=True)


def scalars(record: sinks.Record) -> list[tuple[str, float]]:
    """A record's points as trackers name them (as Lightning and the HF Trainer do): `train/loss`,
    `val/accuracy`, `test/loss`; a train record also has `train/lr`, `train/epoch` and
    `train/samples_per_s` (its throughput: a slowdown shows in the same view as the curves)."""
    points = [(f"{record.split}/{name}", value) for name, value in record.metrics.items()]
    if record.split == "train":
        points += [("train/lr", record.lr), ("train/epoch", record.epoch),
                   ("train/samples_per_s", record.samples_per_s)]
    out = []
    for tag, value in points:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # a missing value (null) is no point
        out.append((tag, float(value)))
    return out


def _iso_seconds(text) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None


def started_at(run_dir: Path) -> float:
    """When the run began (its first process), as time.time() counts."""
    return _anchors(Path(run_dir))[0]


def _anchors(run_dir: Path) -> tuple[float, list[tuple[int, float]]]:
    """When the run's first process started (its records' `time` counts from about then) and,
    for each resume, its step and when it began: metrics.jsonl keeps times relative to the
    process that wrote each line."""
    env: dict = {}
    try:
        loaded = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
        env = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    start = _iso_seconds(env.get("started"))
    if start is None:
        status = rundir.read_status(run_dir) or {}
        start = _iso_seconds(status.get("started"))
    if start is None:
        try:
            start = (run_dir / "metrics.jsonl").stat().st_mtime
        except OSError:
            start = 0.0
    resumes = []
    for entry in env.get("resumes") or []:
        if isinstance(entry, dict) and isinstance(entry.get("at_step"), int):
            when = _iso_seconds(entry.get("time"))
            if when is not None:
                resumes.append((entry["at_step"], when))
    return start, resumes


def read_metrics(path: Path) -> list[dict]:
    """The JSON records of a metrics.jsonl; a line torn by a kill (or otherwise not a record) is
    left out. Raises OSError when the file cannot be read."""
    out = []
    for line in Path(path).read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if (isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("split"), str)
                and isinstance(record.get("metrics"), dict)):
            out.append(record)
    return out


def run_records(run_dir: Path, *, upto: int | None = None, test: bool = True) -> list[sinks.Record]:
    """metrics.jsonl as the run loop's records, in order: those up to step `upto` when given, and
    without the test split's when `test` is false (a resume: the resumed run writes its own).
    Wall times are rebuilt from env.json (when the run and each resume started). A missing file
    is no records."""
    run_dir = Path(run_dir)
    try:
        raw = read_metrics(run_dir / "metrics.jsonl")
    except FileNotFoundError:
        return []
    start, resumes = _anchors(run_dir)
    out = []
    for r in raw:
        step = r["step"]
        if (upto is not None and step > upto) or (not test and r["split"] == "test"):
            continue
        anchor = start
        for at_step, when in resumes:  # records after a resume's step were written by that process
            if step > at_step:
                anchor = when
        epoch = r.get("epoch") if isinstance(r.get("epoch"), (int, float)) else 0.0
        per_epoch = step / epoch if epoch and epoch > 0 else 0
        index = int((step - 1) // per_epoch) if per_epoch >= 1 and step > 0 else int(math.floor(epoch))
        t = r.get("time") if isinstance(r.get("time"), (int, float)) else 0.0
        lr, sps = r.get("lr"), r.get("samples_per_s")
        out.append(sinks.Record(step=step, split=r["split"], metrics=r["metrics"], epoch=float(epoch),
                                epoch_index=max(index, 0), wall=anchor + float(t),
                                lr=lr if isinstance(lr, (int, float)) else None,
                                samples_per_s=sps if isinstance(sps, (int, float)) else None))
    return out


# -- airlab export --------------------------------------------------------------------------


class _Lines:
    """The reporter a tracker gets during an export: its messages, kept for the caller."""

    def __init__(self, say=None):
        self.lines: list[str] = []
        self._say = say

    def message(self, text: str) -> None:
        self.lines.append(text)
        if self._say is not None:
            self._say(text)


def _read_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror or e})", hint="check the file's permissions") from None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        where = getattr(e, "problem_mark", None)
        at = f":{where.line + 1}" if where is not None else ""
        raise UsageError(f"{path}{at}: not a readable YAML config ({type(e).__name__})",
                         hint="the run's config.yaml was damaged: restore it to export the run") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: not a run's config (expected a mapping of sections)",
                         hint="the run's config.yaml was damaged: restore it to export the run")
    return config


def _summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # half-written or damaged: export it as an unfinished run
    return summary if isinstance(summary, dict) else None


def check_run(run_dir: Path) -> tuple[dict, list[sinks.Record]]:
    """A run directory an export can read: its config and its records, or one line saying why not."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UsageError(f"{run_dir}: no such directory", hint="give a run directory (airlab runs lists them)")
    if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no config.yaml)",
                         hint="give a directory that `airlab train` wrote (airlab runs lists them)")
    if rundir.is_locked(run_dir):
        raise UsageError(f"{run_dir}: the run is still training (another process holds its lock)",
                         hint="export it when it has stopped, or train with output.trackers to see it live")
    config = _read_config(run_dir)
    metrics = run_dir / "metrics.jsonl"
    try:
        records = run_records(run_dir)
    except OSError as e:
        raise UsageError(f"{metrics}: cannot be read ({e.strerror or e})",
                         hint="check the file's permissions") from None
    if not records:
        raise UsageError(f"{metrics}: no metric records to export" if metrics.exists()
                         else f"{run_dir}: no metrics.jsonl (the run stopped before its first record)",
                         hint="nothing to show: the run logged nothing (train it again, or for longer)")
    return config, records


def _status(run_dir: Path, summary: dict | None) -> str:
    """How the exported run ended, for a tracker with a run status (MLflow)."""
    if summary is not None:
        return "FINISHED"
    status = (rundir.read_status(run_dir) or {}).get("status")
    return "FAILED" if status in ("failed", "diverged") else "KILLED"


def export_run(run_dir: Path, to: str, *, tracking_uri: str | None = None, say=None) -> dict:
    """Replay one run into a tracker, replacing what it held of the run before. Returns what was
    written (the tracker's `where()`: the event file, or the MLflow run and its store) with the
    run's directory, the number of records and whether the run had completed."""
    if to not in TRACKERS:
        raise UsageError(f"--to {to}: not a tracker", hint=f"choose one of: {', '.join(TRACKERS)}")
    run_dir = Path(run_dir)
    config, records = check_run(run_dir)
    summary = _summary(run_dir)
    module, _, attr = TRACKERS[to].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    reporter = _Lines(say)
    context = sinks.Context(run_dir=run_dir, config=config, reporter=reporter)
    sink = cls(context, tracking_uri=tracking_uri) if to == "mlflow" else cls(context)
    sink.end_status = _status(run_dir, summary)
    if hasattr(sink, "started"):
        sink.started = started_at(run_dir)
    sink.purge()
    try:
        sink.open()
        for record in records:
            sink.write(record)
        if summary is not None:
            sink.finish(summary)
    finally:
        sink.close()
    return {"run": str(run_dir), "to": to, "records": len(records), "completed": summary is not None,
            **sink.where(), "messages": reporter.lines}


def export_runs(run_dirs: list[Path], to: str, *, tracking_uri: str | None = None, say=None) -> list[dict]:
    """Export several runs: every one is checked before any is written."""
    if to not in TRACKERS:
        raise UsageError(f"--to {to}: not a tracker", hint=f"choose one of: {', '.join(TRACKERS)}")
    for run_dir in run_dirs:
        check_run(Path(run_dir))
    return [export_run(Path(r), to, tracking_uri=tracking_uri, say=say) for r in run_dirs]


__all__ = ["check_run", "config_dict", "config_text", "export_run", "export_runs", "flat_config", "read_metrics",
           "require", "run_records", "scalars", "started_at"]
