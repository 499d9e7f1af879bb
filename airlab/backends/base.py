"""The Backend protocol: what the run loop, `airlab sample` and the benchmarks talk to.

A backend owns the model, optimizer and data on its device, and implements the task losses.
Everything it exchanges with the run loop is numpy or plain Python, so the loop, the
checkpoint commit and the run directory are framework-free and shared by every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

import numpy as np

if TYPE_CHECKING:
    from airlab.train.threads import ThreadPlan


class NonFiniteStep(Exception):
    """A training step whose loss or gradient norm was not finite; the weights did not move."""

    def __init__(self, step: int | None, loss: float, grad_norm: float | None):
        super().__init__(f"non-finite step {step}: loss={loss}, grad_norm={grad_norm}")
        self.step, self.loss, self.grad_norm = step, loss, grad_norm


class OutOfMemoryStep(Exception):
    """A training step that ran out of device memory; weights, gradients and RNG are as before it."""

    def __init__(self, step: int | None, micro_batch: int, detail: str):
        super().__init__(f"out of memory at step {step} with micro-batch {micro_batch}: {detail}")
        self.step, self.micro_batch, self.detail = step, micro_batch, detail


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: str
    params: int


@dataclass
class ModelSummary:
    layers: list[LayerRow]
    params: int
    trainable: int
    param_bytes: int
    est_train_bytes: int  # parameters + gradients + optimizer state + activations, for one batch
    device: str
    precision: str


class Backend(Protocol):
    name: str
    device: str  # resolved, e.g. "cpu", "cuda:0"
    threads: int  # CPU threads the framework's kernels use in this process (train.threads, applied)
    thread_plan: "ThreadPlan"  # how that count was chosen (airlab.train.threads.plan_threads)

    def __init__(self, config, dataset, task, *, training: bool = True) -> None: ...

    # training
    def train_step(self, index: np.ndarray, lr: float, *, step: int | None = None) -> None:
        """One optimizer step on the examples at `index` of the training split (`step` counts
        from 1). A non-finite loss or gradient norm raises NonFiniteStep before any weight moves."""

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""

    def pop_train_metrics(self) -> dict[str, float]:
        """Mean training metrics since the last call (forces a device sync)."""

    def train_metrics_state(self) -> dict:
        """The running sums behind pop_train_metrics, for a checkpoint: {"count": n, "sums": {name:
        float}, "dtypes": {name: str}} (float32 sums are exact in JSON). Restored on resume, the first
        training metrics a resumed run logs equal those of the same run uninterrupted."""

    def restore_train_metrics(self, state: dict) -> None:
        """Continue the running sums saved by train_metrics_state."""

    def evaluate(self, split: str) -> dict[str, float]:
        """Task metrics over a whole split ("val" or "test")."""

    def summary(self) -> ModelSummary: ...

    def num_params(self) -> int: ...

    # state
    def save_state(self, directory: Path) -> list[str]:
        """Write model/optimizer/RNG state into `directory`; return the file names written."""

    def load_state(self, directory: Path, *, weights_only: bool = False) -> None:
        """Restore state written by save_state (only the model's weights with weights_only)."""

    def named_weights(self) -> Iterator[tuple[str, np.ndarray]]:
        """Final weights as float arrays by name (for the digest and conversion)."""

    def all_finite(self) -> bool: ...

    # samples
    def generate_images(self, n: int, seed: int) -> np.ndarray: ...

    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...

    def generate_tokens(self, prompt: np.ndarray, n_new: int, *, temperature: float, top_k: int | None,
                        seed: int) -> np.ndarray: ...

    def environment(self) -> dict:
        """Framework versions and device facts for env.json (with the thread count requested,
        resolved and in force, and how it was derived)."""

    def numerics_facts(self) -> dict:
        """The facts bitwise-exact resume depends on (thread count in force, framework and numpy
        versions, device, precision, determinism, kernel libraries, CPU), as JSON. A checkpoint
        records them; a resume compares them with airlab.train.threads.compare_facts."""
