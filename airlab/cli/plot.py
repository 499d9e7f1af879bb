"""`airlab plot RUN...`: learning curves of one or more runs as one PNG."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import out, print_json


def output_path(output: Path | None, default: Path) -> Path:
    """The PNG to write: `-o` (its directory must exist, its name end in .png) or the default."""
    from airlab.errors import UsageError

    path = Path(output) if output is not None else default
    if path.suffix.lower() != ".png":
        raise UsageError(f"-o {path}: airlab writes PNG images; give a file name ending in .png",
                         hint=f"e.g. -o {path.with_suffix('.png').name}")
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: the directory {path.parent} does not exist",
                         hint="create it first, or write into an existing directory")
    if path.is_dir():
        raise UsageError(f"-o {path}: is a directory", hint=f"give a file name, e.g. -o {path / 'curves.png'}")
    return path


def write_problem(path: Path, e: OSError):
    from airlab.errors import EnvironmentProblem, environment_cause

    return EnvironmentProblem(f"cannot write {path}: {environment_cause(e) or e.strerror or e}",
                              hint="choose a writable place with -o, or free space on the disk")


def no_matplotlib(e: ImportError):
    from airlab.errors import EnvironmentProblem

    return EnvironmentProblem(f"cannot draw curves: matplotlib is not importable ({e})",
                              hint="pip install 'matplotlib>=3.8' (part of airlab's core install; reinstall airlab)")


def plot(
    runs: list[Path] = typer.Argument(..., help="one or more run directories written by `airlab train`"),
    metric: list[str] = typer.Option([], "--metric", "-m",
                                     help="a panel to draw: a metric name (loss: every split) or split/name "
                                          "(val/loss); repeat for more [default: every metric but lr]"),
    output: Path = typer.Option(None, "--output", "-o",
                                help="the PNG to write [default: RUN/curves.png for one run, ./curves.png for "
                                     "several]"),
    x: str = typer.Option("step", "--x", help="x axis: step or epoch"),
    smooth: float = typer.Option(0.0, "--smooth",
                                 help="smooth the train curves with a debiased moving average, weight in [0, 1) "
                                      "as TensorBoard's slider (0.6 to 0.9 for noisy curves); 0 = raw"),
    log: str = typer.Option("auto", "--log",
                            help="log y axis: auto (where a panel's values are positive and span more than a "
                                 "decade), on, off"),
    json_out: bool = typer.Option(False, "--json", help="print the path and what each panel holds as JSON"),
) -> None:
    """Draw learning curves as a PNG: one panel per metric, train (thin) and val (solid) of every run,
    the test result as a star; one colour per run.

    Example: airlab plot runs/quickstart-20260101-120000 --metric loss --metric val/accuracy --smooth 0.6
    """
    from airlab.results import curves

    curves.check_options(x, smooth, log)
    series = {label: curves.read_series(run) for label, run in zip(curves.run_labels(runs), runs)}
    path = output_path(output, Path(runs[0]) / "curves.png" if len(runs) == 1 else Path("curves.png"))
    plan = curves.panels(series, metric or None, x=x, smooth=smooth, log=log)
    try:
        curves.render(plan, path, title=curves.run_title(runs[0]) if len(runs) == 1 else None)
    except ImportError as e:
        raise no_matplotlib(e) from None
    except OSError as e:
        raise write_problem(path, e) from None
    if json_out:
        print_json({"path": str(path), "runs": [str(r) for r in runs],
                    "panels": [{"metric": p["metric"], "log": p["log"], "x": p["xlabel"],
                                "lines": [{"run": ln["run"], "split": ln["split"], "role": ln["role"],
                                           "points": int(len(ln["x"]))} for ln in p["lines"]]} for p in plan]})
        return
    out.print(f"wrote {path}", highlight=False, soft_wrap=True)
