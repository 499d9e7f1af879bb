"""data.name: folder — the user's image folders, decoded once into the cache (generated fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from airlab.config.schema import DataConfig
from airlab.data import folder, load_dataset
from airlab.errors import DataError


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))


def _png(path: Path, value=(10, 20, 30), size=(8, 8), mode="RGB") -> Path:
    """An image of `size` (width, height) filled with `value`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def _tree(root: Path, classes=("cat", "dog"), n=10, split=None, size=(8, 8)) -> Path:
    """root/[split/]<class>/<i>.png; class k's images have red value 10*(k+1) and green i."""
    base = root / split if split else root
    for k, name in enumerate(classes):
        for i in range(n):
            _png(base / name / f"{i:02d}.png", (10 * (k + 1), i, 200), size)
    return root


def _opts(path, **kw) -> DataConfig:
    return DataConfig(name="folder", path=str(path), **kw)


def _labels(split) -> list[int]:
    return split.y.tolist()


def test_flat_layout_carves_val_by_seed(tmp_path):
    root = _tree(tmp_path / "d", classes=("zebra", "ant", "moose"))
    ds = folder.load(_opts(root, val_fraction=0.2), seed=0)
    assert ds.class_names == ["ant", "moose", "zebra"] and ds.num_classes == 3
    assert (len(ds.train), len(ds.val), ds.test) == (24, 6, None)
    assert ds.train.x.dtype == np.uint8 and ds.train.sample_shape == (3, 8, 8)
    assert ds.extra["layout"] == "flat" and ds.meta["layout"] == "flat"
    assert sum(ds.extra["class_counts"]["val"].values()) == 6
    json.dumps(ds.meta), json.dumps(ds.extra)
    again = folder.load(_opts(root, val_fraction=0.2), seed=0)
    other = folder.load(_opts(root, val_fraction=0.2), seed=1)
    assert np.array_equal(again.val.rows, ds.val.rows)
    assert not np.array_equal(other.val.rows, ds.val.rows)
    everything = folder.load(_opts(root, val_fraction=0.0, test_fraction=0.1), seed=0)
    assert (len(everything.train), len(everything.val), len(everything.test)) == (27, 0, 3)


def test_split_layout_uses_given_val_and_test(tmp_path):
    root = _tree(tmp_path / "d", n=6, split="train")
    _tree(root, n=2, split="val")
    _tree(root, classes=("dog",), n=3, split="test")  # test may lack a class
    ds = load_dataset("folder", seed=0, options=_opts(root, val_fraction=0.5))
    assert ds.extra["layout"] == "split"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 4, 3)
    assert _labels(ds.train) == [0] * 6 + [1] * 6
    assert _labels(ds.val) == [0, 0, 1, 1] and _labels(ds.test) == [1, 1, 1]
    assert ds.extra["class_counts"]["test"] == {"cat": 0, "dog": 3}


def test_split_layout_without_val_carves_it_from_train(tmp_path):
    root = _tree(tmp_path / "d", n=5, split="train")
    ds = folder.load(_opts(root, val_fraction=0.2), seed=3)
    assert (len(ds.train), len(ds.val), ds.test) == (8, 2, None)


def test_val_class_missing_from_train_is_named(tmp_path):
    root = _tree(tmp_path / "d", n=2, split="train")
    _tree(root, classes=("cat", "emu"), n=1, split="val")
    with pytest.raises(DataError, match=r"val/emu: class 'emu' is not a class of .*train"):
        folder.load(_opts(root), seed=0)


def test_pixels_order_and_skipped_files(tmp_path):
    root = _tree(tmp_path / "d", n=3)
    _png(root / "cat" / "nested" / "deep.png", (1, 2, 3))  # nested folders are read
    _png(root / ".ipynb_checkpoints" / "x.png")  # hidden class folder
    _png(root / "cat" / ".hidden.png")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("loose file")
    ds = folder.load(_opts(root, val_fraction=0.0), seed=0)
    assert ds.class_names == ["cat", "dog"] and len(ds.train) == 7
    x = ds.train.materialize()
    # cat: 00.png 01.png 02.png nested/deep.png; dog: 00..02
    assert x[3, :, 0, 0].tolist() == [1, 2, 3]
    assert x[1, :, 5, 7].tolist() == [10, 1, 200]
    assert x[6, :, 0, 0].tolist() == [20, 2, 200]
    assert ds.extra["skipped"] == {"hidden": 3, "not_an_image": 1, "outside_class_folders": 1}


def test_grayscale_among_rgb_gives_rgb_and_all_gray_gives_one_channel(tmp_path):
    root = _tree(tmp_path / "d", n=2)
    _png(root / "dog" / "gray.png", 77, mode="L")
    ds = folder.load(_opts(root, val_fraction=0.0), seed=0)
    assert ds.extra["channels"] == 3
    assert ds.train.x[-1, :, 0, 0].tolist() == [77, 77, 77]
    gray = tmp_path / "g"
    for name in ("a", "b"):
        _png(gray / name / "1.png", 5, mode="L")
        Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)).save(gray / name / "16bit.png")
    ds = folder.load(_opts(gray, val_fraction=0.0), seed=0)
    assert ds.train.sample_shape == (1, 8, 8) and ds.meta["channels"] == 1
    assert ds.train.materialize()[:, 0, 0, 0].tolist() == [5, 100, 5, 100]  # 16 bits scaled to 8
    forced = folder.load(_opts(root, val_fraction=0.0, channels=1), seed=0)
    assert forced.train.sample_shape == (1, 8, 8)


def test_transparent_pixels_become_black(tmp_path):
    root = _tree(tmp_path / "d", n=1)
    im = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    im.putpixel((0, 0), (200, 100, 50, 255))
    im.save(root / "dog" / "alpha.png")
    x = folder.load(_opts(root, val_fraction=0.0), seed=0).train.materialize()
    assert x[2, :, 0, 0].tolist() == [200, 100, 50] and x[2, :, 1, 1].tolist() == [0, 0, 0]


def test_exif_rotated_jpeg_is_upright(tmp_path):
    root = tmp_path / "d"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (4, 2), (120, 120, 120)).save(root / name / "photo.JPG", exif=exif)
    ds = folder.load(_opts(root, val_fraction=0.0), seed=0)
    assert ds.train.sample_shape == (3, 4, 2)  # stored 4 wide, 2 high; displayed 2 wide, 4 high
    assert abs(int(ds.train.x[0, 0, 0, 0]) - 120) <= 3


def test_mixed_sizes_named_or_resized(tmp_path):
    root = _tree(tmp_path / "d", n=2)
    _png(root / "dog" / "wide.png", (0, 255, 0), size=(16, 8))
    with pytest.raises(DataError, match=r"cat/00.png is 8x8 and dog/wide.png is 8x16") as e:
        folder.load(_opts(root), seed=0)
    assert "data.image_size" in e.value.hint
    ds = folder.load(_opts(root, image_size=(4, 6), val_fraction=0.0), seed=0)
    assert ds.train.sample_shape == (3, 4, 6) and ds.meta["image_size"] == [4, 6]
    assert ds.train.x[-1, :, 2, 3].tolist() == [0, 255, 0]


def test_every_bad_file_in_one_error(tmp_path):
    root = _tree(tmp_path / "d", n=2)
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "dog" / "whole.png")
    good = (root / "dog" / "whole.png").read_bytes()
    (root / "dog" / "whole.png").unlink()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) * 2 // 3])  # header intact, pixels cut
    with pytest.raises(DataError) as e:
        folder.load(_opts(root), seed=0)
    msg = e.value.message
    assert "3 of 7 image files cannot be read" in msg and "\n" not in msg
    assert "cat/empty.png (empty file)" in msg and "dog/corrupt.jpg (not a PNG" in msg
    assert "dog/truncated.png (truncated)" in msg
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("folder-")]


def test_many_bad_files_say_how_many_more(tmp_path):
    root = _tree(tmp_path / "d", n=1)
    for i in range(8):
        (root / "cat" / f"bad{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"8 of 10 image files .*; and 3 more$"):
        folder.load(_opts(root), seed=0)


def test_folder_problems_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        folder.load(_opts(tmp_path / "nowhere"), seed=0)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is not a folder"):
        folder.load(_opts(tmp_path / "file.png"), seed=0)
    one = _tree(tmp_path / "one", classes=("only",), n=2)
    assert folder.load(_opts(one), seed=0).class_names == ["only"]  # unlabelled images: for an autoencoder
    loose = tmp_path / "loose"
    _png(loose / "a.png")
    with pytest.raises(DataError, match=r"no class folders \(it holds 1 images directly\)"):
        folder.load(_opts(loose), seed=0)
    empty = _tree(tmp_path / "empty", n=1)
    (empty / "bird").mkdir()
    (empty / "bird" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"1 class folder without any image .*empty/bird"):
        folder.load(_opts(empty), seed=0)
    stray = _tree(tmp_path / "stray", n=1, split="train")
    (stray / "validation").mkdir()
    with pytest.raises(DataError, match=r"stray/validation: a folder beside train/"):
        folder.load(_opts(stray), seed=0)


def test_cache_reused_then_rebuilt_after_a_change(tmp_path, monkeypatch):
    root = _tree(tmp_path / "d", n=2)
    first = folder.load(_opts(root, val_fraction=0.0), seed=0)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "_decode", no_decode)
    monkeypatch.setattr(folder, "_header", no_decode)
    second = folder.load(_opts(root, val_fraction=0.0), seed=0)
    assert second.cache == first.cache
    assert np.array_equal(second.train.materialize(), first.train.materialize())
    monkeypatch.undo()
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))
    _png(root / "cat" / "00.png", (99, 99, 99))  # same name, new content
    third = folder.load(_opts(root, val_fraction=0.0), seed=0)
    assert third.cache != first.cache
    assert third.train.x[0, :, 0, 0].tolist() == [99, 99, 99]


def test_a_link_back_to_a_parent_folder_is_read_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))
    root = _tree(tmp_path / "imgs", classes=("a", "b"), n=3)
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    ds = folder.load(_opts(root, val_fraction=0.0), seed=0)
    assert len(ds.train) == 6
