"""End to end, on every backend: train tiny models through the CLI and check the run directory,
determinism, resume (bitwise on CPU), samples and divergence.

The tests that hold for every backend take the `backend` fixture (one adapter per framework,
tests/adapters/); the run loop's own behaviour (config changes on resume, early stopping,
divergence, run names) is the same on every backend and is tested once, on the first installed
one (`loop_backend`). What only TensorFlow has is in test_tensorflow_train.py. Model settings
come from the specs (`smoke`, through tests/smoke.py), numerics from tests/numerics.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from PIL import Image

from airlab.backends import table
from airlab.config import load_config
from airlab.data import load_dataset
from airlab.train import checkpoint as ckpt
from airlab.train.schedule import lr_at
from numerics import NUMERICS
from runs import QUICK, QUICK_TINY, RESUMABLE, comparable, digest_of_checkpoint, metrics, summary, tiny, train

HEX64 = re.compile(r"^[0-9a-f]{64}$")

CASES = {
    # a classifier with dropout: the RNG must be restored
    "mlp": tiny("mlp"),
    # dropout, a cosine schedule with warm-up and an epoch boundary inside the run
    "cnn": (QUICK, [*QUICK_TINY, "train.warmup_steps=3", "data.batch_size=64"]),
    # the reparameterization draws from the RNG
    "vae": tiny("vae"),
    # windows of a token stream; dropout on
    "transformer": tiny("transformer"),
}


@pytest.fixture(scope="module")
def loop_backend() -> str:
    """The run loop's own tests run once, on the first installed backend of the table."""
    for row in table.ROWS:
        if row.installed():
            return row.name
    pytest.skip("no backend's framework is installed")


# --- one tiny quickstart run per backend, inspected file by file ----------------------------------

QUICK_RUN = [*QUICK_TINY, "train.steps=12", "train.checkpoint_every=3", "train.keep_checkpoints=2",
             "train.log_every=4", "train.warmup_steps=2", "output.curves=true"]


@pytest.fixture(scope="module")
def quick(backend, tmp_path_factory, airlab_cli):
    run_dir = tmp_path_factory.mktemp(f"{backend.name}-quick") / "run"
    return train(airlab_cli, QUICK, QUICK_RUN, run_dir, backend=backend.name), run_dir


def test_last_stdout_line_names_the_run_directory(quick):
    r, run_dir = quick
    assert r.out_lines[-1] == f"run directory: {run_dir}"
    assert r.err == ""


def test_the_run_directory_holds_the_same_files_on_every_backend(quick):
    _, run_dir = quick
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "checkpoints", "config.yaml", "confusion.json",
                                                         "curves.png", "data.json", "env.json", "metrics.jsonl",
                                                         "samples", "status.json", "summary.json"]


def test_a_classifier_run_leaves_its_confusion_matrix_and_curves(quick):
    _, run_dir = quick
    summary = json.loads((run_dir / "summary.json").read_text())
    table = json.loads((run_dir / "confusion.json").read_text())
    matrix = np.asarray(table["matrix"])
    data = json.loads((run_dir / "data.json").read_text())
    assert table["split"] == "test" and table["classes"] == data["class_names"]
    assert matrix.shape == (10, 10) and matrix.sum() == table["examples"] == data["counts"]["test"]
    assert table["support"] == matrix.sum(axis=1).tolist()
    # the matrix's predictions are the ones the evaluation scored
    assert table["accuracy"] == pytest.approx(summary["final"]["test"]["accuracy"], abs=1e-9)
    assert summary["confusion"] == str(run_dir / "confusion.json") and summary["curves"] == str(run_dir / "curves.png")
    with Image.open(run_dir / "curves.png") as img:
        assert img.format == "PNG" and img.size[0] > 400


def test_config_yaml_loads_back_to_the_same_config(backend, quick):
    _, run_dir = quick
    saved = load_config(run_dir / "config.yaml")
    assert saved == load_config(QUICK, [*QUICK_RUN, f"backend={backend.name}"])
    assert saved.backend == backend.name


def test_env_json(backend, quick):
    _, run_dir = quick
    env = json.loads((run_dir / "env.json").read_text())
    for key in ("python", "platform", "cpu", "backend", "argv", "git_commit", "airlab", "numpy"):
        assert key in env, key
    for key, version in backend.versions().items():
        assert env["backend"][key] == version, key
    assert env["backend"]["device"] == "cpu"
    assert env["cpu"]["logical_cores"] >= 1
    assert isinstance(env["argv"], list) and env["argv"][0] == "airlab"
    assert env["git_commit"] is None or re.match(r"^[0-9a-f]{40}(-dirty)?$", env["git_commit"])


def test_env_json_argv_is_the_command_that_ran(backend, quick):
    _, run_dir = quick
    argv = json.loads((run_dir / "env.json").read_text())["argv"]
    assert argv == ["airlab", "train", str(QUICK), *QUICK_RUN, "--backend", backend.name, "--run-dir", str(run_dir)]


def test_metrics_jsonl(quick):
    _, run_dir = quick
    records = metrics(run_dir)
    cfg = load_config(QUICK, QUICK_RUN)
    for rec in records:
        assert {"step", "epoch", "split", "metrics", "time"} <= set(rec)
        assert rec["split"] in ("train", "val", "test")
        assert all(math.isfinite(v) for v in rec["metrics"].values())
    train_lines = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_lines] == [4, 8, 12]
    for rec in train_lines:
        assert set(rec["metrics"]) == {"loss"}
        assert rec["samples_per_s"] > 0
        # the lr of the logged step (0-based step index = step - 1)
        assert rec["lr"] == pytest.approx(lr_at(rec["step"] - 1, lr=cfg.train.lr, schedule="cosine",
                                                total_steps=12, warmup_steps=2))
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8, 12]  # 256 samples / batch 64: an epoch is 4 steps
    assert all(set(r["metrics"]) == {"loss", "accuracy"} for r in val)
    assert [r["epoch"] for r in val] == [1.0, 2.0, 3.0]
    assert [r["split"] for r in records if r["step"] == 12][-1] == "test"
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)


def test_summary_json(backend, quick):
    _, run_dir = quick
    s = summary(run_dir)
    for key in ("name", "model", "task", "backend", "device", "status", "steps", "epochs", "samples_seen",
                "final", "best", "train_time_s", "wall_time_s", "samples_per_s", "params", "weights_sha256",
                "checkpoint", "samples"):
        assert key in s, key
    assert (s["name"], s["model"], s["task"], s["backend"], s["device"]) == (
        "quickstart", "cnn", "classification", backend.name, "cpu")
    assert s["status"] == "completed" and s["steps"] == 12 and s["samples_seen"] == 12 * 64
    cfg = load_config(QUICK, QUICK_RUN)
    assert s["params"] == cfg.model.num_params(load_dataset("shapes", size=512, limit=256).info)
    assert set(s["final"]) == {"val", "test"}
    records = metrics(run_dir)
    val = [r for r in records if r["split"] == "val"]
    assert s["final"]["val"] == val[-1]["metrics"]
    best = max(val, key=lambda r: (r["metrics"]["accuracy"], -r["step"]))
    assert s["best"] == {"metric": "val/accuracy", "mode": "max", "value": best["metrics"]["accuracy"],
                         "step": best["step"]}
    assert s["samples"] == [str(run_dir / "samples" / "step-12-predictions.txt"),
                            str(run_dir / "samples" / "step-12-predictions.png")]


def test_weights_sha256_matches_the_final_checkpoint(quick):
    _, run_dir = quick
    s = summary(run_dir)
    assert HEX64.match(s["weights_sha256"])
    assert s["checkpoint"] == str(run_dir / "checkpoints" / "step-12")
    assert digest_of_checkpoint(Path(s["checkpoint"])) == s["weights_sha256"]


def test_checkpoints_kept_and_verified(backend, quick):
    _, run_dir = quick
    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-12", "step-9"]  # keep_checkpoints: 2
    for step, path in ckpt.list_steps(root):
        assert ckpt.verify(path) is None
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["step"] == step
        assert set(manifest["files"]) == backend.checkpoint_files
        assert ckpt.read_trainer_state(path)["step"] == step
        rng = safetensors.numpy.load_file(str(path / "rng.safetensors"))
        assert rng[backend.rng_state].dtype.kind in "iu"  # the generator's state, as a tensor


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights(backend, quick, airlab_cli, tmp_path):
    _, first = quick
    train(airlab_cli, QUICK, QUICK_RUN, tmp_path / "again", backend=backend.name)
    assert summary(tmp_path / "again")["weights_sha256"] == summary(first)["weights_sha256"]
    assert comparable(metrics(tmp_path / "again")) == comparable(metrics(first))
    train(airlab_cli, QUICK, [*QUICK_RUN, "seed=1"], tmp_path / "seed1", backend=backend.name)
    assert summary(tmp_path / "seed1")["weights_sha256"] != summary(first)["weights_sha256"]


def test_a_real_process_trains_and_records_its_argv(loop_backend, airlab_proc, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", str(QUICK), *QUICK_TINY, "train.steps=4", "--backend", loop_backend, "--run-dir", str(run_dir)]
    r = airlab_proc(*args)
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1] == f"run directory: {run_dir}"
    env = json.loads((run_dir / "env.json").read_text())
    assert env["argv"] == ["airlab", *args]
    assert summary(run_dir)["steps"] == 4


def test_runs_root_names_the_directory_after_the_run(loop_backend, airlab_cli, tmp_path):
    r = airlab_cli("train", QUICK, *QUICK_TINY, "train.steps=2", f"output.runs_root={tmp_path / 'runs'}",
                   "--backend", loop_backend)
    assert r.code == 0, r.err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.match(r"^quickstart-\d{8}-\d{6}(-\d+)?$", run_dir.name)
    assert r.out_lines[-1] == f"run directory: {run_dir}"


# --- resume ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def completed(tmp_path_factory, airlab_cli):
    """One uninterrupted run per backend and case (trained on first use), shared by the resume and
    sample tests."""
    done: dict[tuple[str, str], Path] = {}

    def get(backend: str, case: str) -> Path:
        if (backend, case) not in done:
            config, overrides = CASES[case]
            run_dir = tmp_path_factory.mktemp(f"{backend}-{case}-A") / "run"
            train(airlab_cli, config, [*overrides, *RESUMABLE], run_dir, backend=backend)
            done[(backend, case)] = run_dir
        return done[(backend, case)]

    return get


def interrupted_copy(airlab_cli, backend: str, case: str, run_dir: Path, keep_through: int = 5) -> Path:
    """Train the case again into run_dir, then delete its checkpoints after `keep_through`."""
    config, overrides = CASES[case]
    train(airlab_cli, config, [*overrides, *RESUMABLE], run_dir, backend=backend)
    for step, path in ckpt.list_steps(run_dir / "checkpoints"):
        if step > keep_through:
            shutil.rmtree(path)
    return run_dir


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bitwise_identical(backend, case, completed, airlab_cli, tmp_path):
    a = completed(backend.name, case)
    b = interrupted_copy(airlab_cli, backend.name, case, tmp_path / "b")
    assert [s for s, _ in ckpt.list_steps(b / "checkpoints")] == [5]
    r = airlab_cli("train", "--resume", b)
    assert r.code == 0, r.err
    assert f"resuming {b} from step-5" in r.out
    assert r.out_lines[-1] == f"run directory: {b}"
    sa, sb = summary(a), summary(b)
    assert sb["weights_sha256"] == sa["weights_sha256"]
    for key in ("steps", "samples_seen", "final", "best", "params", "status"):
        assert sb[key] == sa[key], key
    assert comparable(metrics(b)) == comparable(metrics(a))
    assert [s for s, _ in ckpt.list_steps(b / "checkpoints")] == [5, 10]
    for name in backend.resumed_files:  # the final checkpoints are byte for byte the same
        assert (ckpt.sha256_file(b / "checkpoints" / "step-10" / name)
                == ckpt.sha256_file(a / "checkpoints" / "step-10" / name)), name


@pytest.mark.parametrize("part", ["rng", "optimizer"])
def test_leaving_a_part_out_of_the_resume_changes_the_result(backend, part, completed, airlab_cli, tmp_path,
                                                            monkeypatch):
    """Negative controls: the generator state (dropout masks) and the optimizer state matter."""
    a = completed(backend.name, "mlp")
    b = interrupted_copy(airlab_cli, backend.name, "mlp", tmp_path / "b")
    rng_part = next(p for p in backend.row.rng_parts if p.endswith("_rng"))
    monkeypatch.setenv("AIRLAB_RESUME_SKIP", rng_part if part == "rng" else part)
    assert airlab_cli("train", "--resume", b).code == 0
    assert summary(b)["weights_sha256"] != summary(a)["weights_sha256"]


def test_resume_with_the_same_config_is_accepted(loop_backend, completed, airlab_cli, tmp_path):
    config, overrides = CASES["mlp"]
    b = interrupted_copy(airlab_cli, loop_backend, "mlp", tmp_path / "b")
    r = airlab_cli("train", config, *overrides, *RESUMABLE, "--resume", b)
    assert r.code == 0, r.err
    assert summary(b)["weights_sha256"] == summary(completed(loop_backend, "mlp"))["weights_sha256"]


def test_resume_with_a_changed_config_is_refused_naming_the_keys(loop_backend, airlab_cli, tmp_path):
    config, overrides = CASES["mlp"]
    b = interrupted_copy(airlab_cli, loop_backend, "mlp", tmp_path / "b")
    before = (b / "metrics.jsonl").read_text()
    r = airlab_cli("train", config, *overrides, *RESUMABLE, "train.lr=0.01", "model.dropout=0.1", "--resume", b)
    assert r.code == 2
    assert r.err_lines[0].endswith("the config differs from the run's in model.dropout, train.lr")
    assert "--allow-config-change" in r.err_lines[1]
    assert (b / "metrics.jsonl").read_text() == before  # nothing touched
    assert [s for s, _ in ckpt.list_steps(b / "checkpoints")] == [5]


def test_resume_with_allow_config_change_proceeds(loop_backend, airlab_cli, tmp_path):
    config, overrides = CASES["mlp"]
    b = interrupted_copy(airlab_cli, loop_backend, "mlp", tmp_path / "b")
    r = airlab_cli("train", config, *overrides, *RESUMABLE, "train.steps=12", "--resume", b,
                   "--allow-config-change")
    assert r.code == 0, r.err
    assert summary(b)["steps"] == 12
    assert [s for s, _ in ckpt.list_steps(b / "checkpoints")] == [5, 10, 12]
    # the run's config.yaml describes what ran last; the one before the change is kept beside it
    assert load_config(b / "config.yaml").train.steps == 12
    assert load_config(b / "config.before-step-5.yaml").train.steps != 12


def test_resume_with_overrides_and_no_config(loop_backend, airlab_cli, tmp_path):
    b = interrupted_copy(airlab_cli, loop_backend, "mlp", tmp_path / "b")
    r = airlab_cli("train", "--resume", b, "train.steps=12", "--allow-config-change")
    assert r.code == 0, r.err
    assert summary(b)["steps"] == 12


def test_resume_without_a_complete_checkpoint(loop_backend, airlab_cli, tmp_path):
    b = interrupted_copy(airlab_cli, loop_backend, "mlp", tmp_path / "b")
    (b / "checkpoints" / "step-5" / "manifest.json").unlink()  # a save that died before committing
    with pytest.warns(UserWarning, match="no manifest"):
        r = airlab_cli("train", "--resume", b)
    assert r.code == 2
    assert r.err_lines[0].startswith("warning: skipping checkpoint") and r.err_lines[0].endswith("step-5: no manifest "
                                                                                              "(incomplete save)")
    assert r.err_lines[1] == f"error: {b}: no complete checkpoint to resume from"
    assert r.err_lines[-1].startswith("hint:")
    shutil.rmtree(b / "checkpoints")
    r = airlab_cli("train", "--resume", b)
    assert r.code == 2 and "no complete checkpoint" in r.err_lines[0]


def test_resume_skips_a_damaged_newest_checkpoint(loop_backend, completed, airlab_cli, tmp_path):
    b = interrupted_copy(airlab_cli, loop_backend, "mlp", tmp_path / "b", keep_through=10)
    weights = b / "checkpoints" / "step-10" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step-10"):
        r = airlab_cli("train", "--resume", b)
    assert r.code == 0, r.err
    assert "from step-5" in r.out
    assert summary(b)["weights_sha256"] == summary(completed(loop_backend, "mlp"))["weights_sha256"]


def test_resume_of_a_directory_that_is_not_a_run(airlab_cli, tmp_path):
    r = airlab_cli("train", "--resume", tmp_path)
    assert r.code == 2
    assert "not a run directory" in r.err_lines[0]


def test_resume_keeps_early_stopping_state(loop_backend, airlab_cli, tmp_path):
    config, overrides = CASES["mlp"]
    es = [*overrides, *NUMERICS, "train.steps=20", "train.eval_every=1", "train.checkpoint_every=1",
          "train.keep_checkpoints=50", "train.log_every=1", "train.early_stopping.patience=3",
          "train.early_stopping.min_delta=10.0"]
    train(airlab_cli, config, es, tmp_path / "a", backend=loop_backend)
    sa = summary(tmp_path / "a")
    assert sa["status"] == "early_stopped" and sa["steps"] == 4  # the guard of the test itself
    train(airlab_cli, config, es, tmp_path / "b", backend=loop_backend)
    for step, path in ckpt.list_steps(tmp_path / "b" / "checkpoints"):
        if step > 2:
            shutil.rmtree(path)
    assert airlab_cli("train", "--resume", tmp_path / "b").code == 0
    assert summary(tmp_path / "b")["steps"] == sa["steps"]


# --- samples -----------------------------------------------------------------------------------


def png(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.verify()
    img = Image.open(path)
    assert img.format == "PNG"
    return img


def test_vae_run_writes_an_image_and_sample_writes_another(backend, completed, airlab_cli):
    run_dir = completed(backend.name, "vae")
    s = summary(run_dir)
    (first,) = s["samples"]
    assert first == str(run_dir / "samples" / "step-10-generated.png")
    assert png(Path(first)).size == ((4 * 30 + 2) * 3,) * 2  # 16 tiles of 28 px, padded, scaled 3x
    r = airlab_cli("sample", run_dir, "--n", "4", "--seed", "1")
    assert r.code == 0, r.err
    new = run_dir / "samples" / "step-10-seed1-generated.png"
    assert r.out_lines == [f"wrote {new}"]
    assert png(new).size == ((2 * 30 + 2) * 3,) * 2
    again = airlab_cli("sample", run_dir, "--n", "4", "--seed", "2")
    assert again.code == 0
    other = run_dir / "samples" / "step-10-seed2-generated.png"
    assert other.read_bytes() != new.read_bytes()
    before = new.read_bytes()
    assert airlab_cli("sample", run_dir, "--n", "4", "--seed", "1").code == 0
    assert new.read_bytes() == before  # a seed gives the same samples


def test_autoencoder_run_writes_reconstructions(backend, airlab_cli, tmp_path):
    run_dir = tmp_path / "ae"
    config, overrides = tiny("autoencoder")
    train(airlab_cli, config, [*overrides, "train.steps=3", *NUMERICS], run_dir, backend=backend.name)
    (first,) = summary(run_dir)["samples"]
    assert first.endswith("-reconstructions.png")
    png(Path(first))
    r = airlab_cli("sample", run_dir, "--n", "4", "--seed", "1")
    assert r.code == 0, r.err
    (line,) = r.out_lines
    path = Path(line.removeprefix("wrote "))
    assert path.name == "step-3-seed1-reconstructions.png" and path.parent == run_dir / "samples"
    assert png(path).size == ((4 * 30 + 2) * 3, (2 * 30 + 2) * 3)  # 4 inputs, each beside its reconstruction


def test_transformer_run_writes_text(backend, completed, airlab_cli):
    run_dir = completed(backend.name, "transformer")
    (first,) = summary(run_dir)["samples"]
    text = Path(first).read_text()
    assert first.endswith("step-10-text.txt")
    assert text.startswith("--- sample 1 (temperature 0.8) ---\n") and "--- sample 2" in text
    assert len(text) > 400
    r = airlab_cli("sample", run_dir, "--n", "3", "--seed", "5")
    assert r.code == 0, r.err
    path = run_dir / "samples" / "step-10-seed5-text.txt"
    assert r.out_lines == [f"wrote {path}"]
    text = path.read_text()
    assert "--- sample 3" in text and "--- sample 4" not in text


def test_sample_of_a_classifier_run_writes_its_predictions_by_class_name(backend, completed, airlab_cli):
    run_dir = completed(backend.name, "mlp")
    r = airlab_cli("sample", run_dir, "--n", "5", "--seed", "3")
    assert r.code == 0, r.err
    text = run_dir / "samples" / "step-10-seed3-predictions.txt"
    lines = text.read_text(encoding="utf-8").splitlines()
    names = set(json.loads((run_dir / "data.json").read_text())["class_names"])
    rows = [line.split("\t") for line in lines[2:]]
    assert len(rows) == 5 and all(p in names and t in names for _, p, t in rows), lines
    right = sum(p == t for _, p, t in rows)
    assert lines[0].endswith(f": {right} right")
    Image.open(run_dir / "samples" / "step-10-seed3-predictions.png").verify()


def test_sample_without_a_checkpoint(backend, completed, airlab_cli, tmp_path):
    run_dir = tmp_path / "vae"
    shutil.copytree(completed(backend.name, "vae"), run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    r = airlab_cli("sample", run_dir, "--n", "2")
    assert r.code == 2 and "no complete checkpoint" in r.err_lines[0]


@pytest.mark.parametrize("case", ["mlp", "vae", "transformer"])
def test_weights_sha256_matches_the_checkpoint(backend, case, completed):
    s = summary(completed(backend.name, case))
    assert digest_of_checkpoint(Path(s["checkpoint"])) == s["weights_sha256"]


# --- divergence --------------------------------------------------------------------------------


def test_an_absurd_learning_rate_exits_3_naming_the_step(loop_backend, airlab_cli, tmp_path):
    config, overrides = CASES["mlp"]
    run_dir = tmp_path / "run"
    r = airlab_cli("train", config, *overrides, *NUMERICS, "train.steps=10", "train.optimizer=sgd",
                   "train.lr=1e30", "--backend", loop_backend, "--run-dir", run_dir)
    assert r.code == 3, r.err
    assert re.search(r"step \d+", r.err_lines[0]) and ("diverged" in r.err_lines[0] or "non-finite" in r.err_lines[0])
    assert "train.lr" in r.err_lines[1]
    # nothing non-finite was checkpointed
    for _, path in ckpt.list_steps(run_dir / "checkpoints"):
        w = safetensors.numpy.load_file(str(path / "model.safetensors"))
        assert all(bool((abs(a) < float("inf")).all()) for a in w.values())
    assert not (run_dir / "summary.json").exists()


def test_a_non_finite_training_loss_exits_3_naming_the_step(loop_backend, airlab_cli, tmp_path, monkeypatch):
    implementation = table.load(table.get(loop_backend).implementation)
    real = implementation.pop_train_metrics

    def poisoned(self):
        out = real(self)
        return {k: float("nan") for k in out}

    monkeypatch.setattr(implementation, "pop_train_metrics", poisoned)
    config, overrides = CASES["mlp"]
    run_dir = tmp_path / "run"
    r = airlab_cli("train", config, *overrides, *NUMERICS, "train.steps=10", "train.log_every=3",
                   "train.checkpoint_every=1", "--backend", loop_backend, "--run-dir", run_dir)
    assert r.code == 3
    assert r.err_lines[0] == "error: training diverged by step 3: train loss=nan"
    assert str(run_dir / "checkpoints" / "step-2") in r.err_lines[1]  # the last good checkpoint
    assert not any('"train"' in line for line in (run_dir / "metrics.jsonl").read_text().splitlines())
