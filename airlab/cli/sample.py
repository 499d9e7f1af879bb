"""`airlab sample RUN_DIR`: new samples from a trained generative model."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import out


def sample(
    run_dir: Path = typer.Argument(..., help="a run directory written by `airlab train`"),
    n: int = typer.Option(16, "--n", min=1, max=1024, help="number of images or text samples"),
    seed: int = typer.Option(None, "--seed", help="random seed (default: from the clock)"),
) -> None:
    """Write samples (VAE images, autoencoder reconstructions, LM text) into RUN_DIR/samples/.

    Example: airlab sample runs/vae-20260101-120000 --n 64
    """
    from airlab.train.loop import sample as do_sample

    for path in do_sample(run_dir, n, seed=seed):
        out.print(f"wrote {path}", highlight=False)
