"""`airlab data inspect CONFIG`: the data as training loads it, described (counts per split and
class, value range, vocabulary, placement) and, for images, a PNG grid with a row per class.
Generated data only: the `shapes` and `pycorpus` datasets, and folders written by the tests."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from airlab.data import load_dataset
from airlab.data.base import Split
from conftest import CONFIGS, write

HEAVY = ("torch", "tensorflow", "keras", "jax")


@pytest.fixture
def shapes_cfg(tmp_path):
    return write(tmp_path / "shapes.yaml", """
        name: inspect-shapes
        seed: 3
        model:
          name: cnn
        data:
          name: shapes
          size: 200
          val_fraction: 0.2
        """)


def _json(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


def _band_count(png) -> int:
    """Rows of tiles in a grid image: runs of pixel rows that are not all background."""
    a = np.asarray(Image.open(png).convert("RGB"))
    background = np.all(a == a[0, 0], axis=(1, 2))  # the top-left pixel is the margin
    edges = np.diff(np.concatenate([[1], (~background).astype(np.int8), [0]]))
    return int(np.count_nonzero(edges == 1))


def test_shapes_counts_match_the_loader_and_the_grid_has_a_row_per_class(airlab_cli, shapes_cfg, tmp_path):
    grid = tmp_path / "out" / "grid.png"
    report = _json(airlab_cli("data", "inspect", shapes_cfg, "--json", "--grid", grid))
    ds = load_dataset("shapes", size=200, val_fraction=0.2, seed=3)
    assert report["dataset"] == "shapes" and report["kind"] == "image" and report["model"] == "cnn"
    assert {k: v["count"] for k, v in report["splits"].items()} == {"train": 160, "val": 40, "test": 2000}
    assert {k: v["count"] for k, v in report["splits"].items()} == {k: len(s) for k, s in ds.splits().items()}
    classes = report["classes"]
    assert classes["names"] == ds.class_names and classes["num_classes"] == 10
    for name, split in ds.splits().items():
        assert classes["counts"][name] == np.bincount(split.y, minlength=10).tolist()
        assert sum(classes["share"][name]) == pytest.approx(1.0)
    assert report["sample_shape"] == [1, 28, 28] and report["dtype"] == "float32"
    assert report["bytes"] == ds.nbytes and report["cache"] is None and report["storage"] == "in memory"
    train_range = report["splits"]["train"]["value_range"]
    assert train_range["sampled"] is False and train_range["rows"] == 160
    assert train_range["min"] == pytest.approx(float(ds.train.x.min()))
    assert train_range["max"] == pytest.approx(float(ds.train.x.max()))
    assert report["placement"]["requested"] == "auto" and report["placement"]["mode"] in ("device", "stream")
    assert report["augment"] is None and report["normalize"] is None
    # the grid: a row per class, in class order, the first 8 training examples of each
    assert report["grid"]["path"] == str(grid) and report["grid"]["rows"] == ds.class_names
    assert report["grid"]["examples"] == [min(8, int(n)) for n in np.bincount(ds.train.y, minlength=10)]
    with Image.open(grid) as img:
        img.load()
        assert img.format == "PNG" and list(img.size) == report["grid"]["size"]
    assert _band_count(grid) == 10


def test_plain_output_default_grid_path_and_forced_streaming(airlab_cli, shapes_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = airlab_cli("data", "inspect", shapes_cfg, "data.placement=stream", "data.augment.horizontal_flip=true")
    assert r.code == 0, r.err
    lines = r.out_lines
    assert "splits: train 160 · val 40 · test 2,000 examples" in lines
    assert any(line.startswith("placement: streaming on device auto: data.placement: stream") for line in lines)
    assert "augment: random_crop: 0, horizontal_flip: true" in lines
    assert (tmp_path / "shapes-data.png").is_file()  # the default: ./<config stem>-data.png
    assert any(line.startswith("grid: wrote shapes-data.png (rows, top to bottom: circle, square,") for line in lines)
    assert any(line.lstrip().startswith("circle ") and "train " in line for line in lines)


def test_text_shows_vocabulary_and_writes_no_grid(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = _json(airlab_cli("data", "inspect", CONFIGS / "transformer.yaml", "data.name=pycorpus",
                              "data.size=20000", "--json"))
    ds = load_dataset("pycorpus", size=20000)
    assert report["kind"] == "text" and report["unit"] == "tokens" and report["classes"] is None
    assert report["text"]["tokenizer"] == "char"
    assert report["text"]["vocab_size"] == len(ds.vocab) > 20
    assert report["text"]["tokens"] == {"train": 18000, "val": 2000}
    assert report["splits"]["train"]["value_range"]["max"] == int(ds.train.x.max()) < len(ds.vocab)
    assert report["grid"] is None and not list(tmp_path.glob("*.png"))


def test_value_range_is_sampled_on_a_large_split():
    from airlab.data.inspect import SAMPLE_ROWS, value_range

    x = np.arange(5000, dtype=np.float32).reshape(5000, 1) - 7.0
    x[1] = np.nan
    r = value_range(Split(x, np.zeros(5000, dtype=np.int64)))
    assert r["sampled"] is True and r["rows"] == SAMPLE_ROWS and r["of"] == 5000
    assert (r["min"], r["max"]) == (-7.0, 4992.0)  # the first and last rows are always read
    small = value_range(Split(x[:10]))
    assert small["sampled"] is False and small["nonfinite"] == 1 and small["min"] == -7.0


def test_free_memory_never_asks_a_framework(monkeypatch):
    from airlab.data.inspect import free_memory

    free, where, why = free_memory("cpu")
    assert where == "cpu" and why is None and free > 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    free, where, why = free_memory("cuda:1")
    assert free is None and where == "cuda:1" and "CUDA_VISIBLE_DEVICES" in why
    assert free_memory("auto")[1].startswith("cpu")  # no GPU visible: auto trains on the CPU


def test_free_memory_of_a_gpu_comes_from_nvml_under_cuda_visible_devices(monkeypatch):
    import types

    from airlab.data.inspect import free_memory

    gib = 1 << 30
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetHandleByUUID=lambda u: {"GPU-b": 1}[u],
        nvmlDeviceGetName=lambda h: f"Fake GPU {h}",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(free=(h + 1) * gib))
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert free_memory("cuda:1") == (2 * gib, "cuda:1 (Fake GPU 1)", None)
    assert free_memory("auto") == (gib, "cuda:0 (Fake GPU 0)", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # CUDA's device 0 is NVML's device 1
    assert free_memory("cuda") == (2 * gib, "cuda:0 (Fake GPU 1)", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b")
    assert free_memory("cuda:0")[0] == 2 * gib
    assert free_memory("cuda:1")[0] is None


def test_a_model_that_cannot_read_the_data_exits_2_with_one_line(airlab_cli, tmp_path):
    r = airlab_cli("data", "inspect", CONFIGS / "transformer.yaml", "data.name=shapes", "data.size=100", "--no-grid")
    assert r.code == 2 and r.out == ""
    assert r.err_lines[0] == "error: model.name: transformer reads text data, and data.name: shapes is image data"
    assert "Traceback" not in r.err


@pytest.mark.skipif(importlib.util.find_spec("airlab.data.npz") is None,
                    reason="airlab/data/npz.py (data.name: npz) is not written yet")
def test_a_missing_npz_exits_2_naming_the_file(airlab_cli, tmp_path):
    missing = tmp_path / "nowhere" / "arrays.npz"
    r = airlab_cli("data", "inspect", CONFIGS / "mlp.yaml", "data.name=npz", f"data.path={missing}", "--no-grid")
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith("error: ") and str(missing) in r.err_lines[0]
    assert "Traceback" not in r.err and r.out == ""


@pytest.mark.skipif(importlib.util.find_spec("airlab.data.folder") is None,
                    reason="airlab/data/folder.py (data.name: folder) is not written yet")
def test_a_folder_counts_each_class_and_flags_the_imbalance(airlab_cli, tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls, n in (("cat", 7), ("dog", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / cls / f"{i}.png")
    grid = tmp_path / "grid.png"
    report = _json(airlab_cli("data", "inspect", CONFIGS / "mlp.yaml", "data.name=folder", f"data.path={root}",
                              "data.val_fraction=0", "--json", "--grid", grid))
    assert report["classes"]["names"] == ["cat", "dog"]
    assert report["classes"]["counts"]["train"] == [7, 2]
    assert report["classes"]["balance"]["train"]["imbalanced"] is True
    assert any("imbalanced classes: 'cat' has 7 examples, 'dog' 2" in n for n in report["notes"])
    assert report["sample_shape"] == [1, 8, 8]
    assert report["grid"]["rows"] == ["cat", "dog"] and _band_count(grid) == 2


def test_inspect_imports_no_framework(airlab_proc, shapes_cfg, tmp_path):
    code = (
        "import contextlib, io, json, sys\n"
        "from airlab.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = run(['data', 'inspect', {str(shapes_cfg)!r}, '--grid', {str(tmp_path / 'g.png')!r}])\n"
        f"print(json.dumps([rc, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})]))\n"
    )
    r = airlab_proc(code=code)
    assert r.code == 0, r.err
    assert json.loads(r.out.strip().splitlines()[-1]) == [0, []]


@pytest.mark.parametrize("argv", [["data"], ["data", "--help"], ["data", "inspect", "--help"]])
def test_help_ends_with_a_runnable_example(airlab_cli, argv):
    r = airlab_cli(*argv)
    assert r.code == 0 and r.err == ""  # bare `airlab data` is its help, as bare `airlab` is
    assert "Example: airlab data inspect configs/cnn.yaml data.name=shapes\n" in r.out
