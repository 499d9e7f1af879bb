"""The Backend protocol: what the run loop, `airlab sample`, `airlab train --dry-run`, the
converter and the training benchmark talk to, and all they talk to (tests/contract/
test_backend_protocol.py checks every backend of airlab/backends/table.py against it, and that
those callers use nothing else).

A backend owns the model, optimizer and data on its device, and implements the task losses.
Everything it exchanges with the run loop is numpy or plain Python, so the loop, the
checkpoint commit and the run directory are framework-free and shared by every backend. The
backend-neutral half of a backend (device and precision grammar, evaluate, summary, the
training-metric accumulator) is written once, in airlab/backends/common.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from airlab.faults import Faults
    from airlab.train.process import Collective, Role
    from airlab.train.order import BatchOrder
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


@runtime_checkable
class Backend(Protocol):
    name: str  # the config's `backend:` value (airlab.backends.table)
    device: str  # resolved, e.g. "cpu", "cuda:0"
    threads: int  # CPU threads the framework's kernels use in this process (train.threads, applied)
    thread_plan: "ThreadPlan"  # how that count was chosen (airlab.train.threads.plan_threads)
    faults: "Faults"  # faults to stage (airlab.faults.NONE unless the run loop sets those of AIRLAB_FAULT)
    local_replicas: int  # devices this process splits its share of each batch among, one replica each
    #                      (TensorFlow's MirroredStrategy; 1 elsewhere): a micro-batch is one replica's
    grad_accum: int  # micro-batches per step: train.grad_accum; the run loop doubles it on out-of-memory
    #                  (OutOfMemoryStep) and sets it back from the checkpoint on resume

    process: "Role"  # the process role (airlab.train.process): Local() unless the run loop sets the
    #                   Group of a run of several processes; evaluation is shared among them and the
    #                   in-step decisions (out of memory, a non-finite loss) are taken together
    placement: str  # "device": every split on the device (the fast path); "stream": batches gathered
    #                 on the host and prefetched (data.placement, chosen when the backend is built)
    placement_reason: str  # why, in words (the log's data line, env.json)

    @classmethod
    def collective(cls, config) -> "Collective | None":
        """This process's Collective when it is one of several processes of a run (started by
        torchrun or with TF_CONFIG naming several workers), else None (airlab.train.process.role_for)."""

    def __init__(self, config, dataset, task, *, training: bool = True) -> None:
        """Build the model from `config.model` for `dataset` and `task` on `config.device`, and put
        the data on the device; `training=False` (sampling) builds no optimizer. In a run of several
        processes every process builds the same model (the same seed) and computes its share of
        each batch (`train_step` receives that share)."""

    def set_order(self, order: "BatchOrder") -> None:
        """The run's batches to come (airlab.train.order.BatchOrder), before the first train_step:
        the streaming path prefetches them, augmentation reads each step's epoch."""

    # training
    def train_step(self, index: np.ndarray, lr: float, *, step: int | None = None) -> None:
        """One optimizer step on the examples at `index` of the training split (`step` counts
        from 1), in `grad_accum` micro-batches. A non-finite loss or gradient norm raises
        NonFiniteStep before any weight moves; running out of memory raises OutOfMemoryStep with
        the weights and the RNG as they were."""

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""

    def pop_train_metrics(self) -> dict[str, float]:
        """Mean training metrics since the last call (forces a device sync)."""

    def train_metrics_state(self) -> dict:
        """The running sums behind pop_train_metrics, for a checkpoint: {"count": n, "sums": {name:
        float}, "dtypes": {name: str}} (float32 sums are exact in JSON). Restored on resume, the first
        training metrics a resumed run logs equal those of the same run uninterrupted."""

    def restore_train_metrics(self, state: dict) -> None:
        """Continue the running sums saved by train_metrics_state (a state without "dtypes", from an
        earlier airlab, holds float32 sums)."""

    def evaluate(self, split: str) -> dict[str, float]:
        """Task metrics over a whole split ("val" or "test")."""

    def summary(self) -> ModelSummary: ...

    def num_params(self) -> int: ...

    # state
    def save_state(self, directory: Path) -> list[str]:
        """Write model/optimizer/RNG state into `directory`; return the file names written."""

    def load_state(self, directory: Path, *, weights_only: bool = False, skip: frozenset = frozenset()) -> None:
        """Restore state written by save_state (only the model's weights with weights_only).
        `skip` leaves parts out by name ("model", "optimizer", "scaler" and the backend's RNG
        parts, `rng_parts` of its table row): only the reliability tests use it (AIRLAB_RESUME_SKIP),
        to prove that each part matters."""

    def process_state(self) -> dict:
        """What differs between the processes of a run, as JSON (each process's own random
        generators and training-metric sums): the run loop gathers every process's into the
        checkpoint (a run of several processes only)."""

    def restore_process_state(self, state: dict) -> None:
        """Continue from process_state of this process's rank (a resume at the same world size)."""

    def named_weights(self) -> Iterator[tuple[str, np.ndarray]]:
        """Final weights as float arrays by name (for the digest and conversion)."""

    def weight_aliases(self) -> dict[str, list[str]]:
        """Layers that use another layer's weight, {owner layer: [layers using it]} (the
        Transformer's head and its token embedding): the converter reads a tied weight under
        either name."""

    def all_finite(self) -> bool: ...

    # samples
    def generate_images(self, n: int, seed: int) -> np.ndarray: ...

    def predict(self, split: str, idx: np.ndarray) -> np.ndarray:
        """A classifier's predicted classes (int64) for the examples at `idx` of `split`, read as
        evaluation reads them (scaled and normalised, never augmented)."""

    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...

    def generate_tokens(self, prompt: np.ndarray, n_new: int, *, temperature: float = 1.0, top_k: int | None = None,
                        seed: int = 0) -> np.ndarray: ...

    def close(self) -> None:
        """The run has ended in this process: let go of what ties the backend to the other
        processes (DDP's reducer) before the process group is taken down."""

    def environment(self) -> dict:
        """Framework versions and device facts for env.json (with the thread count requested,
        resolved and in force, and how it was derived)."""

    def numerics_facts(self) -> dict:
        """The facts bitwise-exact resume depends on (thread count in force, framework and numpy
        versions, device, precision, determinism, kernel libraries, CPU), as JSON. A checkpoint
        records them; a resume compares them with airlab.train.threads.compare_facts."""
