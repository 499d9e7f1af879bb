"""`airlab convert RUN_DIR --to tensorflow|torch`: carry a trained run to the other backend."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import invocation, out


def _fmt(metrics: dict | None) -> str:
    if not metrics:
        return "-"
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def convert(
    run_dir: Path = typer.Argument(..., help="a run directory written by `airlab train`"),
    to: str = typer.Option(..., "--to", help="the backend to carry the weights to: tensorflow or torch"),
    out_dir: Path = typer.Option(None, "--out", help="the new run directory (default: RUN_DIR-<backend>)"),
) -> None:
    """Convert a run's newest checkpoint to the other backend, as a new run directory that
    `airlab sample` and `airlab train --resume` use. Only weights travel (the optimizer starts
    afresh); the model is rebuilt from the run's config and checked on the validation split.

    Example: airlab convert runs/quickstart-20261129-153612 --to tensorflow
    """
    from airlab.interop.convert import convert_run

    result = convert_run(run_dir, to, out=out_dir, argv=["airlab", *invocation()])
    s = result.summary
    src = s["converted_from"]
    out.print(f"converted {src['backend']} -> {s['backend']}: {s['model']}, {s['params']:,} parameters, "
              f"step {s['steps']} ({result.source / 'checkpoints' / Path(src['checkpoint']).name})", highlight=False)
    out.print(f"val {src['backend']}: {_fmt((src.get('final') or {}).get('val'))}", highlight=False)
    out.print(f"val {s['backend']}: {_fmt(s['final'].get('val'))}", highlight=False)
    out.print(f"run directory: {result.run_dir}", highlight=False)
