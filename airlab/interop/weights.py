"""Weights by name, PyTorch <-> TensorFlow, as numpy arrays.

Both backends name their layers by the same module path (`hidden.0`, `features.3`,
`transformer.h.1.attn.c_attn`); they differ in the name of a weight within its layer and in its
layout. A TensorFlow weight's stable name is `<layer>.<variable>`; its torch name and layout
follow from the variable:

    tensorflow variable            torch name              layout (tensorflow -> torch)
    kernel (rank 2, Dense)         weight                  (in, out) -> (out, in)
    kernel (rank 4, Conv2D)        weight                  (kh, kw, in, out) -> (out, in, kh, kw)
    kernel (rank 4, ConvTranspose) weight                  (kh, kw, out, in) -> (in, out, kh, kw)   (the same permutation)
    embeddings                     weight                  as is
    gamma / beta                   weight / bias           as is (BatchNorm, LayerNorm)
    moving_mean / moving_variance  running_mean / running_var   as is
    bias                           bias                    as is
    weight_ih_l* / weight_hh_l*    the same                (in, gates*hidden) -> (gates*hidden, in)
    bias_ih_l* / bias_hh_l*        the same                as is

A torch BatchNorm also keeps `num_batches_tracked` (a step counter that matters only with
momentum=None, which airlab never uses); TensorFlow has none, so it is dropped one way and
written as 0 the other. Every transform is a transpose, so a round trip is bitwise exact.

torch -> tensorflow needs the TensorFlow model's names (an Embedding's `weight` is not a Dense
`kernel` though both are matrices); tensorflow -> torch follows from the names alone.
"""

from __future__ import annotations

import numpy as np

TORCH, TENSORFLOW = "torch", "tensorflow"

_TF_TO_TORCH = {"kernel": "weight", "embeddings": "weight", "gamma": "weight", "beta": "bias", "bias": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}


class ConversionError(ValueError):
    """The weights do not fit the target model (names or shapes)."""


def _split(name: str) -> tuple[str, str]:
    layer, _, var = name.rpartition(".")
    if not layer:
        raise ConversionError(f"{name!r} is not a stable `<layer>.<variable>` name")
    return layer, var


def torch_name(tf_name: str) -> str:
    """The torch state_dict name of a TensorFlow weight."""
    layer, var = _split(tf_name)
    if var.startswith(("weight_", "bias_")):  # recurrent weights keep PyTorch's names
        return tf_name
    try:
        return f"{layer}.{_TF_TO_TORCH[var]}"
    except KeyError:
        raise ConversionError(f"no torch counterpart known for the TensorFlow weight {tf_name!r}") from None


def to_torch_layout(tf_name: str, array: np.ndarray) -> np.ndarray:
    var = _split(tf_name)[1]
    if var == "kernel" and array.ndim == 2 or var.startswith("weight_"):
        return np.ascontiguousarray(array.T)
    if var == "kernel" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    return np.ascontiguousarray(array)


def to_tf_layout(tf_name: str, array: np.ndarray) -> np.ndarray:
    var = _split(tf_name)[1]
    if var == "kernel" and array.ndim == 2 or var.startswith("weight_"):
        return np.ascontiguousarray(array.T)
    if var == "kernel" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    return np.ascontiguousarray(array)


def tensorflow_to_torch(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow weights by stable name -> torch state_dict arrays (BatchNorms get num_batches_tracked)."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(weights):
        target = torch_name(name)
        if target in out:
            raise ConversionError(f"two TensorFlow weights map to the torch name {target!r}")
        out[target] = to_torch_layout(name, weights[name])
        if name.endswith(".moving_mean"):
            out[name.rpartition(".")[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
    return out


def torch_to_tensorflow(weights: dict[str, np.ndarray], target_shapes: dict[str, tuple[int, ...]],
                        aliases: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """torch state_dict arrays -> the TensorFlow model's weights (`target_shapes`: its stable
    names and shapes). `aliases` maps a layer to the layers sharing its weight: a tied weight is
    stored by torch under only one of its names (safetensors keeps the one that sorts first)."""
    aliases = aliases or {}
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    missing = []
    for name, shape in target_shapes.items():
        source = torch_name(name)
        candidates = [source]
        layer, var = _split(name)
        for alias in aliases.get(layer, []):
            candidates.append(f"{alias}.{torch_name(name).rpartition('.')[2]}")
        found = next((c for c in candidates if c in weights), None)
        if found is None:
            missing.append(source)
            continue
        array = to_tf_layout(name, np.asarray(weights[found]))
        if tuple(array.shape) != tuple(shape):
            raise ConversionError(f"{found}: shape {tuple(weights[found].shape)} does not fit {name} "
                                  f"{tuple(shape)} (after the layout change: {tuple(array.shape)})")
        out[name] = array
        used.update(c for c in candidates if c in weights)
    unexpected = sorted(n for n in set(weights) - used if not n.endswith(".num_batches_tracked"))
    if missing or unexpected:
        raise ConversionError(f"the torch weights do not fit the TensorFlow model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    return out


def max_relative_error(a, b) -> float:
    """max |a - b| / max |a| over arrays (0 when both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff
