"""`airlab report RUN`: one self-contained HTML file about a run, readable offline in any browser.

It holds what a researcher looks at after a run: what ran (name, model, data, backend, status),
the final and best metrics, the learning curves, the samples (image grids and generated text as
they were written), a classifier's confusion matrix and per-class accuracy on its test split, the
data facts, the resolved config and the environment. Pictures are embedded as PNG data URIs and
the style sheet is inline, so the file can be mailed or archived alone. Everything comes from
the run directory's files; no framework is imported.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from pathlib import Path

from airlab.errors import UsageError
from airlab.results.runs import _json, percent  # a JSON object from a run's file, or None; "21.7%"
from airlab.train import rundir

_TEXT_LIMIT = 20_000  # characters of one text sample shown
_MATRIX_LIMIT = 40  # classes up to which the confusion matrix is drawn as a table

_STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.sub { color: #666; } .bad { color: #b00020; } .ok { color: #137333; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 3px 10px; text-align: left;
     border-bottom: 1px solid #eee; vertical-align: top; } th { background: #fafafa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.cm td { text-align: right; min-width: 2.2em; border: 1px solid #fff; }
table.cm th { font-weight: normal; font-size: .85em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 12.5px; }
img { max-width: 100%; border: 1px solid #eee; } figure { margin: 1em 0; }
figcaption { color: #666; font-size: .9em; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.name)}" src="data:image/png;base64,{data}">'


def _table(rows: list[list[str]], head: list[str] | None = None, cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    out += ["<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows]
    out.append("</table>")
    return "\n".join(out)


def _td(value, numeric: bool = False) -> str:
    return f'<td class="n">{_num(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def _header(run_dir: Path, row: dict, summary: dict | None) -> str:
    status = row.get("status") or "unknown"
    cls = "ok" if status in ("completed", "early_stopped") else "bad"
    facts = [("model", row.get("model")), ("data", row.get("data")), ("backend", row.get("backend")),
             ("device", (summary or {}).get("device")), ("steps", row.get("steps")),
             ("parameters", (summary or {}).get("params")), ("training samples/s", row.get("samples_per_s")),
             ("training tokens/s", (summary or {}).get("tokens_per_s")), ("MFU", percent((summary or {}).get("mfu"))),
             ("wall time (s)", row.get("wall_time_s")), ("started", row.get("started"))]
    status_text = status
    if row.get("exit_code") is not None and status not in ("completed", "early_stopped"):
        status_text += f" (exit {row['exit_code']})"
    if row.get("last_checkpoint") and status not in ("completed", "early_stopped"):
        status_text += f", last checkpoint {Path(row['last_checkpoint']).name}"
    return "\n".join([
        f"<h1>{_e(run_dir.name)}</h1>",
        f'<p class="sub">{_e(run_dir)} &middot; status <b class="{cls}">{_e(status_text)}</b></p>',
        _table([[f"<th>{_e(k)}</th>", _td(v, isinstance(v, (int, float)))] for k, v in facts if v is not None]),
    ])


def _metrics_section(row: dict, summary: dict | None) -> str:
    splits = [s for s in ("val", "test") if row.get(s)]
    if not splits:
        return "<h2>Metrics</h2><p>No evaluation was recorded.</p>"
    names: list[str] = []
    for split in splits:
        names += [n for n in row[split] if n not in names]
    rows = [[f"<th>{_e(split)}</th>", *[_td(row[split].get(n), True) for n in names]] for split in splits]
    out = ["<h2>Metrics</h2>", _table(rows, head=["split (final)", *map(_e, names)])]
    best = (summary or {}).get("best") or row.get("best") or {}
    if best.get("metric") and best.get("value") is not None:
        out.append(f"<p>Best {_e(best['metric'])}: <b>{_num(best['value'])}</b> at step {_num(best.get('step'))}"
                   f" ({_e(best.get('mode') or '')}).</p>")
    if (summary or {}).get("loss_units"):
        out.append(f'<p class="sub">loss: {_e(summary["loss_units"])}</p>')
    return "\n".join(out)


def _curves_section(run_dir: Path) -> str:
    from airlab.results import curves

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = curves.draw([run_dir], Path(tmp) / "curves.png")
        except (ValueError, UsageError) as e:
            return f"<h2>Learning curves</h2><p>No curves: {_e(e)}</p>"
        return f"<h2>Learning curves</h2><figure>{_png(path)}</figure>"


def _samples_section(run_dir: Path, summary: dict | None) -> str:
    listed = [Path(p) for p in (summary or {}).get("samples") or []]
    folder = run_dir / "samples"
    if not listed and folder.is_dir():  # an interrupted run: the newest samples written
        listed = sorted(folder.iterdir())
    files = []
    for path in listed:
        local = folder / path.name  # the run directory may have moved since
        if local.is_file():
            files.append(local)
    if not files:
        return ""
    out = ["<h2>Samples</h2>"]
    for path in files:
        if path.suffix.lower() == ".png":
            out.append(f"<figure>{_png(path)}<figcaption>{_e(path.name)}</figcaption></figure>")
        elif path.suffix.lower() == ".txt":
            text = path.read_text(encoding="utf-8", errors="replace")
            more = f"\n... ({len(text) - _TEXT_LIMIT:,} more characters in {path.name})" if len(text) > _TEXT_LIMIT else ""
            out.append(f"<figure><pre>{_e(text[:_TEXT_LIMIT] + more)}</pre><figcaption>{_e(path.name)}</figcaption>"
                       "</figure>")
    return "\n".join(out)


def _shade(count: int, total: int, diagonal: bool) -> str:
    """A cell's background: its share of the true class's examples, green on the diagonal, red off it."""
    share = count / total if total else 0.0
    if count == 0:
        return ""
    alpha = 0.12 + 0.78 * share
    rgb = "19,115,51" if diagonal else "176,0,32"
    return f' style="background: rgba({rgb},{alpha:.2f});{" color: #fff;" if alpha > 0.55 else ""}"'


def _confusion_section(run_dir: Path, summary: dict | None) -> str:
    if (summary or {}).get("task") not in (None, "classification"):
        return ""
    table = _json(run_dir / "confusion.json")
    if table is None:
        if (summary or {}).get("task") == "classification":
            return ("<h2>Confusion matrix</h2><p>No confusion.json in this run (a completed classifier run writes "
                    "it; this one did not complete or predates it).</p>")
        return ""
    classes = [str(c) for c in table.get("classes") or []]
    matrix = table.get("matrix") or []
    per_class = table.get("per_class_accuracy") or []
    support = table.get("support") or []
    k = len(classes)
    if not k or len(matrix) != k or any(len(r) != k for r in matrix):
        return "<h2>Confusion matrix</h2><p>confusion.json is malformed; not shown.</p>"
    split = table.get("split", "test")
    out = [f"<h2>Confusion matrix ({_e(split)} split, {_num(table.get('examples'))} examples, accuracy "
           f"{_num(table.get('accuracy'))})</h2>"]
    if k <= _MATRIX_LIMIT:
        head = ["true \\ predicted", *[_e(c) for c in classes]]
        rows = []
        for i, name in enumerate(classes):
            total = sum(int(v) for v in matrix[i])
            rows.append([f"<th>{_e(name)}</th>"] + [
                f"<td{_shade(int(v), total, i == j)}>{int(v)}</td>" for j, v in enumerate(matrix[i])])
        out.append(_table(rows, head=head, cls="cm"))
    else:
        out.append(f"<p>{k} classes: the matrix is too wide to show; it is in confusion.json.</p>")
    order = sorted(range(k), key=lambda i: (per_class[i] if i < len(per_class) and per_class[i] is not None
                                            else 2.0))
    rows = [[_td(classes[i]), _td(per_class[i] if i < len(per_class) else None, True),
             _td(support[i] if i < len(support) else None, True)] for i in order]
    out += ["<h3>Per-class accuracy (worst first)</h3>", _table(rows, head=["class", "accuracy", "examples"])]
    return "\n".join(out)


def _data_section(run_dir: Path) -> str:
    data = _json(run_dir / "data.json")
    if data is None:
        return ""
    keys = ("name", "kind", "source", "counts", "validation", "placement", "placement_reason", "sample_shape",
            "dtype", "num_classes", "cache")
    rows = [[f"<th>{_e(k)}</th>", _td(json.dumps(data[k]) if isinstance(data[k], (dict, list)) else data[k])]
            for k in keys if data.get(k) is not None]
    return "<h2>Data</h2>\n" + _table(rows)


def _config_section(run_dir: Path) -> str:
    try:
        text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    except OSError:
        return "<h2>Config</h2><p>No config.yaml in the run directory.</p>"
    return f"<h2>Config (resolved)</h2><pre>{_e(text)}</pre>"


def _environment_section(run_dir: Path) -> str:
    env = _json(run_dir / "env.json")
    if env is None:
        return ""
    backend = env.get("backend") if isinstance(env.get("backend"), dict) else {}
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    facts = [("airlab", env.get("airlab")), ("python", env.get("python")), ("platform", env.get("platform")),
             ("cpu", f"{cpu.get('model')} ({cpu.get('logical_cores')} logical cores)" if cpu else None),
             ("backend", " ".join(f"{k} {v}" for k, v in backend.items()
                                  if k in ("name", "torch", "tensorflow", "keras", "cuda", "cudnn") and v)),
             ("device", backend.get("device")), ("precision", backend.get("precision")),
             ("processes", env.get("world_size")), ("git commit", env.get("git_commit")),
             ("command", " ".join(map(str, env.get("argv") or [])) or None)]
    rows = [[f"<th>{_e(k)}</th>", _td(v)] for k, v in facts if v not in (None, "")]
    full = json.dumps(env, indent=1, sort_keys=True)
    return ("<h2>Environment</h2>\n" + _table(rows) +
            f"\n<details><summary>env.json</summary><pre>{_e(full)}</pre></details>")


def build(run_dir: Path) -> str:
    """The report of the run at `run_dir`, as one HTML document."""
    from airlab.results.runs import read_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "not a run directory (a file)" if run_dir.exists() else "no such run directory"
        raise UsageError(f"{run_dir}: {what}", hint="list runs with: airlab runs")
    row = read_run(run_dir)
    if row is None:
        raise UsageError(f"{run_dir}: not a run directory (no config.yaml, status.json or summary.json)",
                         hint="give a directory that `airlab runs` lists")
    summary = _json(run_dir / "summary.json")
    parts = [_header(run_dir, row, summary), _metrics_section(row, summary), _curves_section(run_dir),
             _samples_section(run_dir, summary), _confusion_section(run_dir, summary), _data_section(run_dir),
             _config_section(run_dir), _environment_section(run_dir)]
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>airlab report: {_e(run_dir.name)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n<p class=\"sub\">Written by airlab report from the files of {_e(run_dir)}.</p>"
            "\n</body></html>\n")


def write(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report (default: <run_dir>/report.html), atomically; return its path."""
    run_dir = Path(run_dir)
    document = build(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write(out, document)
    except OSError as e:
        from airlab.errors import EnvironmentProblem

        raise EnvironmentProblem(f"{out}: cannot write the report: {e.strerror or e}",
                                 hint="choose another place with -o FILE") from None
    return out


__all__ = ["build", "write"]
