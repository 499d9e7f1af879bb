"""`airlab export RUN [RUN...] --to tensorboard|mlflow`: show finished (or stopped) runs in a
tracker after the fact."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import err, out, print_json


def export(
    runs: list[Path] = typer.Argument(..., metavar="RUN", help="run directories written by `airlab train`"),
    to: str = typer.Option(..., "--to", metavar="TRACKER",
                           help="the tracker: tensorboard (event files in each run directory) or mlflow (a run in "
                                "MLFLOW_TRACKING_URI, default sqlite:///<runs root>/mlflow.db)"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", metavar="URI",
                                     help="mlflow: the tracking URI (default: MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<runs root>/mlflow.db)"),
    json_out: bool = typer.Option(False, "--json", help="print what was written as JSON"),
) -> None:
    """Replay each run's metrics.jsonl (and, for a completed run, its summary, curves and samples)
    into TensorBoard event files or an MLflow run, as `output.trackers` would have written them
    while it trained. Exporting a run again replaces what the tracker held of it.

    Example: airlab export runs/quickstart-20260101-120000 --to tensorboard
    """
    from airlab.results import export as results

    if tracking_uri is not None and to != "mlflow":
        from airlab.errors import UsageError

        raise UsageError(f"--tracking-uri {tracking_uri}: only an export --to mlflow has a tracking URI",
                         hint="leave --tracking-uri out, or export --to mlflow")
    done = results.export_runs(list(runs), to.strip().lower(), tracking_uri=tracking_uri,
                               say=lambda text: err.print(text, highlight=False, markup=False))
    if json_out:
        print_json(done)
        return
    for row in done:
        state = "" if row["completed"] else " (the run did not complete)"
        if row["to"] == "tensorboard":
            files = ", ".join(row["event_files"]) or row["logdir"]
            line = f"{row['run']}: {row['records']} records{state} -> {files}"
        else:
            line = (f"{row['run']}: {row['records']} records{state} -> mlflow run {row['run_id']} in experiment "
                    f"{row['experiment']} at {row['tracking_uri']}")
        out.print(line, highlight=False, markup=False)
    views = sorted({row["view"] for row in done})
    for view in views:
        out.print(f"view: {view}", highlight=False, markup=False)
