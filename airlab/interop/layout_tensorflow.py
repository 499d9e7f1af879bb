"""TensorFlow's weight layout <-> the canonical one (see airlab/interop/weights.py for the table of
names and layouts). Framework-free: numpy only."""

from __future__ import annotations

import numpy as np

from airlab.interop.weights import ConversionError

_TO_CANONICAL = {"kernel": "weight", "embeddings": "weight", "gamma": "weight", "beta": "bias", "bias": "bias",
                 "moving_mean": "running_mean", "moving_variance": "running_var"}


def _split(name: str) -> tuple[str, str]:
    layer, _, var = name.rpartition(".")
    if not layer:
        raise ConversionError(f"{name!r} is not a stable `<layer>.<variable>` name")
    return layer, var


def canonical_name(tf_name: str) -> str:
    """The canonical (torch state_dict) name of a TensorFlow weight."""
    layer, var = _split(tf_name)
    if var.startswith(("weight_", "bias_")):  # recurrent weights keep PyTorch's names
        return tf_name
    try:
        return f"{layer}.{_TO_CANONICAL[var]}"
    except KeyError:
        raise ConversionError(f"no torch counterpart known for the TensorFlow weight {tf_name!r}") from None


# the axis order of a rank-4 kernel: TensorFlow's (kh, kw, in, out) <-> canonical (out, in, kh, kw)
_KERNEL_4D = {"to": (3, 2, 0, 1), "from": (2, 3, 1, 0)}


def _relayout(tf_name: str, array: np.ndarray, direction: str) -> np.ndarray:
    """A TensorFlow weight's array to ("to") or from ("from") the canonical layout: a transpose."""
    var = _split(tf_name)[1]
    if var == "kernel" and array.ndim == 2 or var.startswith("weight_"):
        return np.ascontiguousarray(array.T)
    if var == "kernel" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(_KERNEL_4D[direction]))
    return np.ascontiguousarray(array)


def to_canonical(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow weights by stable name -> canonical names and layouts."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(weights):
        target = canonical_name(name)
        if target in out:
            raise ConversionError(f"two TensorFlow weights map to the torch name {target!r}")
        out[target] = _relayout(name, weights[name], "to")
    return out


def from_shapes(weights: dict[str, np.ndarray], target_shapes: dict[str, tuple[int, ...]],
                aliases: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Canonical weights -> a TensorFlow model's (`target_shapes`: its stable names and shapes).
    `aliases` maps a layer to the layers sharing its weight: a tied weight is stored canonically
    under only one of its names (safetensors keeps the one that sorts first)."""
    aliases = aliases or {}
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    missing = []
    for name, shape in target_shapes.items():
        source = canonical_name(name)
        candidates = [source]
        layer, _ = _split(name)
        for alias in aliases.get(layer, []):
            candidates.append(f"{alias}.{source.rpartition('.')[2]}")
        found = next((c for c in candidates if c in weights), None)
        if found is None:
            missing.append(source)
            continue
        array = _relayout(name, np.asarray(weights[found]), "from")
        if tuple(array.shape) != tuple(shape):
            raise ConversionError(f"{found}: shape {tuple(weights[found].shape)} does not fit {name} "
                                  f"{tuple(shape)} (after the layout change: {tuple(array.shape)})")
        out[name] = array
        used.update(c for c in candidates if c in weights)
    unexpected = sorted(set(weights) - used)
    if missing or unexpected:
        raise ConversionError(f"the torch weights do not fit the TensorFlow model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    return out


def from_canonical(weights: dict[str, np.ndarray], target) -> dict[str, np.ndarray]:
    """Canonical weights -> the arrays the built TensorFlow backend `target` loads."""
    shapes = {n: tuple(a.shape) for n, a in target.named_weights()}
    return from_shapes(weights, shapes, target.weight_aliases())
