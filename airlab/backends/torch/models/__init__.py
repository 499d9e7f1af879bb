"""PyTorch models: one file per model, each with `build(spec, info) -> torch.nn.Module`.

Builders are found through `airlab.registry` ("airlab.backends.torch.models.<name>:build").
"""

from __future__ import annotations

from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """A fresh activation module for a spec's `activation` name (GELU is the exact erf form)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"Expected `activation` in {sorted(_ACTIVATIONS)}. Received: activation={name!r}") from None
