"""What a task means, independent of framework.

A task names the metrics a model reports, which metric decides "best", how a training batch is
drawn from a split (rows of an array, or windows of a token stream) and what samples look like.
Each backend implements the losses for these task names; the run loop only reads this table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    metrics: tuple[str, ...]  # reported on every evaluated split, "loss" first
    best_metric: str  # e.g. "val/accuracy"
    best_mode: str  # "min" | "max"
    batches: str  # "rows": index rows of x; "windows": random windows of a token stream
    samples: str | None  # None | "predictions" | "images" | "reconstructions" | "text"
    units: str = ""  # what "loss" is measured in, for people

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """Add the metrics derived from the mean loss of a split (LM: perplexity, bits per char)."""
        if self.name == "lm" and "loss" in metrics:
            metrics["ppl"] = math.exp(min(metrics["loss"], 50.0))
            metrics["bpc"] = metrics["loss"] / math.log(2)
        return metrics

    def epoch_size(self, n: int, context: int | None = None) -> int:
        """Number of training examples in one epoch of a split of length n."""
        if self.batches == "windows":
            return max(1, (n - 1) // int(context or 1))
        return n

    def epoch_indices(self, n: int, seed: int, epoch: int, context: int | None = None) -> np.ndarray:
        """The order of one epoch: a pure function of (seed, epoch).

        rows: a permutation of range(n). windows: start offsets of windows of length context+1.
        """
        rng = np.random.default_rng([seed, epoch, 0xA1])
        if self.batches == "windows":
            high = n - int(context) - 1
            if high < 1:
                raise ValueError(f"text of {n} tokens is too short for context {context}")
            return rng.integers(0, high, size=self.epoch_size(n, context), dtype=np.int64)
        return rng.permutation(n).astype(np.int64)


TASKS: dict[str, Task] = {
    "classification": Task(
        "classification", ("loss", "accuracy"), "val/accuracy", "max", "rows", "predictions",
        units="cross-entropy (nats)"),
    "reconstruction": Task(
        "reconstruction", ("loss", "mse"), "val/loss", "min", "rows", "reconstructions",
        units="reconstruction loss per pixel"),
    "vae": Task(
        "vae", ("loss", "recon", "kl"), "val/loss", "min", "rows", "images",
        units="negative ELBO per sample (nats)"),
    "lm": Task(
        "lm", ("loss", "ppl", "bpc"), "val/loss", "min", "windows", "text",
        units="cross-entropy per character (nats)"),
}


def get_task(name: str) -> Task:
    return TASKS[name]
