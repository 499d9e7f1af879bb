"""Every shipped config validates and trains a few steps offline (new configs are picked up)."""

from __future__ import annotations

import json
import math

import pytest

from airlab import registry
from airlab.config import load_config
from conftest import LM_SMALLER, PYCORPUS_TINY, SHAPES_TINY, shipped_configs

CONFIGS = shipped_configs()


def offline_overrides(path) -> list[str]:
    """Swap the config's dataset for an offline one of the same kind and keep the run tiny."""
    cfg = load_config(path)
    task = registry.get_model(cfg.model.name).task
    data = [*PYCORPUS_TINY, *LM_SMALLER] if task == "lm" else SHAPES_TINY
    return [*data, "train.epochs=null", "train.steps=3", "device=cpu", "train.compile=false",
            "train.precision=fp32"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_config_validates(path, airlab_cli):
    r = airlab_cli("validate", path)
    assert r.code == 0, r.err
    assert r.out_lines[-1].startswith(f"{path}: ok")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_config_trains_offline(path, airlab_cli, tmp_path):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path / "run"
        r = airlab_cli("train", path, *offline_overrides(path), "--run-dir", run_dir)
    finally:
        torch.set_num_threads(threads)
    assert r.code == 0, r.err
    assert r.out_lines[-1] == f"run directory: {run_dir}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["status"] == "completed"
    assert summary["model"] == load_config(path).model.name
    assert all(math.isfinite(v) for v in summary["final"]["val"].values())


def test_configs_are_found():
    assert len(CONFIGS) >= 7
