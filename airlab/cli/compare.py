"""`airlab compare RUN RUN...`: the config keys that differ, the summaries side by side, and one
PNG of the runs' learning curves overlaid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from airlab.cli.common import out, print_json
from airlab.cli.plot import no_matplotlib, output_path, write_problem

SAME = "the configs are the same"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _config_value(value, missing: bool) -> str:
    if missing:
        return "(missing)"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _summary_rows(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """(field, one cell per run): status, model, data, backend, steps, best, every final val and
    test metric any run has, samples/s (tokens/s and MFU where a run has them), wall time, parameters."""
    from airlab.results.runs import percent

    def status(r: dict) -> str:
        if r["exit_code"] is not None and r["status"] not in ("completed", "early_stopped"):
            return f"{r['status']} (exit {r['exit_code']})"
        return _fmt(r["status"])

    def best(r: dict) -> str:
        b = r.get("best") or {}
        if not b.get("metric"):
            return "-"
        return f"{b['metric']}={_fmt(b.get('value'))}" + (f" @ {b['step']}" if b.get("step") is not None else "")

    table = [("status", [status(r) for r in rows])]
    table += [(key, [_fmt(r[key]) for r in rows]) for key in ("model", "data", "backend", "steps")]
    table.append(("best", [best(r) for r in rows]))
    for split in ("val", "test"):
        names = list(dict.fromkeys(name for r in rows for name in r[split]))
        table += [(f"{split}/{name}", [_fmt(r[split].get(name)) for r in rows]) for name in names]
    table.append(("samples/s", [_fmt(r["samples_per_s"]) for r in rows]))
    if any(r.get("tokens_per_s") for r in rows):  # a language model's throughput in its own unit
        table.append(("tokens/s", [_fmt(r.get("tokens_per_s")) for r in rows]))
    if any(r.get("mfu") is not None for r in rows):  # how close each run came to its device's peak
        table.append(("MFU", [percent(r.get("mfu")) or _fmt(None) for r in rows]))
    table += [("wall s", [_fmt(r["wall_time_s"]) for r in rows]),
              ("params", [_fmt(r["params"]) for r in rows])]
    return table


def compare(
    runs: list[Path] = typer.Argument(..., help="two or more run directories written by `airlab train`"),
    output: Path = typer.Option(None, "--output", "-o", help="the curves PNG to write [default: ./compare.png]"),
    metric: list[str] = typer.Option([], "--metric", "-m",
                                     help="a curves panel: a metric name (loss: every split) or split/name "
                                          "(val/loss); repeat for more [default: every metric but lr]"),
    json_out: bool = typer.Option(False, "--json",
                                  help='print {"runs", "config", "summary", "curves"} as JSON'),
) -> None:
    """Compare runs: the resolved config keys that differ (and only those; name and output.* included),
    their summaries side by side (status, steps, best, final val and test metrics, samples/s, wall time,
    parameters), and their learning curves overlaid in one PNG.

    Example: airlab compare runs/mlp-20260101-120000 runs/mlp-20260101-130000 -o lr.png --metric val/loss
    """
    from airlab.errors import UsageError
    from airlab.results import compare as results

    if len(runs) < 2:
        raise UsageError(f"compare needs at least two runs; got {len(runs)}",
                         hint="airlab compare RUN RUN ...; for one run's curves: airlab plot RUN")
    path = output_path(output, Path("compare.png"))
    try:
        found = results.compare(runs, path, metrics=metric or None)
    except ImportError as e:
        raise no_matplotlib(e) from None
    except OSError as e:
        raise write_problem(path, e) from None
    if json_out:
        print_json(found)
        return
    names = [r["name"] for r in found["runs"]]
    config = [(row["key"], [_config_value(v, m) for v, m in zip(row["values"], row["missing"])])
              for row in found["config"]]
    summary = _summary_rows(found["summary"])
    curves_line = found["curves"] or found["curves_note"]
    if not out.is_terminal:  # tab-separated lines, each led by its section, for grep and cut
        lines = ["\t".join(["runs", *names])]
        lines += ["\t".join(["config", key, *cells]) for key, cells in config] or [f"config\t{SAME}"]
        lines += ["\t".join(["summary", key, *cells]) for key, cells in summary]
        lines.append(f"curves\t{curves_line}")
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.table import Table

    if config:
        table = Table(title=f"config: {len(config)} key{'s' if len(config) != 1 else ''} differ")
        table.add_column("key")
        for name in names:
            table.add_column(name, overflow="fold")
        for key, cells in config:
            table.add_row(key, *cells)
        out.print(table)
    else:
        out.print(SAME, highlight=False)
    table = Table(title="summary")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right", overflow="fold")
    for key, cells in summary:
        table.add_row(key, *cells)
    out.print(table)
    out.print(f"curves: {curves_line}" if found["curves"] else curves_line, highlight=False, soft_wrap=True)
