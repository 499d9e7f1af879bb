"""`airlab sample RUN_DIR`: new samples from a trained generative model."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import out


def sample(
    run_dir: Path = typer.Argument(..., help="a run directory written by `airlab train`"),
    n: int = typer.Option(16, "--n", min=1, max=1024, help="number of images or text samples"),
    seed: int = typer.Option(None, "--seed", min=0, max=2**32 - 1,
                             help="random seed (default: from the clock); sample i has a stream of its own, "
                                  "so two seeds share no sample"),
    prompt: str = typer.Option(None, "--prompt", help="language models: the text each sample starts with "
                                                      "(characters of the training text)"),
    length: int = typer.Option(None, "--length", min=1, max=100_000,
                               help="language models: new tokens per sample [default: 400]"),
    temperature: float = typer.Option(None, "--temperature",
                                      help="language models: sampling temperature, > 0 [default: 0.8]"),
    top_k: int = typer.Option(None, "--top-k", min=1,
                              help="language models: sample from the K most likely tokens [default: all]"),
) -> None:
    """Write samples (VAE images, autoencoder reconstructions, LM text) into RUN_DIR/samples/.
    Refuses a checkpoint whose weights are not finite.

    Example: airlab sample runs/transformer-shakespeare-20260101-120000 --n 2 --prompt "ROMEO:" --top-k 10
    """
    from airlab.train.commands import sample as do_sample

    for path in do_sample(run_dir, n, seed=seed, prompt=prompt, length=length, temperature=temperature,
                          top_k=top_k):
        out.print(f"wrote {path}", highlight=False)
