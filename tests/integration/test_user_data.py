"""The user's own data, end to end through `airlab train` (issue 12): every model trains on each
kind of data it reads, on both backends (each model once per backend, the image kinds shared out
between them); the fast path and the streaming path end at the same weights; a run killed with
SIGKILL on the streaming path resumes bitwise; bad data is exit 2 with one line naming the file;
a model given a kind of data it does not read is exit 2 naming the kinds it reads; a text run
samples without its data; val_fraction 0 trains on every example and says so.

Fixtures are generated here: PNG folders, a .npz, a text file, a CSV (a few KB each).
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapters import needs
from conftest import CONFIGS, spawn
from numerics import NUMERICS
from smoke import model_overrides

SHORT = [*NUMERICS, "train.epochs=null", "train.steps=3", "train.log_every=3", "data.batch_size=8"]
CLASSES = ("circle", "square", "triangle")


def _image(cls: int, i: int, size: int = 12, mode: str = "L") -> Image.Image:
    rng = np.random.default_rng(cls * 100 + i)
    x = np.clip(cls * 80 + rng.integers(0, 40, size=(size, size)), 0, 255).astype(np.uint8)
    img = Image.fromarray(x, "L")
    return img.convert(mode) if mode != "L" else img


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """DIR/<class>/*.png: 3 classes x 10 grayscale 12x12 images."""
    root = tmp_path_factory.mktemp("folder")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(10):
            _image(c, i).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """x_train NHWC uint8 (30, 12, 12, 1), y_train, and a given val split."""
    path = tmp_path_factory.mktemp("npz") / "arrays.npz"
    x = np.stack([np.asarray(_image(i % 3, i)) for i in range(30)])[..., None]
    y = np.arange(30) % 3
    np.savez(path, x_train=x[:24], y_train=y[:24], x_val=x[24:], y_val=y[24:],
             class_names=np.array(CLASSES))
    return path


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the", "model", "learns", "from", "data", "é", "naïve", "résumé", "of", "text"]
    path.write_text(" ".join(words[i] for i in rng.integers(0, len(words), size=1500)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "rows.csv"
    rng = np.random.default_rng(0)
    lines = ["height,colour,weight,label"]
    for i in range(60):
        label = ["small", "large"][i % 2]
        lines.append(f"{rng.normal(1 + i % 2, 0.3):.3f},{['red', 'blue', 'green'][i % 3]},"
                     f"{rng.normal(50, 10):.2f},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(model: str) -> Path:
    return CONFIGS / f"{model}.yaml"


def data_for(kind: str, paths: dict) -> list[str]:
    if kind == "folder":
        return ["data.name=folder", f"data.path={paths['folder']}"]
    if kind == "npz":
        return ["data.name=npz", f"data.path={paths['npz']}"]
    if kind in ("text", "bpe"):
        extra = ["data.tokenizer=bpe", "data.vocab_size=300"] if kind == "bpe" else []
        return ["data.name=text", f"data.path={paths['text']}", *extra, "train.warmup_steps=1", "train.eval_every=3",
                "model.context_length=16"]
    return ["data.name=csv", f"data.path={paths['table']}"]


@pytest.fixture(scope="module")
def paths(folder, npz, text, table) -> dict:
    return {"folder": folder, "npz": npz, "text": text, "table": table}


# each model once per backend on the user's images; text (characters and BPE) and tables on both
CASES = [
    ("torch", "cnn", "folder"), ("torch", "rnn", "folder"), ("torch", "vae", "folder"),
    ("torch", "mlp", "npz"), ("torch", "autoencoder", "npz"),
    ("tensorflow", "mlp", "folder"), ("tensorflow", "autoencoder", "folder"),
    ("tensorflow", "cnn", "npz"), ("tensorflow", "rnn", "npz"), ("tensorflow", "vae", "npz"),
    ("torch", "transformer", "text"), ("tensorflow", "transformer", "bpe"), ("torch", "transformer", "bpe"),
    ("torch", "mlp", "csv"), ("tensorflow", "mlp", "csv"),
]


@pytest.mark.parametrize("backend, model, kind", [pytest.param(*c, marks=needs(c[0]), id="-".join(c)) for c in CASES])
def test_every_model_trains_on_the_kinds_it_reads(backend, model, kind, paths, airlab_cli, tmp_path):
    run = tmp_path / "run"
    r = airlab_cli("train", config(model), *data_for(kind, paths), *model_overrides(model), *SHORT,
                   f"backend={backend}", "--run-dir", run)
    assert r.code == 0, r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["data"]["kind"] == {"folder": "image", "npz": "image", "text": "text",
                                                                  "bpe": "text", "csv": "table"}[kind]
    facts = json.loads((run / "data.json").read_text())
    if kind in ("folder", "npz"):
        assert facts["class_names"] == list(CLASSES)
    if kind == "bpe":
        assert facts["tokenizer"]["kind"] == "bpe" and (run / "tokenizer.json").is_file()
        # the loss is per token; bpc is per character of the validation text, as a character model's
        assert "per BPE token" in summary["loss_units"]
        val = summary["final"]["val"]
        assert val["bpc"] < val["loss"] / math.log(2)  # a BPE token spans more than one character
    if kind == "text":
        assert "é" in facts["vocab"]


@needs("torch")
def test_the_fast_path_and_the_streaming_path_end_at_the_same_weights(paths, airlab_cli, tmp_path):
    base = [*data_for("folder", paths), *model_overrides("cnn"), *SHORT, "backend=torch", "train.steps=4",
            "data.augment={random_crop: 2, horizontal_flip: true}", "data.normalize=true", "train.grad_accum=2"]
    digests = {}
    for placement in ("device", "stream"):
        run = tmp_path / placement
        r = airlab_cli("train", config("cnn"), *base, f"data.placement={placement}", "--run-dir", run)
        assert r.code == 0, r.err
        summary = json.loads((run / "summary.json").read_text())
        assert summary["data"]["placement"] == placement
        assert ("streaming" if placement == "stream" else "fast path") in r.out + r.err
        digests[placement] = summary["weights_sha256"]
    assert digests["device"] == digests["stream"]


@needs("torch")
def test_a_run_killed_on_the_streaming_path_resumes_bitwise(paths, airlab_cli, tmp_path):
    base = [*data_for("folder", paths), *model_overrides("cnn"), *NUMERICS, "train.epochs=null", "train.steps=8",
            "train.checkpoint_every=4", "train.log_every=4", "data.batch_size=8", "backend=torch",
            "data.placement=stream", "data.augment={random_crop: 2, horizontal_flip: true}"]
    whole = tmp_path / "whole"
    r = airlab_cli("train", config("cnn"), *base, "--run-dir", whole)
    assert r.code == 0, r.err
    killed = tmp_path / "killed"
    k = spawn("train", config("cnn"), *base, "--run-dir", killed,
              env={"AIRLAB_FAULT": "kill_at_step:6", "OMP_NUM_THREADS": "1"})
    assert k.code == -signal.SIGKILL, (k.code, k.err)
    r = airlab_cli("train", "--resume", killed)
    assert r.code == 0, r.err
    digest = lambda run: json.loads((run / "summary.json").read_text())["weights_sha256"]  # noqa: E731
    assert digest(killed) == digest(whole)


def _one_line(r) -> str:
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip() and not line.startswith("hint:")]
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    return lines[0]


def test_bad_images_are_one_line_naming_the_files(folder, airlab_cli, tmp_path):
    bad = tmp_path / "bad"
    for c, name in enumerate(CLASSES[:2]):
        (bad / name).mkdir(parents=True)
        for i in range(4):
            _image(c, i).save(bad / name / f"{i}.png")
    (bad / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (bad / "square" / "empty.jpg").write_bytes(b"")
    line = _one_line(airlab_cli("train", config("cnn"), "data.name=folder", f"data.path={bad}", *SHORT))
    assert "broken.png" in line and "empty.jpg" in line


@pytest.mark.parametrize("kind, write, named", [
    ("npz", lambda p: np.savez(p, x_train=np.zeros((4, 8, 8), np.uint8)), "y_train"),
    ("text", lambda p: p.write_bytes(b"fine so far \xff\xfe and then not"), "UTF-8"),
    ("csv", lambda p: p.write_text("a,b,label\n1,2,0\n3,4\n"), ":3"),
])
def test_bad_files_are_one_line_naming_the_file(kind, write, named, airlab_cli, tmp_path):
    path = tmp_path / f"bad.{kind}"
    write(path)
    model = {"npz": "cnn", "text": "transformer", "csv": "mlp"}[kind]
    line = _one_line(airlab_cli("train", config(model), f"data.name={kind}", f"data.path={path}", *SHORT))
    assert "bad." in line and named in line, line


@pytest.mark.parametrize("model, kind, reads", [("transformer", "folder", "text data"),
                                                 ("cnn", "csv", "image data"), ("mlp", "text", "image data or table")])
def test_a_model_given_data_it_does_not_read_names_what_it_reads(model, kind, reads, paths, airlab_cli):
    line = _one_line(airlab_cli("train", config(model), *data_for(kind, paths)[:2], *SHORT))
    assert f"reads {reads}" in line, line


@needs("torch")
def test_a_text_run_samples_without_its_data(tmp_path, airlab_cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello airlab, hello world. " * 200, encoding="utf-8")
    run = tmp_path / "run"
    r = airlab_cli("train", config("transformer"), "data.name=text", f"data.path={corpus}", "data.tokenizer=bpe",
                   "data.vocab_size=280", *model_overrides("transformer"), *SHORT, "model.context_length=16",
                   "train.warmup_steps=1", "--run-dir", run)
    assert r.code == 0, r.err
    corpus.unlink()
    r = airlab_cli("sample", run, "--prompt", "hello", "--length", "20", "--seed", "1")
    assert r.code == 0, r.err
    written = sorted((run / "samples").glob("*-text.txt"))
    assert written and "hello" in written[-1].read_text(encoding="utf-8")


@needs("torch")
def test_val_fraction_zero_trains_on_every_example_and_says_so(folder, airlab_cli, tmp_path):
    run = tmp_path / "run"
    r = airlab_cli("train", config("mlp"), "data.name=folder", f"data.path={folder}", "data.val_fraction=0",
                   "data.test_fraction=0.2", *model_overrides("mlp"), *SHORT, "--run-dir", run)
    assert r.code == 0, r.err
    assert "no validation split" in r.out + r.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["validation"].startswith("none")
    facts = json.loads((run / "data.json").read_text())
    assert facts["counts"] == {"train": 24, "val": 0, "test": 6}
    assert "val" not in summary["final"] and "test" in summary["final"]
