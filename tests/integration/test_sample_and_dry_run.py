"""`airlab sample`: each sample has a stream of its own (two seeds share no sample), LM options
(--prompt, --length, --temperature, --top-k), non-finite weights refused. `airlab train --dry-run`
builds the model from the dataset's shapes when its files are not here, and never downloads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import safetensors  # noqa: E402
import safetensors.numpy  # noqa: E402
from PIL import Image  # noqa: E402

from airlab.config import load_config  # noqa: E402
from airlab.data import load_dataset  # noqa: E402
from airlab.data.catalog import availability, known_info  # noqa: E402
from airlab.data.idx import write_idx  # noqa: E402
from airlab.specs.base import DataInfo  # noqa: E402
from airlab.train import checkpoint as ckpt  # noqa: E402
from airlab.train.samples import sample_seed  # noqa: E402
from conftest import CONFIGS, PYCORPUS_TINY, SHAPES_TINY  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ["train.steps=4", "train.checkpoint_every=4", "train.log_every=4", "device=cpu"]
LM = (CONFIGS / "transformer.yaml",
      [*PYCORPUS_TINY, "model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.context_length=16",
       "train.warmup_steps=0", "train.eval_every=4", *TINY])
VAE = (CONFIGS / "vae.yaml", [*SHAPES_TINY, "model.hidden=[16]", "model.latent_dim=4", "train.epochs=null", *TINY])
HEADER = re.compile(r"^--- sample (\d+) \(([^)]*)\) ---$")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, airlab_cli):
    """Tiny trained runs, made on first use: "lm" and "vae"."""
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in made:
            config, overrides = {"lm": LM, "vae": VAE}[case]
            run_dir = tmp_path_factory.mktemp(case) / "run"
            r = airlab_cli("train", config, *overrides, "--run-dir", run_dir)
            assert r.code == 0, r.err
            made[case] = run_dir
        return made[case]

    return get


def sample(airlab_cli, run_dir: Path, *args) -> Path:
    r = airlab_cli("sample", run_dir, *args)
    assert r.code == 0, r.err
    (line,) = r.out_lines
    return Path(line.removeprefix("wrote "))


def text_samples(path: Path) -> list[tuple[str, str]]:
    """(header label, body) of each sample in a text file written by `sample`."""
    out: list[tuple[str, str]] = []
    for chunk in path.read_text(encoding="utf-8").removesuffix("\n").split("\n\n--- sample "):
        chunk = chunk if chunk.startswith("--- sample ") else "--- sample " + chunk
        header, _, body = chunk.partition("\n")
        m = HEADER.match(header)
        assert m and int(m.group(1)) == len(out) + 1, header
        out.append((m.group(2), body))
    return out


def tiles(path: Path, tile: int = 28, pad: int = 2, scale: int = 3) -> list[bytes]:
    """The tiles of an image grid written by `sample`, as bytes (the grid is scaled by 3)."""
    img = np.asarray(Image.open(path).convert("L"))[::scale, ::scale]
    rows, cols = (img.shape[0] - pad) // (tile + pad), (img.shape[1] - pad) // (tile + pad)
    return [img[pad + r * (tile + pad):pad + r * (tile + pad) + tile,
                pad + c * (tile + pad):pad + c * (tile + pad) + tile].tobytes()
            for r in range(rows) for c in range(cols)]


# --- streams: a seed reproduces its samples, two seeds share none ----------------------------------


def test_sample_seeds_are_a_function_of_seed_and_index():
    seeds = {(s, i): sample_seed(s, i) for s in range(4) for i in range(4)}
    assert len(set(seeds.values())) == len(seeds)  # seed + i would give seed 1's first = seed 0's second
    assert sample_seed(0, 1) != sample_seed(1, 0)
    assert all(0 <= v < 2**63 for v in seeds.values())
    assert sample_seed(7, 3) == sample_seed(7, 3)


def test_two_seeds_share_no_text_sample_and_a_seed_reproduces(runs, airlab_cli):
    run_dir = runs("lm")
    a = sample(airlab_cli, run_dir, "--n", "4", "--seed", "0")
    a_text = a.read_text()
    b = sample(airlab_cli, run_dir, "--n", "4", "--seed", "1")
    first, second = [body for _, body in text_samples(a)], [body for _, body in text_samples(b)]
    assert len(first) == len(second) == 4
    assert not set(first) & set(second)
    assert len(set(first)) == 4
    again = sample(airlab_cli, run_dir, "--n", "4", "--seed", "0")
    assert again == a and again.read_text() == a_text


def test_two_seeds_share_no_image_tile_and_a_seed_reproduces(runs, airlab_cli):
    run_dir = runs("vae")
    a = sample(airlab_cli, run_dir, "--n", "4", "--seed", "0")
    before = a.read_bytes()
    b = sample(airlab_cli, run_dir, "--n", "4", "--seed", "1")
    ta, tb = tiles(a), tiles(b)
    assert len(ta) == len(tb) == 4
    assert not set(ta) & set(tb)
    assert sample(airlab_cli, run_dir, "--n", "4", "--seed", "0").read_bytes() == before


def test_the_end_of_run_samples_are_the_config_seeds(runs, airlab_cli):
    """The samples written at the end of training are `sample --seed <config seed>`'s."""
    run_dir = runs("lm")
    (first,) = json.loads((run_dir / "summary.json").read_text())["samples"]
    again = sample(airlab_cli, run_dir, "--n", "2", "--seed", "0")
    assert Path(first).read_text() == again.read_text()


# --- language-model options ------------------------------------------------------------------------


def test_prompt_and_length_start_and_size_every_sample(runs, airlab_cli):
    path = sample(airlab_cli, runs("lm"), "--n", "3", "--seed", "2", "--prompt", "def f(x):", "--length", "25")
    got = text_samples(path)
    assert [label for label, _ in got] == ["temperature 0.8"] * 3
    for _, body in got:
        assert body.startswith("def f(x):") and len(body) == len("def f(x):") + 25


def test_top_k_and_temperature_take_effect(runs, airlab_cli):
    run_dir = runs("lm")
    greedy = [sample(airlab_cli, run_dir, "--n", "2", "--seed", str(s), "--top-k", "1", "--length", "30")
              for s in (0, 1)]
    bodies = [[body for _, body in text_samples(p)] for p in greedy]
    assert text_samples(greedy[0])[0][0] == "temperature 0.8, top-k 1"
    assert bodies[0][0] == bodies[0][1] == bodies[1][0] == bodies[1][1]  # one token to choose from: no chance
    cold = sample(airlab_cli, run_dir, "--n", "2", "--seed", "3", "--temperature", "1e-6", "--length", "30")
    assert [label for label, _ in text_samples(cold)] == ["temperature 1e-06"] * 2
    assert [body for _, body in text_samples(cold)] == bodies[0]  # all but no temperature is the most likely
    hot = sample(airlab_cli, run_dir, "--n", "2", "--seed", "3", "--length", "30", "--temperature", "5")
    assert [body for _, body in text_samples(hot)] != bodies[0]


def test_a_prompt_character_outside_the_vocabulary_is_a_usage_error(runs, airlab_cli):
    run_dir = runs("lm")
    vocab = set(load_dataset("pycorpus", size=20000, limit=4000).vocab)
    bad = next(ch for ch in "\x07☃€ä" if ch not in vocab)
    r = airlab_cli("sample", run_dir, "--prompt", f"ab{bad}c", "--seed", "0")
    assert r.code == 2
    assert r.err_lines[0].startswith("error: --prompt: 1 character(s) not in the vocabulary of pycorpus")
    assert repr(bad) in r.err_lines[0]


@pytest.mark.parametrize("args, key", [
    (["--temperature", "0"], "--temperature"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-k", "100000"], "--top-k"),
    (["--prompt", ""], "--prompt"),
])
def test_bad_lm_option_values_are_usage_errors(runs, airlab_cli, args, key):
    r = airlab_cli("sample", runs("lm"), "--seed", "0", *args)
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith(f"error: {key}:")


@pytest.mark.parametrize("args", [["--prompt", "a"], ["--length", "5"], ["--temperature", "1"], ["--top-k", "2"]])
def test_lm_options_on_an_image_run_are_refused(runs, airlab_cli, args):
    r = airlab_cli("sample", runs("vae"), "--seed", "0", *args)
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith(f"error: {args[0]}: only for language models;")


# --- non-finite weights --------------------------------------------------------------------------


def poison(run_dir: Path) -> Path:
    """Write NaN into the newest checkpoint's weights and fix the manifest, so that only the
    finiteness check can tell."""
    found = ckpt.newest_complete(run_dir / "checkpoints")
    path = found / "model.safetensors"
    with safetensors.safe_open(str(path), "np") as f:
        metadata = f.metadata()
    weights = safetensors.numpy.load_file(str(path))
    name = sorted(weights)[0]
    weights[name] = weights[name].copy()
    weights[name].reshape(-1)[0] = np.nan
    safetensors.numpy.save_file(weights, str(path), metadata=metadata)
    manifest = json.loads((found / ckpt.MANIFEST).read_text())
    manifest["files"]["model.safetensors"] = {"sha256": ckpt.sha256_file(path), "bytes": path.stat().st_size}
    (found / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    assert ckpt.newest_complete(run_dir / "checkpoints") == found  # the manifest matches again
    return path


@pytest.mark.parametrize("case", ["vae", "lm"])
def test_non_finite_weights_are_refused(runs, airlab_cli, tmp_path, case):
    run_dir = tmp_path / "copy"
    shutil.copytree(runs(case), run_dir)
    shutil.rmtree(run_dir / "samples", ignore_errors=True)
    path = poison(run_dir)
    r = airlab_cli("sample", run_dir, "--n", "2", "--seed", "0")
    assert r.code == 2, r.err
    assert r.err_lines[0] == f"error: {path}: non-finite weights; not sampling from them"
    assert not (run_dir / "samples").exists()


# --- dry run without the data ----------------------------------------------------------------------

MNIST_LINE = ("data: mnist not loaded (files not downloaded): model built from its input shape (1, 28, 28); "
              "steps per epoch unknown")


def test_dry_run_without_the_data_builds_from_the_input_shape(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ["model.hidden=[32]", "device=cpu"]
    r = airlab_cli("train", CONFIGS / "mlp.yaml", *overrides, "--dry-run")
    assert r.code == 0, r.err
    assert MNIST_LINE in r.out_lines  # epochs, not steps: nothing more is known
    params = load_config(CONFIGS / "mlp.yaml", overrides).model.num_params(DataInfo((1, 28, 28), num_classes=10))
    assert f"parameters: {params:,} " in r.out
    assert "hidden.0" in r.out and "Linear" in r.out and re.search(r"\(B, 10\)", r.out)
    assert r.out_lines[-1] == "dry run: nothing trained"
    assert list(tmp_path.iterdir()) == []


def test_dry_run_never_downloads(airlab_cli, tmp_path, monkeypatch):
    """Online, with every download failing loudly: the dry run does not try one."""
    monkeypatch.delenv("AIRLAB_OFFLINE")
    monkeypatch.chdir(tmp_path)
    r = airlab_cli("train", CONFIGS / "mlp.yaml", "model.hidden=[8]", "device=cpu", "--dry-run")
    assert r.code == 0, r.err
    assert MNIST_LINE in r.out_lines
    assert not any(Path(p).exists() for p in availability("mnist").looked_in)


def test_dry_run_of_a_language_model_without_the_data(airlab_cli):
    r = airlab_cli("train", CONFIGS / "transformer.yaml", "model.n_layer=1", "model.n_embd=16", "model.n_head=2",
                   "device=cpu", "train.steps=300", "--dry-run")
    assert r.code == 0, r.err
    assert ("data: tinyshakespeare not loaded (files not downloaded): model built from its vocabulary size 65; "
            "steps per epoch unknown, 300 steps in all") in r.out_lines


def test_dry_run_without_data_still_checks_the_model_against_the_dataset(airlab_cli):
    r = airlab_cli("train", CONFIGS / "transformer.yaml", "data.name=mnist", "--dry-run")
    assert r.code == 2
    assert r.err_lines[0].startswith("error: model.name: transformer cannot train on data.name: mnist (image data)")


def _mnist_files(directory: Path, n_train: int = 20, n_test: int = 5) -> None:
    """Raw (uncompressed) IDX files, the structure of MNIST's, in `directory`."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def test_dry_run_with_the_files_here_loads_them(airlab_cli, tmp_path):
    _mnist_files(tmp_path / "mnist")
    r = airlab_cli("train", CONFIGS / "mlp.yaml", "model.hidden=[8]", "device=cpu", "data.batch_size=6",
                   f"data.path={tmp_path / 'mnist'}", "--dry-run")
    assert r.code == 0, r.err
    assert "data: mnist train 18 / val 2 / test 5; 3 steps per epoch, 60 steps in all" in r.out_lines
    assert "not loaded" not in r.out


def test_availability_names_the_missing_files(tmp_path):
    assert known_info("mnist") == DataInfo((1, 28, 28), num_classes=10)
    assert known_info("shapes") is None and availability("shapes").available
    assert availability("mnist").reason() == "files not downloaded"
    _mnist_files(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    here = availability("mnist", str(tmp_path))
    assert not here.available
    assert here.reason() == "1 of 4 files not downloaded: t10k-labels-idx1-ubyte.gz"
    assert str(tmp_path) in here.looked_in
    assert availability("mnist", str(tmp_path / "nope")).reason() == f"data.path {tmp_path / 'nope'} does not exist"


def test_dry_run_without_the_data_on_tensorflow(airlab_cli):
    pytest.importorskip("tensorflow")
    r = airlab_cli("train", CONFIGS / "mlp.yaml", "model.hidden=[8]", "device=cpu", "--backend", "tensorflow",
                   "train.steps=7", "train.epochs=null", "--dry-run")
    assert r.code == 0, r.err
    assert f"{MNIST_LINE}, 7 steps in all" in r.out_lines
    params = load_config(CONFIGS / "mlp.yaml", ["model.hidden=[8]"]).model.num_params(DataInfo((1, 28, 28), 10))
    assert f"parameters: {params:,} " in r.out and "Dense" in r.out
