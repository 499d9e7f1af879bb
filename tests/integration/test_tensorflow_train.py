"""End to end, what only the TensorFlow backend has: its dry run shows Keras layers, it refuses what
it cannot honour, its faults (non-finite steps, out-of-memory back-off) behave as the torch
backend's, every shipped config trains with `--backend tensorflow` and learns as on torch, and
Keras's bf16 policy trains every model. What holds on every backend (the run directory,
determinism, resume, samples) is in test_train_e2e.py."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from airlab import registry  # noqa: E402
from airlab.backends import table  # noqa: E402
from airlab.config import load_config  # noqa: E402
from airlab.data import load_dataset  # noqa: E402
from airlab.train import checkpoint as ckpt  # noqa: E402
from conftest import LM_SMALLER, PYCORPUS_TINY, SHAPES_TINY, shipped_configs  # noqa: E402
from numerics import NUMERICS  # noqa: E402
from runs import QUICK, QUICK_TINY, RESUMABLE, metrics, summary, tiny, train  # noqa: E402

TF = ["--backend", "tensorflow"]


def test_dry_run_shows_the_keras_layers(airlab_cli):
    r = airlab_cli("train", QUICK, *QUICK_TINY, "train.steps=2", *TF, "--dry-run")
    assert r.code == 0, r.err
    assert "features.0" in r.out and "Conv2D" in r.out and "head.3" in r.out
    assert "parameters: 3,842" in r.out or "parameters:" in r.out


# --- what the backend cannot honour ----------------------------------------------------------------


@pytest.mark.parametrize("override, key", [("device=mps", "device"), ("train.precision=fp16", "train.precision")])
def test_an_option_the_backend_cannot_honour_is_a_config_error(override, key, airlab_cli, tmp_path):
    r = airlab_cli("train", QUICK, *QUICK_TINY, "train.steps=2", override, *TF, "--run-dir", tmp_path / "run")
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith(f"error: {key}:")
    assert r.err_lines[1].startswith("hint: ")
    assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "summary.json").exists()


def test_a_gpu_device_without_a_gpu_exits_4(airlab_cli, tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    r = airlab_cli("train", QUICK, *QUICK_TINY, "train.steps=2", "device=cuda", *TF, "--run-dir", tmp_path / "run")
    assert r.code == 4
    assert "sees no GPU" in r.err_lines[0] and "tensorflow[and-cuda]" in r.err_lines[1]


def test_missing_tensorflow_exits_4_with_the_install_command(airlab_cli, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "tensorflow" else real(name, *a, **k))
    r = airlab_cli("train", QUICK, *SHAPES_TINY, *TF, "--run-dir", tmp_path / "run")
    assert r.code == 4
    assert "'tensorflow' package" in r.err_lines[0]
    assert 'pip install "airlab[tf]"' in r.err_lines[1] and "tensorflow[and-cuda]" in r.err_lines[1]
    assert not (tmp_path / "run").exists()


# --- faults --------------------------------------------------------------------------------------


def test_non_finite_step_is_refused_and_exits_3(airlab_cli, tmp_path, monkeypatch):
    config, overrides = tiny("mlp")
    monkeypatch.setenv("AIRLAB_FAULT", "nan_at_step:4")
    run_dir = tmp_path / "run"
    r = airlab_cli("train", config, *overrides, *RESUMABLE, "train.checkpoint_every=2", *TF, "--run-dir", run_dir)
    assert r.code == 3, r.err
    assert "step 4" in r.err_lines[0] and "loss=nan" in r.err_lines[0]
    assert [s for s, _ in ckpt.list_steps(run_dir / "checkpoints")] == [2]
    monkeypatch.setenv("AIRLAB_FAULT", "inf_grad_at_step:3")
    r = airlab_cli("train", config, *overrides, *RESUMABLE, "train.on_nonfinite=skip", *TF, "--run-dir",
                   tmp_path / "skip")
    assert r.code == 0, r.err
    assert summary(tmp_path / "skip")["skipped_steps"] == 1


def test_grad_accum_out_of_memory_backs_off_to_the_same_weights(airlab_cli, tmp_path, monkeypatch):
    """1 vs N: a batch of 32 in 4 micro-batches of 8, asked for and backed off to, gives the same weights."""
    config, overrides = tiny("mlp")
    run = [*overrides, *RESUMABLE, "data.batch_size=32"]
    plain = tmp_path / "plain"
    train(airlab_cli, config, [*run, "train.grad_accum=4"], plain, backend="tensorflow")
    monkeypatch.setenv("AIRLAB_FAULT", "oom_at_batch:10")
    backed = tmp_path / "backed"
    r = train(airlab_cli, config, [*run, "train.auto_batch_size=true"], backed, backend="tensorflow")
    assert "retrying with micro-batch 8 x 4" in r.out
    assert summary(backed)["weights_sha256"] == summary(plain)["weights_sha256"]


# --- every shipped config, and every backend learns --------------------------------------------------


def offline(path: Path) -> list[str]:
    task = registry.get_model(load_config(path).model.name).task
    data = PYCORPUS_TINY if task == "lm" else SHAPES_TINY
    return [*data, "train.epochs=null", *NUMERICS]


SMALLER = {"transformer": LM_SMALLER}


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.stem)
def test_every_shipped_config_trains_and_every_backend_learns(path, airlab_cli, tmp_path):
    """Every shipped config trains with --backend tensorflow (offline data), and a short run lowers
    the training loss on every backend, to values comparable with the first backend's."""
    args = [*offline(path), "train.steps=30", "train.log_every=10", "data.batch_size=32", "train.warmup_steps=0",
            "train.schedule=constant", "train.eval_every=1000", "train.checkpoint_every=1000",
            *SMALLER.get(load_config(path).model.name, [])]
    losses = {}
    for row in table.ROWS:
        if not row.installed():
            assert row.name != "tensorflow"
            continue
        run_dir = tmp_path / row.name
        r = airlab_cli("train", path, *args, "--backend", row.name, "--run-dir", run_dir)
        assert r.code == 0, r.err
        s = summary(run_dir)
        assert (s["steps"], s["status"], s["backend"]) == (30, "completed", row.name)
        assert all(math.isfinite(v) for v in s["final"]["val"].values())
        train_loss = [rec["metrics"]["loss"] for rec in metrics(run_dir) if rec["split"] == "train"]
        losses[row.name] = (train_loss[0], train_loss[-1], s["final"]["val"]["loss"])
    if len(losses) < 2:
        pytest.skip(f"only {', '.join(losses)} is installed: nothing to compare with")
    for name, (first, last, _) in losses.items():
        assert last < first, f"{name} did not learn: {first:.4f} -> {last:.4f}"
    (t_first, t_last, t_val), *others = losses.values()
    for k_first, k_last, k_val in others:
        drop_t, drop_k = t_first - t_last, k_first - k_last
        assert 0.33 < drop_k / drop_t < 3.0, losses  # the same learning, give or take the initial draw
        assert abs(t_val - k_val) <= 0.25 * max(abs(t_val), abs(k_val)), losses


BF16_LAYERS = {  # beyond the spec's smoke fields: the optional layers bf16 must also handle
    "cnn": {"channels": [4, 8], "dense": [16], "batchnorm": True, "padding": "same"},
    "rnn": {"cell": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
    "vae": {"kind": "conv", "channels": [4, 8], "hidden": [8], "latent_dim": 2},
}


@pytest.mark.parametrize("model", registry.model_names())
def test_bf16_mixed_precision_trains_every_model(model):
    """Keras's mixed_bfloat16 policy: bf16 compute, float32 variables and losses, finite steps."""
    from airlab.backends.tensorflow.backend import TensorFlowBackend
    from airlab.config import validate
    from airlab.tasks import get_task

    lm = registry.get_model(model).task == "lm"
    data = ({"name": "pycorpus", "size": 20000, "limit": 4000, "batch_size": 4} if lm else
            {"name": "shapes", "size": 256, "limit": 64, "batch_size": 8})
    fields = BF16_LAYERS.get(model, registry.spec_class(model).smoke)
    cfg = validate({"name": "bf16", "device": "cpu", "model": {"name": model, **fields}, "data": data,
                    "backend": "tensorflow", "train": {"steps": 2, "precision": "bf16"}})
    d = cfg.data
    dataset = load_dataset(d.name, seed=0, size=d.size, limit=d.limit)
    task = get_task(registry.get_model(model).task)
    backend = TensorFlowBackend(cfg, dataset, task)
    assert backend.summary().precision == "bf16"
    before = dict(backend.named_weights())
    assert all(a.dtype.name == "float32" for a in before.values())
    order = task.epoch_indices(len(dataset.train), 0, 0, getattr(cfg.model, "context_length", None))
    for step in range(2):
        backend.train_step(order[step * d.batch_size:(step + 1) * d.batch_size], 1e-3, step=step + 1)
    assert all(math.isfinite(v) for v in backend.pop_train_metrics().values())
    assert backend.all_finite()
    assert any(not (before[n] == a).all() for n, a in backend.named_weights())
    assert all(math.isfinite(v) for v in backend.evaluate("val").values())
