"""End to end on the TensorFlow backend: tiny runs through the CLI leave the same run directory as
the torch backend, are deterministic, resume bitwise, write samples, refuse what the backend
cannot honour; every shipped config trains with `--backend tensorflow`; both backends learn."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
import safetensors.numpy  # noqa: E402

from airlab import registry  # noqa: E402
from airlab.config import load_config  # noqa: E402
from airlab.data import load_dataset  # noqa: E402
from airlab.train import checkpoint as ckpt  # noqa: E402
from airlab.train.rundir import weights_digest  # noqa: E402
from conftest import CONFIGS, PYCORPUS_TINY, SHAPES_TINY, shipped_configs  # noqa: E402

QUICK = CONFIGS / "quickstart.yaml"
TF = ["--backend", "tensorflow"]
QUICK_TINY = [*SHAPES_TINY, "model.channels=[4,8]", "model.dense=[16]", "device=cpu", "train.epochs=null"]
QUICK_RUN = [*QUICK_TINY, "train.steps=12", "train.checkpoint_every=3", "train.keep_checkpoints=2",
             "train.log_every=4", "train.warmup_steps=2", "data.batch_size=64"]
RESUMABLE = ["train.steps=10", "train.checkpoint_every=5", "train.keep_checkpoints=10", "train.log_every=5",
             "device=cpu"]
CASES = {
    "mlp": (CONFIGS / "mlp.yaml", [*SHAPES_TINY, "model.hidden=[16]", "model.dropout=0.5", "train.epochs=null"]),
    "vae": (CONFIGS / "vae.yaml", [*SHAPES_TINY, "model.hidden=[16]", "model.latent_dim=4", "train.epochs=null"]),
    "transformer": (CONFIGS / "transformer.yaml",
                    [*PYCORPUS_TINY, "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.context_length=16",
                     "model.dropout=0.1", "train.warmup_steps=2", "train.eval_every=5"]),
}


def train(airlab_cli, config, overrides, run_dir, *extra):
    r = airlab_cli("train", config, *overrides, *TF, "--run-dir", run_dir, *extra)
    assert r.code == 0, r.err
    return r


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in records]


def digest_of_checkpoint(directory: Path) -> str:
    return weights_digest(safetensors.numpy.load_file(str(directory / "model.safetensors")).items())


@pytest.fixture(scope="module")
def quick(tmp_path_factory, airlab_cli):
    run_dir = tmp_path_factory.mktemp("tf-quick") / "run"
    return train(airlab_cli, QUICK, QUICK_RUN, run_dir), run_dir


def test_the_run_directory_is_the_torch_backends(quick):
    r, run_dir = quick
    assert r.out_lines[-1] == f"run directory: {run_dir}"
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "checkpoints", "config.yaml", "env.json",
                                                         "metrics.jsonl", "status.json", "summary.json"]
    assert load_config(run_dir / "config.yaml").backend == "tensorflow"
    s = summary(run_dir)
    assert (s["model"], s["task"], s["backend"], s["device"], s["status"], s["steps"]) == (
        "cnn", "classification", "tensorflow", "cpu", "completed", 12)
    cfg = load_config(QUICK, QUICK_RUN)
    assert s["params"] == cfg.model.num_params(load_dataset("shapes", size=512, limit=256).info)
    assert set(s["final"]) == {"val", "test"} and set(s["final"]["val"]) == {"loss", "accuracy"}
    assert re.match(r"^[0-9a-f]{64}$", s["weights_sha256"])
    assert digest_of_checkpoint(Path(s["checkpoint"])) == s["weights_sha256"]
    records = metrics(run_dir)
    assert [r["step"] for r in records if r["split"] == "train"] == [4, 8, 12]
    assert [r["step"] for r in records if r["split"] == "val"] == [4, 8, 12]
    assert all(math.isfinite(v) for r in records for v in r["metrics"].values())
    env = json.loads((run_dir / "env.json").read_text())["backend"]
    import keras
    import tensorflow as tf

    assert (env["name"], env["tensorflow"], env["keras"], env["device"]) == ("tensorflow", tf.__version__,
                                                                            keras.__version__, "cpu")
    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-12", "step-9"]
    for _, path in ckpt.list_steps(root):
        assert ckpt.verify(path) is None
        assert set(json.loads((path / "manifest.json").read_text())["files"]) == {
            "model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer.json"}
        rng = safetensors.numpy.load_file(str(path / "rng.safetensors"))
        assert rng["tf_generator_state"].dtype.kind in "iu"  # the generator's state, as a tensor


def test_same_seed_same_weights_other_seed_other_weights(quick, airlab_cli, tmp_path):
    _, first = quick
    train(airlab_cli, QUICK, QUICK_RUN, tmp_path / "again")
    assert summary(tmp_path / "again")["weights_sha256"] == summary(first)["weights_sha256"]
    assert comparable(metrics(tmp_path / "again")) == comparable(metrics(first))
    train(airlab_cli, QUICK, [*QUICK_RUN, "seed=1"], tmp_path / "seed1")
    assert summary(tmp_path / "seed1")["weights_sha256"] != summary(first)["weights_sha256"]


def test_dry_run_shows_the_keras_layers(airlab_cli):
    r = airlab_cli("train", QUICK, *QUICK_TINY, "train.steps=2", *TF, "--dry-run")
    assert r.code == 0, r.err
    assert "features.0" in r.out and "Conv2D" in r.out and "head.3" in r.out
    assert "parameters: 3,842" in r.out or "parameters:" in r.out


# --- resume ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def completed(tmp_path_factory, airlab_cli):
    done: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in done:
            config, overrides = CASES[case]
            run_dir = tmp_path_factory.mktemp(f"tf-{case}-A") / "run"
            train(airlab_cli, config, [*overrides, *RESUMABLE], run_dir)
            done[case] = run_dir
        return done[case]

    return get


def interrupted_copy(airlab_cli, case: str, run_dir: Path, keep_through: int = 5) -> Path:
    config, overrides = CASES[case]
    train(airlab_cli, config, [*overrides, *RESUMABLE], run_dir)
    for step, path in ckpt.list_steps(run_dir / "checkpoints"):
        if step > keep_through:
            shutil.rmtree(path)
    return run_dir


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bitwise_identical(case, completed, airlab_cli, tmp_path):
    a = completed(case)
    b = interrupted_copy(airlab_cli, case, tmp_path / "b")
    r = airlab_cli("train", "--resume", b)
    assert r.code == 0, r.err
    assert f"resuming {b} from step-5" in r.out
    sa, sb = summary(a), summary(b)
    assert sb["weights_sha256"] == sa["weights_sha256"]
    for key in ("steps", "samples_seen", "final", "best", "params", "status"):
        assert sb[key] == sa[key], key
    assert comparable(metrics(b)) == comparable(metrics(a))
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        assert (ckpt.sha256_file(b / "checkpoints" / "step-10" / name)
                == ckpt.sha256_file(a / "checkpoints" / "step-10" / name)), name


@pytest.mark.parametrize("part", ["tf_rng", "optimizer"])
def test_leaving_a_part_out_of_the_resume_changes_the_result(part, completed, airlab_cli, tmp_path, monkeypatch):
    """Negative controls: the generator state (dropout masks) and the optimizer state matter."""
    a = completed("mlp")
    b = interrupted_copy(airlab_cli, "mlp", tmp_path / "b")
    monkeypatch.setenv("AIRLAB_RESUME_SKIP", part)
    assert airlab_cli("train", "--resume", b).code == 0
    assert summary(b)["weights_sha256"] != summary(a)["weights_sha256"]


# --- samples -------------------------------------------------------------------------------------


def test_vae_samples(completed, airlab_cli):
    run_dir = completed("vae")
    (first,) = summary(run_dir)["samples"]
    assert first.endswith("step-10-generated.png") and Path(first).is_file()
    r = airlab_cli("sample", run_dir, "--n", "4", "--seed", "1")
    assert r.code == 0, r.err
    new = run_dir / "samples" / "step-10-seed1-generated.png"
    assert r.out_lines == [f"wrote {new}"]
    before = new.read_bytes()
    assert airlab_cli("sample", run_dir, "--n", "4", "--seed", "1").code == 0
    assert new.read_bytes() == before


def test_transformer_text(completed, airlab_cli):
    run_dir = completed("transformer")
    (first,) = summary(run_dir)["samples"]
    text = Path(first).read_text()
    assert text.startswith("--- sample 1 (temperature 0.8) ---\n") and len(text) > 400
    r = airlab_cli("sample", run_dir, "--n", "2", "--seed", "5")
    assert r.code == 0, r.err


def test_autoencoder_reconstructions(airlab_cli, tmp_path):
    run_dir = tmp_path / "ae"
    train(airlab_cli, CONFIGS / "autoencoder.yaml",
          [*SHAPES_TINY, "model.channels=[4,4]", "train.epochs=null", "train.steps=3", "device=cpu"], run_dir)
    (first,) = summary(run_dir)["samples"]
    assert first.endswith("-reconstructions.png")
    assert airlab_cli("sample", run_dir, "--n", "4", "--seed", "1").code == 0


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


def test_non_finite_step_is_refused_and_exits_3(airlab_cli, tmp_path, monkeypatch):
    config, overrides = CASES["mlp"]
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
    config, overrides = CASES["mlp"]
    run = [*overrides, *RESUMABLE, "data.batch_size=32"]
    plain = tmp_path / "plain"
    train(airlab_cli, config, [*run, "train.grad_accum=4"], plain)
    monkeypatch.setenv("AIRLAB_FAULT", "oom_at_batch:10")
    backed = tmp_path / "backed"
    r = train(airlab_cli, config, [*run, "train.auto_batch_size=true"], backed)
    assert "retrying with micro-batch 8 x 4" in r.out
    assert summary(backed)["weights_sha256"] == summary(plain)["weights_sha256"]


# --- every shipped config, and both backends learn --------------------------------------------------


def offline(path: Path) -> list[str]:
    task = registry.get_model(load_config(path).model.name).task
    data = PYCORPUS_TINY if task == "lm" else SHAPES_TINY
    return [*data, "train.epochs=null", "device=cpu", "train.compile=false", "train.precision=fp32"]


SMALLER = {"transformer": ["model.n_layer=2", "model.n_embd=64", "model.context_length=32"]}  # the sampling at
# the end of an LM run (2 x 400 characters) dominates at the shipped size on both backends


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.stem)
def test_every_shipped_config_trains_and_both_backends_learn(path, airlab_cli, tmp_path):
    """Every shipped config trains with --backend tensorflow (offline data), and a short run lowers
    the training loss on both backends, to comparable values."""
    torch = pytest.importorskip("torch")
    args = [*offline(path), "train.steps=30", "train.log_every=10", "data.batch_size=32", "train.warmup_steps=0",
            "train.schedule=constant", "train.eval_every=1000", "train.checkpoint_every=1000",
            *SMALLER.get(load_config(path).model.name, [])]
    losses = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for backend in ("torch", "tensorflow"):
            run_dir = tmp_path / backend
            r = airlab_cli("train", path, *args, "--backend", backend, "--run-dir", run_dir)
            assert r.code == 0, r.err
            s = summary(run_dir)
            assert (s["steps"], s["status"], s["backend"]) == (30, "completed", backend)
            assert all(math.isfinite(v) for v in s["final"]["val"].values())
            train_loss = [rec["metrics"]["loss"] for rec in metrics(run_dir) if rec["split"] == "train"]
            losses[backend] = (train_loss[0], train_loss[-1], summary(run_dir)["final"]["val"]["loss"])
    finally:
        torch.set_num_threads(threads)
    for backend, (first, last, _) in losses.items():
        assert last < first, f"{backend} did not learn: {first:.4f} -> {last:.4f}"
    (t_first, t_last, t_val), (k_first, k_last, k_val) = losses["torch"], losses["tensorflow"]
    drop_t, drop_k = t_first - t_last, k_first - k_last
    assert 0.33 < drop_k / drop_t < 3.0, losses  # the same learning, give or take the initial draw
    assert abs(t_val - k_val) <= 0.25 * max(abs(t_val), abs(k_val)), losses


BF16 = {  # small specs of every model, with their optional layers (BatchNorm, GRU, conv VAE, ...)
    "mlp": {"hidden": [16]},
    "cnn": {"channels": [4, 8], "dense": [16], "batchnorm": True, "padding": "same"},
    "rnn": {"cell": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
    "autoencoder": {"channels": [4, 4]},
    "vae": {"kind": "conv", "channels": [4, 8], "hidden": [8], "latent_dim": 2},
    "transformer": {"n_layer": 1, "n_embd": 16, "n_head": 2, "context_length": 8, "dropout": 0.1},
}


@pytest.mark.parametrize("model", list(BF16))
def test_bf16_mixed_precision_trains_every_model(model):
    """Keras's mixed_bfloat16 policy: bf16 compute, float32 variables and losses, finite steps."""
    from airlab.backends.tensorflow.backend import TensorFlowBackend
    from airlab.config import validate
    from airlab.tasks import get_task

    lm = registry.get_model(model).task == "lm"
    data = ({"name": "pycorpus", "size": 20000, "limit": 4000, "batch_size": 4} if lm else
            {"name": "shapes", "size": 256, "limit": 64, "batch_size": 8})
    cfg = validate({"name": "bf16", "device": "cpu", "model": {"name": model, **BF16[model]}, "data": data,
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
