"""`airlab convert`: a trained run carried across backends is a run directory that evaluates to the
same metrics, samples, resumes from its weights, and converts back to the very same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from airlab.config import load_config  # noqa: E402
from airlab.train import checkpoint as ckpt  # noqa: E402
from conftest import CONFIGS, PYCORPUS_TINY, SHAPES_TINY  # noqa: E402

RUN = ["device=cpu", "train.epochs=null", "train.steps=6", "train.log_every=3", "train.checkpoint_every=3"]
CASES = {
    "mlp": (CONFIGS / "mlp.yaml", [*SHAPES_TINY, "model.hidden=[16]", "model.dropout=0.5"]),
    "vae": (CONFIGS / "vae.yaml", [*SHAPES_TINY, "model.hidden=[16]", "model.latent_dim=4"]),
    "transformer": (CONFIGS / "transformer.yaml",
                    [*PYCORPUS_TINY, "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.context_length=16",
                     "train.warmup_steps=2", "train.eval_every=3"]),
    "cnn-batchnorm": (CONFIGS / "cnn.yaml", [*SHAPES_TINY, "model.channels=[4,8]", "model.dense=[16]",
                                             "model.batchnorm=true", "model.padding=same"]),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def trained(airlab_cli, case: str, backend: str, run_dir: Path) -> Path:
    config, overrides = CASES[case]
    r = airlab_cli("train", config, *overrides, *RUN, "--backend", backend, "--run-dir", run_dir)
    assert r.code == 0, r.err
    return run_dir


def close(a: dict, b: dict, rtol: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rtol * max(abs(a[k]), 1e-12) for k in a)


@pytest.mark.parametrize("case,source,target", [
    ("mlp", "torch", "tensorflow"), ("mlp", "tensorflow", "torch"),
    ("transformer", "torch", "tensorflow"),  # the tied head: stored by torch as lm_head.weight
    ("cnn-batchnorm", "torch", "tensorflow"),  # running statistics; num_batches_tracked stays behind
])
def test_converted_run_evaluates_the_same_and_converts_back(case, source, target, airlab_cli, tmp_path):
    src = trained(airlab_cli, case, source, tmp_path / "src")
    out = tmp_path / "converted"
    r = airlab_cli("convert", src, "--to", target, "--out", out)
    assert r.code == 0, r.err
    assert r.out_lines[-1] == f"run directory: {out}"
    assert r.out_lines[0].startswith(f"converted {source} -> {target}: ")
    s, s_src = summary(out), summary(src)
    assert (s["backend"], s["status"], s["steps"], s["params"]) == (target, "converted", 6, s_src["params"])
    assert close(s_src["final"]["val"], s["final"]["val"], 1e-4), (s_src["final"]["val"], s["final"]["val"])
    assert s["converted_from"]["weights_sha256"] == s_src["weights_sha256"]
    assert load_config(out / "config.yaml").backend == target
    assert (out / "metrics.jsonl").read_text() == (src / "metrics.jsonl").read_text()
    (step,) = ckpt.list_steps(out / "checkpoints")
    assert step[0] == 6 and ckpt.verify(step[1]) is None

    back = tmp_path / "back"
    assert airlab_cli("convert", out, "--to", source, "--out", back).code == 0
    if "batchnorm" in case and source == "torch":  # torch's num_batches_tracked does not travel
        assert summary(back)["weights_sha256"] != s_src["weights_sha256"]
        assert close(summary(back)["final"]["val"], s_src["final"]["val"], 1e-6)
    else:
        assert summary(back)["weights_sha256"] == s_src["weights_sha256"]  # bitwise the same weights


def test_a_converted_run_samples_and_resumes_from_its_weights(airlab_cli, tmp_path):
    src = trained(airlab_cli, "vae", "torch", tmp_path / "src")
    out = tmp_path / "tf"
    assert airlab_cli("convert", src, "--to", "tensorflow", "--out", out).code == 0
    r = airlab_cli("sample", out, "--n", "4", "--seed", "1")
    assert r.code == 0, r.err
    assert (out / "samples" / "step-6-seed1-generated.png").is_file()
    r = airlab_cli("train", "--resume", out, "train.steps=9", "--allow-config-change")
    assert r.code == 0, r.err
    assert "resuming" in r.out and "from step-6" in r.out
    s = summary(out)
    assert (s["status"], s["steps"], s["backend"]) == ("completed", 9, "tensorflow")
    assert [n for n, _ in ckpt.list_steps(out / "checkpoints")] == [6, 9]


def test_default_output_directory_and_refusals(airlab_cli, tmp_path):
    src = trained(airlab_cli, "mlp", "torch", tmp_path / "run")
    r = airlab_cli("convert", src, "--to", "tensorflow")
    assert r.code == 0, r.err
    assert r.out_lines[-1] == f"run directory: {tmp_path / 'run-tensorflow'}"
    again = airlab_cli("convert", src, "--to", "tensorflow")
    assert again.code == 2 and "already exists" in again.err_lines[0]
    same = airlab_cli("convert", src, "--to", "torch")
    assert same.code == 2 and "already a torch run" in same.err_lines[0]
    bad = airlab_cli("convert", src, "--to", "jax")
    assert bad.code == 2
    assert airlab_cli("convert", tmp_path / "nowhere", "--to", "tensorflow").code == 2


def test_weights_of_another_model_are_refused(airlab_cli, tmp_path):
    import yaml

    src = trained(airlab_cli, "mlp", "torch", tmp_path / "run")
    config = src / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["model"]["hidden"] = [17]  # the config no longer fits the weights
    config.write_text(yaml.safe_dump(data))
    r = airlab_cli("convert", src, "--to", "tensorflow", "--out", tmp_path / "out")
    assert r.code == 2
    assert "cannot convert the torch weights" in r.err_lines[0] and "does not fit" in r.err_lines[0]
    assert not (tmp_path / "out").exists()


def test_the_converter_and_its_command_import_no_framework(airlab_proc):
    code = ("import sys, json, contextlib, io\n"
            "import airlab.interop.convert, airlab.interop.weights, airlab.cli.convert\n"
            "from airlab.cli.main import run\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    code = run(['convert', '--help'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))\n"
            "print(json.dumps([code, heavy]))\n")
    r = airlab_proc(code=code)
    assert r.code == 0, r.err
    assert json.loads(r.out.strip().splitlines()[-1]) == [0, []]
