"""`airlab report RUN`: one self-contained HTML file about a run (curves, metrics, samples,
confusion matrix, config, environment) that opens offline in any browser."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import out


def report(
    run: Path = typer.Argument(..., help="a run directory"),
    output: Path = typer.Option(None, "--output", "-o", help="the HTML file to write (default: RUN/report.html)"),
) -> None:
    """Write one self-contained HTML report of a run: status, final and best metrics, learning
    curves, samples, a classifier's confusion matrix and per-class accuracy, data facts, the
    resolved config and the environment. Pictures are embedded; nothing is fetched when it opens.

    Example: airlab report runs/quickstart-20260101-120000 -o quickstart.html
    """
    from airlab.results import report as results

    path = results.write(run, output)
    out.print(f"report: {path}", markup=False, highlight=False)
