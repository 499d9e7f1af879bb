"""`data.name: csv` / `parquet` (airlab.data.table): labels, standardisation with training statistics
only, one-hot categories, and errors that name file:line, on small generated tables."""

from __future__ import annotations

import numpy as np
import pytest

from airlab.config.schema import DataConfig
from airlab.data import load_dataset
from airlab.data.splits import carve
from airlab.data.table import load_csv, load_parquet
from airlab.errors import DataError

N = 40
COLOURS = ["red", "green", "blue"]


def _rows(n: int = N):
    rng = np.random.default_rng(0)
    height = np.round(rng.normal(170, 10, n), 2)
    weight = rng.integers(50, 100, n)
    colour = [COLOURS[i % 3] for i in range(n)]
    label = ["dog" if i % 2 else "cat" for i in range(n)]
    return height, weight, colour, label


def _write_csv(path, rows, header="height,weight,colour,label"):
    height, weight, colour, label = rows
    lines = [header] + [f"{h},{w},{c},{lab}" for h, w, c, lab in zip(height, weight, colour, label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _opts(name, path, **kw) -> DataConfig:
    return DataConfig(name=name, path=str(path), **kw)


def test_csv_standardises_with_training_statistics_and_one_hot_encodes(tmp_path):
    rows = _rows()
    height, weight, colour, label = rows
    # one colour seen only in a validation row: it encodes as all zeros
    _, val_rows, _ = carve(N, 0.25, 7)
    colour = list(colour)
    colour[int(val_rows[0])] = "purple"
    f = _write_csv(tmp_path / "t.csv", (height, weight, colour, label))
    ds = load_csv(_opts("csv", f, val_fraction=0.25), seed=7)
    train_rows, val_rows, _ = carve(N, 0.25, 7)
    assert ds.kind == "table" and ds.num_classes == 2 and ds.class_names == ["cat", "dog"]
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert ds.train.x.shape == (len(train_rows), 5) and ds.val.x.shape == (len(val_rows), 5)
    np.testing.assert_array_equal(ds.train.y, (train_rows % 2))  # dog (odd rows) = 1
    feats = ds.meta["features"]
    assert [f["name"] for f in feats] == ["height", "weight", "colour"] and ds.meta["columns"] == 5
    assert ds.meta["label"] == "label" and ds.meta["class_names"] == ["cat", "dog"]
    for j, (name, raw) in enumerate((("height", height), ("weight", weight))):
        mean, std = raw[train_rows].mean(), raw[train_rows].std()
        assert feats[j] == {"name": name, "kind": "numeric", "mean": pytest.approx(mean), "std": pytest.approx(std)}
        assert abs(mean - raw.mean()) > 1e-6  # the training statistics differ from the whole table's
        np.testing.assert_allclose(ds.train.x[:, j], (raw[train_rows] - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ds.val.x[:, j], (raw[val_rows] - mean) / std, rtol=1e-5, atol=1e-5)
    assert abs(float(ds.train.x[:, 0].mean())) < 1e-5 and abs(float(ds.train.x[:, 0].std()) - 1) < 1e-4
    assert feats[2] == {"name": "colour", "kind": "categorical", "categories": ["blue", "green", "red"]}
    onehot = ds.train.x[:, 2:]
    assert set(onehot.ravel().tolist()) == {0.0, 1.0} and (onehot.sum(axis=1) == 1).all()
    cats = ["blue", "green", "red"]
    np.testing.assert_array_equal(onehot, np.eye(3)[[cats.index(colour[int(r)]) for r in train_rows]])
    assert ds.val.x[0, 2:].tolist() == [0.0, 0.0, 0.0]  # purple: unseen in training
    # through load_dataset, as training calls it
    again = load_dataset("csv", seed=7, options=_opts("csv", f, val_fraction=0.25))
    np.testing.assert_array_equal(again.train.x, ds.train.x)


def test_integer_labels_feature_subset_test_fraction_and_limit(tmp_path):
    height, weight, colour, _ = _rows()
    f = _write_csv(tmp_path / "ints.csv", (height, weight, colour, [i % 4 for i in range(N)]),
                   header="height,weight,colour,y")
    ds = load_csv(_opts("csv", f, label="y", features=["weight"], val_fraction=0.2, test_fraction=0.1), seed=1)
    tr, va, te = carve(N, 0.2, 1, 0.1)
    assert ds.num_classes == 4 and ds.class_names is None and ds.meta["columns"] == 1
    assert (len(ds.train), len(ds.val), len(ds.test)) == (len(tr), len(va), len(te))
    np.testing.assert_array_equal(ds.test.y, te % 4)
    ds = load_csv(_opts("csv", f, label="y", val_fraction=0.0, limit=5), seed=1)
    assert len(ds.train) == 5 and len(ds.val) == 0 and ds.val.x.shape == (0, 5)


def test_missing_label_column_lists_the_columns(tmp_path):
    f = _write_csv(tmp_path / "t.csv", _rows())
    with pytest.raises(DataError) as info:
        load_csv(_opts("csv", f, label="target"), seed=0)
    msg = info.value.message
    assert str(f) in msg and "'target'" in msg and "'height', 'weight', 'colour', 'label'" in msg
    assert info.value.exit_code == 2 and "data.label" in info.value.hint
    with pytest.raises(DataError, match="data.features names 'size'"):
        load_csv(_opts("csv", f, features=["height", "size"]), seed=0)


def test_ragged_row_is_named_with_its_line(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("a,b,label\n1,2,x\n\n3,4,y\n5,z\n6,7,x\n")
    with pytest.raises(DataError) as info:
        load_csv(_opts("csv", f), seed=0)
    assert info.value.message == f"{f}:5: expected 3 fields, found 2"


def test_bad_cell_in_a_numeric_column_is_named(tmp_path):
    height, weight, colour, label = _rows()
    weight = [str(w) for w in weight]
    weight[10] = ""
    f = _write_csv(tmp_path / "holes.csv", (height, weight, colour, label))
    with pytest.raises(DataError) as info:
        load_csv(_opts("csv", f), seed=0)
    # row 10 is on line 12 (after the header, counting from 1)
    assert info.value.message == f"{f}:12: column 'weight' holds numbers, but this row's cell is empty"
    weight[10] = "NA"
    _write_csv(f, (height, weight, colour, label))
    with pytest.raises(DataError, match=r"holes.csv:12: column 'weight' .* 'NA'"):
        load_csv(_opts("csv", f), seed=0)


def test_many_valued_text_column_is_refused_and_labels_are_checked(tmp_path):
    height, weight, colour, label = _rows(60)
    ids = [f"patient-{i}" for i in range(60)]
    f = _write_csv(tmp_path / "ids.csv", (height, weight, ids, label), header="height,weight,pid,label")
    with pytest.raises(DataError, match="'pid' is not numeric and has 60 distinct values") as info:
        load_csv(_opts("csv", f), seed=0)
    assert "data.features" in info.value.hint
    assert len(load_csv(_opts("csv", f, features=["height", "weight"]), seed=0).train) > 0
    f = _write_csv(tmp_path / "reg.csv", (height, weight, colour[:60], list(height)))
    with pytest.raises(DataError, match="not a class"):
        load_csv(_opts("csv", f), seed=0)
    f = _write_csv(tmp_path / "neg.csv", (height, weight, colour[:60], [-1, 1] * 30))
    with pytest.raises(DataError, match="label -1 is outside"):
        load_csv(_opts("csv", f), seed=0)


def test_parquet_round_trip_matches_the_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = _rows()
    height, weight, colour, label = rows
    f_csv = _write_csv(tmp_path / "t.csv", rows)
    f_pq = tmp_path / "t.parquet"
    pq.write_table(pa.table({"height": height, "weight": weight, "colour": colour, "label": label}), f_pq)
    a = load_csv(_opts("csv", f_csv), seed=2)
    b = load_parquet(_opts("parquet", f_pq), seed=2)
    assert b.name == "parquet" and b.class_names == a.class_names and b.meta == a.meta
    for s in ("train", "val"):
        np.testing.assert_allclose(getattr(b, s).x, getattr(a, s).x, rtol=1e-6)
        np.testing.assert_array_equal(getattr(b, s).y, getattr(a, s).y)
    # a null in a numeric column is named by its row
    w = pa.array([None if i == 3 else int(v) for i, v in enumerate(weight)], type=pa.int64())
    pq.write_table(pa.table({"weight": w, "label": label}), f_pq)
    with pytest.raises(DataError, match=r"t.parquet: row 4: column 'weight' .* empty \(null\)"):
        load_parquet(_opts("parquet", f_pq), seed=0)
    f_pq.write_text("not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_parquet(_opts("parquet", f_pq), seed=0)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    from airlab.errors import ConfigError
    from conftest import without_package

    without_package(monkeypatch, "pyarrow")
    f = tmp_path / "t.parquet"
    f.write_bytes(b"PAR1")
    with pytest.raises(ConfigError) as info:
        load_parquet(_opts("parquet", f), seed=0)
    assert info.value.message == "data.name: parquet needs pyarrow: pip install 'airlab[parquet]'"
    assert info.value.exit_code == 2
