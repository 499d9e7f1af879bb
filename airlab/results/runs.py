"""`airlab runs`: one row per run directory under a runs root, from the files the run wrote.

A row is read from summary.json (a finished run), status.json (how a run ended, or that it is
running: a `running` run whose lock no process holds is `dead`), and, for a run without a
summary, the last complete records of metrics.jsonl and its config.yaml. A half-written run (a
truncated metrics line, no summary, no status) is listed with what can be read, never an error.

Filters (`--filter`, all must hold): `KEY=VALUE` (a glob: `model=*vae*`), `KEY!=VALUE`, and
`KEY<N`, `KEY<=N`, `KEY>N`, `KEY>=N` for numbers. KEY is a column (name, model, data, backend,
status, steps, samples_per_s, wall_time_s, started) or a metric as metrics.jsonl names it
(`val/loss`, `test/accuracy`; the final value). A run without the key fails every filter on it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from pathlib import Path

from airlab.errors import UsageError
from airlab.train import rundir

COLUMNS = ("name", "model", "data", "backend", "status", "steps", "best", "val", "test", "samples_per_s",
           "wall_time_s", "started")
_FILTER = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$")
_TAIL_BYTES = 64 * 1024  # the end of metrics.jsonl read for a run without a summary


def _json(path: Path):
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _last_records(path: Path) -> list[dict]:
    """The complete JSON records at the end of metrics.jsonl (a truncated last line is left out)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in tail.splitlines()[1 if size > _TAIL_BYTES else 0:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _config_facts(run_dir: Path) -> dict:
    """model, data and backend from config.yaml (only for a run without a summary)."""
    import yaml

    try:
        text = (run_dir / "config.yaml").read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    if not isinstance(config, dict):
        return {}
    model, data = config.get("model"), config.get("data")
    return {"model": model.get("name") if isinstance(model, dict) else None,
            "data": data.get("name") if isinstance(data, dict) else None,
            "backend": config.get("backend")}


def _metrics_of(records: list[dict], split: str) -> dict | None:
    for record in reversed(records):
        if record.get("split") == split and isinstance(record.get("metrics"), dict):
            return record["metrics"]
    return None


def read_run(run_dir: Path) -> dict | None:
    """The row of one run directory; None for a directory that holds no run at all."""
    run_dir = Path(run_dir)
    summary = _json(run_dir / "summary.json")
    status = rundir.read_status(run_dir)
    has_config = (run_dir / "config.yaml").is_file()
    if summary is None and status is None and not has_config:
        return None
    row: dict = {k: None for k in COLUMNS}
    row.update(name=run_dir.name, path=str(run_dir), exit_code=None, last_checkpoint=None, metrics={})
    if summary is not None:
        final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
        data = summary.get("data") if isinstance(summary.get("data"), dict) else {}
        best = summary.get("best") if isinstance(summary.get("best"), dict) else {}
        row.update(model=summary.get("model"), backend=summary.get("backend"), data=data.get("name"),
                   steps=summary.get("steps"), samples_per_s=summary.get("samples_per_s"),
                   wall_time_s=summary.get("wall_time_s"), val=final.get("val"), test=final.get("test"),
                   best={"metric": best.get("metric"), "value": best.get("value"), "step": best.get("step")}
                   if best else None, status=summary.get("status"), last_checkpoint=summary.get("checkpoint"))
    else:
        records = _last_records(run_dir / "metrics.jsonl")
        row.update(val=_metrics_of(records, "val"), test=_metrics_of(records, "test"))
        train = [r for r in records if r.get("split") == "train"]
        if train:
            row.update(steps=train[-1].get("step"), samples_per_s=train[-1].get("samples_per_s"))
    if row["model"] is None or row["data"] is None or row["backend"] is None:
        for key, value in _config_facts(run_dir).items() if has_config else ():
            row[key] = row[key] if row[key] is not None else value
    if status is not None:
        row.update(status=status.get("status") or row["status"], exit_code=status.get("exit_code"),
                   started=status.get("started"))
        row["last_checkpoint"] = status.get("last_checkpoint") or row["last_checkpoint"]
        if row["steps"] is None:
            row["steps"] = status.get("step")
    row["status"] = row["status"] or ("incomplete" if summary is None else "completed")
    for split in ("val", "test"):
        for metric, value in (row[split] or {}).items():
            row["metrics"][f"{split}/{metric}"] = value
    return row


def list_runs(root: Path) -> list[dict]:
    """Every run directory directly under `root` (a run directory given itself: that run)."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory", hint="give the runs root (default: runs) or a run directory")
    if (root / "config.yaml").is_file() or (root / "status.json").is_file():
        found = read_run(root)
        return [found] if found else []
    rows = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            row = read_run(entry)
            if row is not None:
                rows.append(row)
    return rows


def _value(row: dict, key: str):
    if key in row and key not in ("metrics", "val", "test", "best"):
        return row[key]
    if key == "best":
        return (row.get("best") or {}).get("value")
    return row["metrics"].get(key)


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def percent(fraction) -> str | None:
    """A fraction from a run's file (summary.json's mfu) as `airlab compare` and the report show
    it: 0.217 -> "21.7%"; None when it is not a finite number (missing, or a hostile value)."""
    value = _number(fraction)
    return None if value is None else f"{100 * value:.1f}%"


def parse_filter(text: str):
    """A predicate on rows from one `--filter` term; a UsageError naming the term when it is not one."""
    m = _FILTER.match(text)
    if not m or not m.group(3):
        raise UsageError(f"--filter {text!r}: expected KEY=VALUE, KEY!=VALUE or KEY<N, KEY<=N, KEY>N, KEY>=N",
                         hint="e.g. --filter model=vae --filter 'val/loss<110' (see `airlab runs --help`)")
    key, op, want = m.groups()
    if op in ("<", "<=", ">", ">="):
        bound = _number(want)
        if bound is None:
            raise UsageError(f"--filter {text!r}: {want!r} is not a number", hint=f"e.g. {key}{op}0.5")

        def compare(row: dict) -> bool:
            got = _number(_value(row, key))
            return got is not None and {"<": got < bound, "<=": got <= bound, ">": got > bound,
                                        ">=": got >= bound}[op]
        return compare

    def match(row: dict) -> bool:
        got = _value(row, key)
        if got is None:
            return False
        same = (_number(got) == _number(want)) if _number(got) is not None and _number(want) is not None \
            else fnmatch.fnmatchcase(str(got), want)
        return same if op == "=" else not same
    return match


def select(rows: list[dict], filters: list[str] = (), sort: str | None = None) -> list[dict]:
    """The rows that pass every filter, sorted by `sort` (a key as filters name them; a leading
    "-" for descending; rows without it last), else by start time."""
    predicates = [parse_filter(f) for f in filters]
    rows = [r for r in rows if all(p(r) for p in predicates)]
    key = sort or "started"
    descending = key.startswith("-")
    key = key.lstrip("-")

    def order(row: dict):
        value = _value(row, key)
        number = _number(value)
        return (value is None, number if number is not None else 0.0, "" if number is not None else str(value))

    present = sorted((r for r in rows if _value(r, key) is not None), key=order, reverse=descending)
    return present + [r for r in rows if _value(r, key) is None]


__all__ = ["COLUMNS", "list_runs", "parse_filter", "read_run", "select"]
