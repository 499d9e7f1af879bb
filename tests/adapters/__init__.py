"""One adapter per backend: what truly differs between the frameworks in the tests, and nothing else.

The tests that hold for every backend are written once against `Adapter` and parametrized by the
`backend` fixture (tests/conftest.py), whose parameters are the rows of airlab's backend table
(`airlab.backends.table`). A backend whose framework is not installed is skipped with the reason.
Adding a backend to the tests is one module here, `adapters/<name>.py`, defining `ADAPTER`.

This module is framework-free; each adapter module imports its framework.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from airlab.backends import table


class Adapter:
    """The interface. Models, tensors and outputs are the framework's own objects; what the tests
    compare comes back as numpy arrays."""

    name: str
    # the files of a committed checkpoint (its manifest), and the ones a bitwise resume reproduces
    checkpoint_files: frozenset[str]
    resumed_files: tuple[str, ...]
    rng_state: str  # the generator's state in rng.safetensors, as an integer tensor
    # overrides, beyond tests/numerics.py's NUMERICS, that bitwise resume in another process needs
    exact_resume: tuple[str, ...] = ()

    @property
    def row(self) -> table.BackendRow:
        return table.get(self.name)

    @property
    def implementation(self) -> type:
        return table.load(self.row.implementation)

    def __repr__(self) -> str:
        return f"<{self.name} adapter>"

    # -- the process --------------------------------------------------------------------------
    @contextlib.contextmanager
    def numerics(self) -> Iterator[None]:
        """In-process models on one intra-op thread (tiny models gain nothing from more, and
        every process then does the same arithmetic)."""
        yield

    def versions(self) -> dict[str, str]:
        """The framework versions a run records in env.json's "backend" section."""
        raise NotImplementedError

    # -- models ---------------------------------------------------------------------------------
    def build(self, model: str, spec, info, seed: int = 0) -> Any:
        raise NotImplementedError

    def count_params(self, model) -> int:
        raise NotImplementedError

    def weights(self, model) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def save(self, model, path: Path) -> None:
        """Write the model's weights to a safetensors file, as the backend's checkpoints do."""
        raise NotImplementedError

    def load(self, model, path: Path) -> None:
        """Load a safetensors file written by `save` into a model of the same spec (all names used)."""
        raise NotImplementedError

    # -- tensors and the forward pass --------------------------------------------------------------
    def tensor(self, array: np.ndarray) -> Any:
        """A framework tensor of a numpy array: float32 stays float32, integers become the
        framework's index type."""
        raise NotImplementedError

    def forward(self, model, x, *, training: bool, seed: int | None = None) -> Any:
        """The model's output: in training mode (dropout, batch statistics), with `seed` fixing
        its randomness where given; in inference mode without gradients."""
        raise NotImplementedError

    def arrays(self, out) -> tuple[np.ndarray, ...]:
        """The output (a tensor or a tuple of tensors) as numpy arrays."""
        raise NotImplementedError

    # the operations the contract losses are written in (tests/contract/test_models.py)
    def cross_entropy(self, logits, labels):
        """Mean softmax cross-entropy over every position; logits (..., K), labels (...)."""
        raise NotImplementedError

    def bce_with_logits(self, logits, targets):
        """Element-wise sigmoid cross-entropy."""
        raise NotImplementedError

    def sigmoid(self, x):
        raise NotImplementedError

    def exp(self, x):
        raise NotImplementedError

    def sum(self, x):
        raise NotImplementedError

    def mean(self, x):
        raise NotImplementedError

    def adam_steps(self, model, x, loss_of: Callable, steps: int, lr: float = 1e-3) -> list[float]:
        """`steps` Adam steps on the fixed input `x`, minimising `loss_of(output)`; the loss of each step."""
        raise NotImplementedError


_LOADED: dict[str, Adapter] = {}


def adapter(name: str) -> Adapter:
    """The adapter of a backend in airlab's table (imports its framework)."""
    if name not in _LOADED:
        table.get(name)  # KeyError for a backend the table does not know
        _LOADED[name] = importlib.import_module(f"adapters.{name}").ADAPTER
    return _LOADED[name]


def needs(name: str):
    """A mark that skips a test, with the reason, where a backend's framework is not installed."""
    import pytest

    row = table.get(name)
    return pytest.mark.skipif(not row.installed(),
                              reason=f"{row.display} is not installed: pip install \"airlab[{row.extra}]\"")


def params(names: tuple[str, ...] | None = None) -> list:
    """pytest params of the backends in the table (or of `names`), each skipped with the reason
    where its framework is not installed."""
    import pytest

    return [pytest.param(name, id=name, marks=needs(name)) for name in (names or table.BACKENDS)]
