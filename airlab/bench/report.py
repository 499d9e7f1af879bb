"""The bench result as JSON: its schema, saving, loading and comparing two of them.

Values are in base units (FLOP/s, B/s, samples/s) so results compare across machines; a figure's
`id` ("matmul/torch/cpu/bf16", "memory/torch/cuda:0/d2d", "training/torch/cpu/mlp") is the key
`--compare` matches on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlab.errors import UsageError

SCHEMA = "airlab.bench/1"
# A change smaller than this is within the noise of a shared machine.
COMPARE_TOLERANCE = 0.10


class Figure(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    suite: Literal["matmul", "memory", "interconnect", "training"]
    name: str
    backend: str
    device: str
    value: float
    unit: str
    stats: dict | None = None
    work: dict = Field(default_factory=dict)
    peak: float | None = None
    peak_source: str | None = None
    fraction_of_peak: float | None = None
    expected_fraction: float | None = None
    verdict: Literal["ok", "low", "suspicious", "n/a"]
    verdict_reason: str = ""
    marks: list[Literal["throttled", "interference"]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    telemetry: dict | None = None
    detail: dict = Field(default_factory=dict)


class Report(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: Literal["airlab.bench/1"] = Field(alias="schema")
    airlab_version: str
    created: str
    argv: list[str] = Field(default_factory=list)
    suite: str
    wall_seconds: float
    host: dict
    backends: dict[str, dict]
    devices: list[dict]
    method: dict
    figures: list[Figure]
    findings: list[str] = Field(default_factory=list)
    skipped: list[dict] = Field(default_factory=list)
    # the all-reduce across the processes of a run (`--nproc N`): sizes, algorithm and bus bandwidth,
    # each rank's median time and the slowest rank; None in a one-process bench
    allreduce: dict | None = None

    def to_json(self) -> dict:
        return _finite(self.model_dump(by_alias=True, mode="json"))


def _finite(obj):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def json_schema() -> dict:
    return Report.model_json_schema(by_alias=True)


def save(report: Report, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        tmp.replace(path)
    except OSError as e:
        raise UsageError(f"--save {path}: cannot write ({e.strerror or e})",
                         hint="choose a writable path, e.g. --save bench.json") from None


def load(path: Path) -> Report:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--compare {path}: no such file", hint="save a result first: airlab bench --save FILE") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--compare {path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--compare {path}:{e.lineno}:{e.colno}: not JSON ({e.msg})",
                         hint="give a file written by `airlab bench --save` or `--json`") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"--compare {path}: not an airlab bench result (expected schema {SCHEMA!r}, found {found!r})",
                         hint="give a file written by `airlab bench --save` or `--json`")
    try:
        return Report.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise UsageError(f"--compare {path}: malformed bench result: {problems}") from None


def machine_label(report: Report) -> str:
    gpus = [d.get("name", d["id"]) for d in report.devices if d.get("kind") == "gpu"]
    cpu = report.host.get("cpu", {}).get("model_name", "cpu")
    return f"{report.host.get('hostname', '?')} ({', '.join(gpus) if gpus else cpu}), {report.created}"


def compare(before: Report, after: Report, tolerance: float = COMPARE_TOLERANCE) -> dict:
    """Figures matched by id: before, after, relative change; and what only one side has."""
    b = {f.id: f for f in before.figures}
    a = {f.id: f for f in after.figures}
    rows = []
    for fid in [f.id for f in after.figures if f.id in b]:
        old, new = b[fid], a[fid]
        change = new.value / old.value - 1 if old.value else float("nan")
        if not math.isfinite(change):
            status = "?"
        elif change <= -tolerance:
            status = "slower"
        elif change >= tolerance:
            status = "faster"
        else:
            status = "same"
        rows.append({"id": fid, "name": new.name, "device": new.device, "backend": new.backend, "unit": new.unit,
                     "before": old.value,
                     "after": new.value, "change": change, "status": status,
                     "verdict_before": old.verdict, "verdict_after": new.verdict,
                     "marks": sorted(set(old.marks) | set(new.marks))})
    return _finite({
        "before": machine_label(before), "after": machine_label(after), "tolerance": tolerance,
        "rows": rows,
        "only_before": [fid for fid in b if fid not in a],
        "only_after": [fid for fid in a if fid not in b],
    })
