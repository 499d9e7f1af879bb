"""PyTorch's weight layout <-> the canonical one, which is PyTorch's own less BatchNorm's
`num_batches_tracked` (see airlab/interop/weights.py). Framework-free: numpy only."""

from __future__ import annotations

import numpy as np

_COUNTER = ".num_batches_tracked"


def to_canonical(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A torch state_dict (as stored in model.safetensors) -> canonical: the step counters dropped."""
    return {name: array for name, array in weights.items() if not name.endswith(_COUNTER)}


def with_batch_counters(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights with a zero `num_batches_tracked` beside every BatchNorm's running mean."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(weights):
        out[name] = weights[name]
        if name.endswith(".running_mean"):
            out[name.removesuffix(".running_mean") + _COUNTER] = np.zeros((), np.int64)
    return out


def from_canonical(weights: dict[str, np.ndarray], target) -> dict[str, np.ndarray]:
    """Canonical weights -> what a torch model loads (its own checks name any misfit)."""
    return with_batch_counters(weights)
