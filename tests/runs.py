"""Tiny training runs through the CLI, and what tests read back from their run directories.

Shared by the end-to-end files (test_train_e2e.py on every backend, test_tensorflow_train.py for
what only TensorFlow has). Every run here states its numerics (tests/numerics.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.numpy

from airlab.train.rundir import weights_digest
from conftest import CONFIGS, SHAPES_TINY
from numerics import NUMERICS
from smoke import case, model_overrides

QUICK = CONFIGS / "quickstart.yaml"  # a cnn
QUICK_TINY = [*SHAPES_TINY, *model_overrides("cnn"), *NUMERICS, "train.epochs=null"]

# 10 steps, a checkpoint every 5, train metrics logged at the same cadence (so the mean of the
# training loss over a logging interval never straddles a resume)
RESUMABLE = ["train.steps=10", "train.checkpoint_every=5", "train.keep_checkpoints=10", "train.log_every=5",
             *NUMERICS]


def tiny(model: str) -> tuple[Path, list[str]]:
    """A model's tiny run for RESUMABLE's cadence (a language model evaluates at each checkpoint)."""
    return case(model, eval_every=5)


def train(airlab_cli, config, overrides, run_dir, *extra, backend: str | None = None):
    """`airlab train CONFIG OVERRIDES [--backend B] --run-dir RUN_DIR EXTRA`, which must succeed."""
    on = ["--backend", backend] if backend else []
    r = airlab_cli("train", config, *overrides, *on, "--run-dir", run_dir, *extra)
    assert r.code == 0, r.err
    return r


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def comparable(records: list[dict]) -> list[dict]:
    """metrics.jsonl without what depends on the clock."""
    return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in records]


def digest_of_checkpoint(directory: Path) -> str:
    return weights_digest(safetensors.numpy.load_file(str(directory / "model.safetensors")).items())
