"""`airlab compare RUN RUN...`: what differs between runs' resolved configs, their summaries side
by side, and one PNG of their learning curves overlaid.

Config keys are flattened to dotted names (`model.hidden`, `train.lr`, `data.augment.random_crop`;
lists are values, not flattened) and only the keys whose values differ are kept. `name` and
`output.*` count like any other key: they are part of what the user chose (a differing `name`
is often the one-word summary of the experiment), so they are shown. A key one run lacks shows
as missing (value None with `missing` true), told apart from a key set to null.

Nothing here imports a framework; matplotlib is imported only to draw the curves.
"""

from __future__ import annotations

import json
from pathlib import Path

from airlab.errors import UsageError
from airlab.results import curves
from airlab.results.runs import _number, read_run

_MISSING = object()


def _run_dir(run: Path) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"{run}: no such run directory",
                         hint="give run directories that `airlab train` wrote (list them with `airlab runs`)")
    return run


def read_config(run: Path) -> dict:
    """The resolved config.yaml of a run (safe YAML); a UsageError naming the file when it is
    missing or not a YAML mapping."""
    import yaml

    path = _run_dir(run) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no config.yaml in {run}: not a run directory",
                         hint="give run directories that `airlab train` wrote (list them with `airlab runs`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})",
                         hint="check the file; airlab writes it when a run starts") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or 'unreadable'})",
                         hint="the file was edited or damaged; airlab writes it when a run starts") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: expected a mapping of config keys, found {type(config).__name__}",
                         hint="the file was edited or damaged; airlab writes it when a run starts")
    return config


def flatten(config: dict, prefix: str = "") -> dict:
    """{"model": {"hidden": 64}} -> {"model.hidden": 64}; lists and empty mappings are values."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _same(values: list) -> bool:
    first = values[0]
    return all((v is _MISSING) == (first is _MISSING) and (v is _MISSING or _equal(v, first)) for v in values[1:])


def _equal(a, b) -> bool:
    if type(a) is bool or type(b) is bool:  # True == 1 in Python; not in a config
        return type(a) is type(b) and a == b
    return a == b


def config_diff(runs: list[Path]) -> list[dict]:
    """The config keys whose values differ between `runs`, sorted: [{"key", "values" (one per
    run, None where missing), "missing" (one bool per run)}]; [] when the configs are the same."""
    flats = [flatten(read_config(run)) for run in runs]
    keys = sorted({k for flat in flats for k in flat})
    rows = []
    for key in keys:
        values = [flat.get(key, _MISSING) for flat in flats]
        if not _same(values):
            rows.append({"key": key, "values": [None if v is _MISSING else v for v in values],
                         "missing": [v is _MISSING for v in values]})
    return rows


def _summary_json(run: Path) -> dict:
    try:
        value = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def summaries(runs: list[Path]) -> list[dict]:
    """One dict per run: name, path, status, model, data, backend, steps, val and test (final
    metrics), best ({metric, value, step} or None), samples_per_s, tokens_per_s (a language
    model's) and mfu (numbers or None), wall_time_s, params,
    exit_code, last_checkpoint. A run without summary.json (interrupted, failed, running) gives
    what `airlab runs` reads from its status and the end of its metrics."""
    rows = []
    for label, run in zip(curves.run_labels(runs), runs):
        row = read_run(_run_dir(run))
        if row is None:
            raise UsageError(f"{run}: not a run directory (no config.yaml, status.json or summary.json)",
                             hint="give run directories that `airlab train` wrote (list them with `airlab runs`)")
        summary = _summary_json(Path(run))
        rows.append({"name": label, "path": str(run), "status": row["status"], "model": row["model"],
                     "data": row["data"], "backend": row["backend"], "steps": row["steps"],
                     "val": row["val"] or {}, "test": row["test"] or {}, "best": row["best"],
                     "samples_per_s": row["samples_per_s"], "tokens_per_s": _number(summary.get("tokens_per_s")),
                     "mfu": _number(summary.get("mfu")), "wall_time_s": row["wall_time_s"],
                     "params": summary.get("params"), "exit_code": row["exit_code"],
                     "last_checkpoint": row["last_checkpoint"]})
    return rows


def compare(runs: list[Path], out: Path, *, metrics: list[str] | None = None) -> dict:
    """Everything `airlab compare` shows: {"runs": [{"name", "path"}], "config": config_diff,
    "summary": summaries, "curves": the PNG's path or None, "curves_note": why there is none}.
    The curves are drawn from the runs that have logged; when none has, "curves" is None."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise UsageError(f"compare needs at least two runs; got {len(runs)}",
                         hint="airlab compare RUN RUN ...; for one run's curves: airlab plot RUN")
    diff = config_diff(runs)
    rows = summaries(runs)
    labels = [r["name"] for r in rows]
    series = {}
    for label, run in zip(labels, runs):
        if (run / "metrics.jsonl").is_file():
            series[label] = curves.read_series(run)
    path, note = None, None
    try:
        plan = curves.panels(series, metrics or None) if series else None
    except curves.NothingToDraw as e:
        plan, note = None, e.message
    if plan is None and note is None:
        note = "no curves: none of the runs has a metrics.jsonl"
    if plan is not None:
        path = str(curves.render(plan, Path(out), title=" vs ".join(labels) if len(labels) <= 3 else None))
    return {"runs": [{"name": label, "path": str(run)} for label, run in zip(labels, runs)],
            "config": diff, "summary": rows, "curves": path, "curves_note": note}


__all__ = ["compare", "config_diff", "flatten", "read_config", "summaries"]
