"""`airlab runs [ROOT]`: the runs under a runs root, one line each, without importing a framework."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import out, print_json


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _status(row: dict) -> str:
    status = row["status"]
    if status in ("interrupted", "dead") and row.get("last_checkpoint"):
        return f"{status} ({Path(row['last_checkpoint']).name})"
    if status in ("failed", "diverged", "interrupted") and row.get("exit_code") is not None:
        return f"{status} (exit {row['exit_code']})"
    return status


def _best(best: dict, sep: str) -> str:
    return f"{best['metric']}{sep}{_fmt(best.get('value'))}" if best.get("metric") else "-"


def _metric(row: dict, split: str) -> str:
    """The final value of the run's deciding metric (the best metric's name) on a split."""
    best = (row.get("best") or {}).get("metric") or ""
    name = best.split("/", 1)[1] if "/" in best else "loss"
    return _fmt((row.get(split) or {}).get(name))


def runs(
    root: Path = typer.Argument(Path("runs"), help="a runs root (default: runs) or one run directory"),
    sort: str = typer.Option(None, "--sort", help="sort by a column or metric (val/loss); '-' first for descending"),
    filters: list[str] = typer.Option([], "--filter", "-f",
                                      help="keep runs where KEY=VALUE (a glob), KEY!=VALUE, KEY<N, KEY<=N, KEY>N or "
                                           "KEY>=N holds; KEY a column or a metric (val/loss); repeat to combine"),
    json_out: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """List runs: name, model, data, backend, status (completed, early_stopped, interrupted with its
    last checkpoint, failed or diverged with its exit code, running, or dead: running without a live
    process), steps, best and final validation metric, test metric, samples/s, wall time and start.

    Example: airlab runs runs/ --filter model=vae --filter 'val/loss<110' --sort val/loss
    """
    from airlab.results import runs as results

    rows = results.select(results.list_runs(root), filters, sort)
    if json_out:
        print_json(rows)
        return
    if not out.is_terminal:  # one tab-separated line per run, for grep, cut and sort
        import sys

        for r in rows:
            best = r.get("best") or {}
            sys.stdout.write("\t".join([r["name"], _fmt(r["model"]), _fmt(r["data"]), _fmt(r["backend"]), _status(r),
                                        _fmt(r["steps"]), _best(best, "="), _metric(r, "val"), _metric(r, "test"),
                                        _fmt(r["samples_per_s"]), _fmt(r["wall_time_s"]), _fmt(r["started"])]) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"runs in {root} ({len(rows)})")
    for col in ("name", "model", "data", "backend", "status", "steps", "best", "val", "test", "samples/s",
                "wall s", "started"):
        table.add_column(col, justify="right" if col in ("steps", "val", "test", "samples/s", "wall s") else "left")
    for r in rows:
        best = r.get("best") or {}
        table.add_row(r["name"], _fmt(r["model"]), _fmt(r["data"]), _fmt(r["backend"]), _status(r), _fmt(r["steps"]),
                      _best(best, " "), _metric(r, "val"), _metric(r, "test"),
                      _fmt(r["samples_per_s"]), _fmt(r["wall_time_s"]), _fmt(r["started"]))
    out.print(table)
