"""Weights by name between backends, as numpy arrays, through one canonical layout.

The canonical layout is PyTorch's: state_dict names (`hidden.0.weight`, `features.3.bias`,
`transformer.h.1.attn.c_attn.weight`), PyTorch's tensor layouts, a tied weight stored once (under
the name that sorts first, as safetensors keeps it), and no BatchNorm `num_batches_tracked` (a
step counter that matters only with momentum=None, which airlab never uses). Each backend has one
converter module, framework-free, named in airlab/backends/table.py (`row.weights`):

    to_canonical(weights: dict[str, ndarray]) -> dict[str, ndarray]
    from_canonical(weights: dict[str, ndarray], target) -> dict[str, ndarray]   # target: a built Backend

so carrying weights from any backend to any other is `to_canonical` of the one, then
`from_canonical` of the other (`convert`), and a new backend brings one converter, not one per
pair. Every transform is a rename or a transpose, so a round trip is bitwise exact.

TensorFlow's side (airlab/interop/layout_tensorflow.py): both backends name their layers by the
same module path; a TensorFlow weight's stable name is `<layer>.<variable>`, and its canonical
name and layout follow from the variable:

    tensorflow variable            canonical (torch) name  layout (tensorflow -> canonical)
    kernel (rank 2, Dense)         weight                  (in, out) -> (out, in)
    kernel (rank 4, Conv2D)        weight                  (kh, kw, in, out) -> (out, in, kh, kw)
    kernel (rank 4, ConvTranspose) weight                  (kh, kw, out, in) -> (in, out, kh, kw)   (the same permutation)
    embeddings                     weight                  as is
    gamma / beta                   weight / bias           as is (BatchNorm, LayerNorm)
    moving_mean / moving_variance  running_mean / running_var   as is
    bias                           bias                    as is
    weight_ih_l* / weight_hh_l*    the same                (in, gates*hidden) -> (gates*hidden, in)
    bias_ih_l* / bias_hh_l*        the same                as is

canonical -> tensorflow needs the TensorFlow model's names (an Embedding's `weight` is not a Dense
`kernel` though both are matrices); tensorflow -> canonical follows from the names alone.
"""

from __future__ import annotations

import numpy as np

class ConversionError(ValueError):
    """The weights do not fit the target model (names or shapes)."""


def converter(backend: str):
    """The weight-layout converter module of a backend (see the table's `weights`)."""
    from airlab.backends import table

    return table.load(table.get(backend).weights)


def convert(weights: dict[str, np.ndarray], source: str, target) -> dict[str, np.ndarray]:
    """Weights written by the `source` backend -> the arrays the `target` backend (a built
    instance, with `.name`) loads: through the canonical layout."""
    return converter(target.name).from_canonical(converter(source).to_canonical(weights), target)


def tensorflow_to_torch(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow weights by stable name -> torch state_dict arrays (the parity tests' shortcut)."""
    from airlab.interop import layout_tensorflow, layout_torch

    return layout_torch.with_batch_counters(layout_tensorflow.to_canonical(weights))


def torch_to_tensorflow(weights: dict[str, np.ndarray], target_shapes: dict[str, tuple[int, ...]],
                        aliases: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """torch state_dict arrays -> a TensorFlow model's weights by stable name and shape (the parity
    tests' shortcut; `aliases` as in layout_tensorflow.from_shapes)."""
    from airlab.interop import layout_tensorflow, layout_torch

    return layout_tensorflow.from_shapes(layout_torch.to_canonical(weights), target_shapes, aliases)


def max_relative_error(a, b) -> float:
    """max |a - b| / max |a| over arrays (0 when both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff
