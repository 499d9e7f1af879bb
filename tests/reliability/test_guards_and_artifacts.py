"""Non-finite guards, unsafe artifacts refused, and configs that never crash the loader."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CONFIGS, REPO, SHAPES_TINY, shipped_configs
from airlab.config import load_config, to_yaml
from airlab.errors import ConfigError
from airlab.train import checkpoint as ckpt

MLP = [str(CONFIGS / "mlp.yaml"), *SHAPES_TINY, "model.hidden=[16]", "device=cpu", "train.epochs=null",
       "train.steps=12", "train.checkpoint_every=4", "train.log_every=4", "train.keep_checkpoints=10"]


def all_checkpoint_weights_finite(run_dir: Path) -> bool:
    for _, path in ckpt.list_steps(run_dir / "checkpoints"):
        for arr in safetensors.numpy.load_file(str(path / "model.safetensors")).values():
            if not np.isfinite(arr).all():
                return False
    return True


@pytest.mark.parametrize("fault, what, extra", [
    ("nan_at_step:6", "loss=nan", []),
    ("inf_grad_at_step:6", "grad_norm=inf", []),
    ("inf_grad_at_step:6", "grad_norm=inf", ["train.grad_clip=1.0"]),  # the norm clipping computed
])
def test_a_non_finite_step_is_refused_and_exits_3(fault, what, extra, airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_FAULT", fault)
    run_dir = tmp_path / "run"
    r = airlab_cli("train", *MLP, *extra, "--run-dir", run_dir)
    assert r.code == 3, r.err
    assert r.err_lines[0].startswith("error: training diverged at step 6: ") and what in r.err_lines[0]
    assert "the step was not taken" in r.err_lines[0]
    assert f"last good checkpoint: {run_dir / 'checkpoints' / 'step-4'}" in r.err_lines[1]
    assert [s for s, _ in ckpt.list_steps(run_dir / "checkpoints")] == [4]
    assert all_checkpoint_weights_finite(run_dir)


def test_skip_mode_skips_within_its_budget(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_FAULT", "nan_at_step:6,inf_grad_at_step:9")
    run_dir = tmp_path / "run"
    r = airlab_cli("train", *MLP, "train.on_nonfinite=skip", "train.max_skipped_steps=2", "--run-dir", run_dir)
    assert r.code == 0, r.err
    assert "skipped step 6: loss=nan" in r.out and "skipped step 9:" in r.out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["skipped_steps"] == 2 and summary["steps"] == 12
    assert all_checkpoint_weights_finite(run_dir)


def test_skip_mode_stops_when_the_budget_is_spent(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_FAULT", "nan_at_step:6,inf_grad_at_step:9")
    r = airlab_cli("train", *MLP, "train.on_nonfinite=skip", "train.max_skipped_steps=1",
                   "--run-dir", tmp_path / "run")
    assert r.code == 3
    assert "training diverged at step 9" in r.err_lines[0] and "the whole budget" in r.err_lines[0]


def test_a_malformed_fault_spec_is_a_usage_error(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_FAULT", "kill_at:3")
    r = airlab_cli("train", *MLP, "--run-dir", tmp_path / "run")
    assert r.code == 2 and "AIRLAB_FAULT: cannot read 'kill_at:3'" in r.err_lines[0]


class _Payload:
    """Unpickling this runs a command that creates a sentinel file."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.sentinel}",))


def test_a_pickle_payload_in_a_checkpoint_is_refused_and_never_runs(airlab_cli, tmp_path):
    run_dir = tmp_path / "run"
    assert airlab_cli("train", *MLP, "--run-dir", run_dir).code == 0
    newest = ckpt.list_steps(run_dir / "checkpoints")[-1][1]
    sentinel = tmp_path / "pwned"
    # the attacker also rewrites the manifest, so the file passes the SHA-256 check
    (newest / "optimizer.pt").write_bytes(pickle.dumps({"state": _Payload(sentinel)}))
    manifest = json.loads((newest / ckpt.MANIFEST).read_text())
    manifest["files"]["optimizer.pt"] = {"sha256": ckpt.sha256_file(newest / "optimizer.pt"),
                                         "bytes": (newest / "optimizer.pt").stat().st_size}
    (newest / ckpt.MANIFEST).write_text(json.dumps(manifest))
    r = airlab_cli("train", "--resume", run_dir, "train.steps=16", "--allow-config-change")
    assert r.code == 2, r.err
    assert "refused to load optimizer state" in r.err_lines[0] and "nothing in it was run" in r.err_lines[0]
    assert not sentinel.exists()


def test_no_unsafe_deserialization_in_the_package():
    forbidden = {
        "pickle module": re.compile(r"^\s*(import pickle|from pickle import|import cloudpickle|import dill)", re.M),
        "pickle.load": re.compile(r"\bpickle\.loads?\("),
        "Keras load_model": re.compile(r"\b(keras\.models|keras\.saving|models)\.load_model\("),
        "SavedModel loading": re.compile(r"saved_model\.load\("),
        "unsafe Keras deserialization": re.compile(r"enable_unsafe_deserialization"),
        "Lambda layers": re.compile(r"\bLambda\("),
        "numpy allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
        "yaml.load without SafeLoader": re.compile(r"\byaml\.(load|full_load|unsafe_load)\("),
        "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
    }
    found = []
    for path in sorted((REPO / "airlab").rglob("*.py")):
        text = path.read_text()
        for what, pattern in forbidden.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert found == []


# -- configs: fuzzed text never crashes the loader ------------------------------------------------

def _load_text(tmp_path: Path, text: str):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        return load_config(path)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_raises_config_error(tmp_path, text):
    _load_text(tmp_path, text)


_SEEDS = [p.read_text() for p in shipped_configs()]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 5),
                                                  st.sampled_from(list(":-[]{}!&*|>'\"#%@ \n\t0aZ.,?"))),
                                        min_size=1, max_size=6))
def test_mutated_shipped_configs_load_or_raise_config_error(tmp_path, seed, edits):
    text = seed
    for pos, cut, ch in edits:
        pos %= max(1, len(text))
        text = text[:pos] + ch + text[pos + cut:]
    _load_text(tmp_path, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=st.sampled_from(shipped_configs()),
       lr=st.floats(1e-6, 1.0, allow_nan=False), batch=st.integers(1, 4096), seed=st.integers(0, 2**32 - 1),
       epochs=st.integers(1, 50), clip=st.none() | st.floats(0.01, 10.0))
def test_valid_configs_round_trip_through_dump_and_load(tmp_path, config, lr, batch, seed, epochs, clip):
    overrides = [f"train.lr={lr!r}", f"data.batch_size={batch}", f"seed={seed}", f"train.grad_clip={clip!r}"
                 if clip is not None else "train.grad_clip=null"]
    cfg = load_config(config, overrides)
    path = tmp_path / "dumped.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_the_cli_never_shows_a_traceback_for_a_fuzzed_config(airlab_cli, tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    r = airlab_cli("validate", path)
    assert r.code in (0, 2), r.err
    assert "Traceback" not in r.err and "error: unexpected " not in r.err  # YAML itself may say "unexpected end of stream"


# -- out of memory: automatic micro-batch back-off -------------------------------------------------

OOM_RUN = [str(CONFIGS / "mlp.yaml"), *SHAPES_TINY, "model.hidden=[16]", "model.dropout=0.5", "device=cpu",
           "train.epochs=null", "train.steps=12", "data.batch_size=32", "train.checkpoint_every=4"]


def test_oom_backs_off_and_matches_a_run_started_at_the_final_size(airlab_cli, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    assert airlab_cli("train", *OOM_RUN, "train.grad_accum=4", "--run-dir", plain).code == 0
    monkeypatch.setenv("AIRLAB_FAULT", "oom_at_batch:10")
    run_dir = tmp_path / "run"
    r = airlab_cli("train", *OOM_RUN, "train.auto_batch_size=true", "--run-dir", run_dir)
    assert r.code == 0, r.err
    assert "retrying with micro-batch 16 x 2" in r.out and "retrying with micro-batch 8 x 4" in r.out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["micro_batches_tried"] == [32, 16, 8] and summary["grad_accum"] == 4
    assert summary["steps"] == 12
    assert summary["weights_sha256"] == json.loads((plain / "summary.json").read_text())["weights_sha256"]
    # a resume keeps the micro-batch it had found
    monkeypatch.delenv("AIRLAB_FAULT")
    assert airlab_cli("train", "--resume", run_dir, "train.steps=16", "--allow-config-change").code == 0
    assert json.loads((run_dir / "summary.json").read_text())["grad_accum"] == 4


def test_oom_without_auto_batch_size_names_the_batch(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_FAULT", "oom_at_batch:10")
    r = airlab_cli("train", *OOM_RUN, "--run-dir", tmp_path / "run")
    assert r.code == 4
    assert r.err_lines[0] == "error: out of memory at step 1 with micro-batch 32 (batch 32; tried 32)"
    assert "train.auto_batch_size: true" in r.err_lines[1]


def test_oom_gives_up_after_the_allowed_halvings(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_FAULT", "oom_at_batch:3")
    r = airlab_cli("train", *OOM_RUN, "train.auto_batch_size=true", "train.max_batch_halvings=2",
                   "--run-dir", tmp_path / "run")
    assert r.code == 4
    assert "(batch 32; tried 32, 16, 8)" in r.err_lines[0]
