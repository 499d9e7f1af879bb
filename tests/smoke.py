"""Tiny runs of every registered model, from data: the model's settings are its spec's `smoke`
fields (beside its `test_variants`), the data and the rest follow from its task. A seventh model
is trained by every suite that uses these (end to end, resume, kill/resume, bf16) with no new
test code.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from airlab import registry
from conftest import CONFIGS, PYCORPUS_TINY, SHAPES_TINY
from numerics import as_overrides

MODELS: list[str] = registry.model_names()


_WRITTEN: list[Path] = []


def config_of(model: str) -> Path:
    """The shipped config of a model (configs/<model>.yaml), or, for a model that has none yet, a
    minimal one (its name and model; the smoke overrides supply the rest)."""
    shipped = CONFIGS / f"{model}.yaml"
    if shipped.is_file():
        return shipped
    if not _WRITTEN:
        _WRITTEN.append(Path(tempfile.mkdtemp(prefix="airlab-test-configs-")))
        atexit.register(shutil.rmtree, _WRITTEN[0], True)
    path = _WRITTEN[0] / f"{model}.yaml"
    path.write_text(f"name: {model}-smoke\nmodel:\n  name: {model}\ntrain:\n  steps: 10\n", encoding="utf-8")
    return path


def is_lm(model: str) -> bool:
    return registry.get_model(model).task == "lm"


def model_overrides(model: str) -> list[str]:
    """The spec's smoke fields as overrides: ["model.hidden=[16]", "model.dropout=0.5"]."""
    return as_overrides({f"model.{k}": v for k, v in registry.spec_class(model).smoke.items()})


def smoke(model: str, *, eval_every: int) -> list[str]:
    """Overrides that make a tiny offline run of `model` (its shipped config's size is for real
    training). A language model reads a few thousand characters of Python docstrings, warms up
    for 2 steps (its config's warm-up is longer than these runs) and evaluates every `eval_every`
    steps (an epoch of windows is longer than these runs); the others read 256 generated shapes."""
    if is_lm(model):
        return [*PYCORPUS_TINY, *model_overrides(model), "train.epochs=null", "train.warmup_steps=2",
                f"train.eval_every={eval_every}"]
    return [*SHAPES_TINY, *model_overrides(model), "train.epochs=null"]


def case(model: str, *, eval_every: int) -> tuple[Path, list[str]]:
    """(config, overrides) of a tiny run of `model`."""
    return config_of(model), smoke(model, eval_every=eval_every)
