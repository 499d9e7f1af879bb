"""`data.name: csv` and `data.name: parquet`: the user's own table, one row per example, for the MLP.

    data: {name: csv, path: patients.csv, label: outcome}
    data: {name: parquet, path: runs.parquet, label: kind, features: [x, y, colour]}

Reading. CSV is read with the standard library's `csv` module (always there, and it gives the
line of every row, so an error names `file.csv:LINE`; pyarrow's reader is faster but optional and
its errors locate less well): UTF-8 (a byte order mark is dropped), comma-separated (tab for a
`.tsv` file), spaces after a delimiter skipped, the first row the header (names stripped; an
empty or repeated name is refused), blank lines skipped, a row with the wrong number of fields
refused as `file.csv:LINE: expected N fields, found M`. Parquet is read with `pyarrow.parquet`
(the `parquet` extra), only the columns used.

Labels: the column `data.label` (default "label"). Integers (also written 3.0) are class indices
used as given (num_classes = largest + 1; negative ones refused); anything else is a class name,
mapped to its index in the sorted list of names (kept as `class_names`). Non-integer numbers are
refused (airlab's MLP classifies; it does not regress), as are empty labels and a single class.

Features: `data.features`, or every column but the label, in the table's order.
- Numeric columns (every cell a finite number; a Parquet integer, float, decimal or boolean
  column) are standardised with the mean and standard deviation of the TRAINING split only
  (a constant column: std 1). A CSV column where most cells are numbers but some are not (an
  empty cell, "NA", "?") is refused naming the first such cell as file:LINE: there is no silent
  imputation; fill or drop the rows, or drop the column with data.features.
- Categorical columns (text; in CSV, a column where at most half the cells are numbers) are
  one-hot encoded with the categories seen in the TRAINING split, sorted; a category seen only
  in val or test encodes as all zeros. An empty cell (a Parquet null) is a category of its own.
  A column with more than 50 distinct values is refused: it is probably an id or free text
  (drop it with data.features).
- Other Parquet types (dates, lists, binary) are refused naming the column.
The statistics and categories are stored in `Dataset.meta` (and so in the run directory), so
new rows can be encoded the same way: {"label", "class_names", "features": [{"name", "kind":
"numeric", "mean", "std"} | {"name", "kind": "categorical", "categories"}], "columns": F}.

Splits: val (and test, by data.test_fraction) are carved by `airlab.data.splits.carve` from the
seed, exactly as image datasets are; `data.limit` caps each split; statistics are taken after.
The whole table is held in memory as float32 (N, F); tables that do not fit in memory are out
of scope (use npz with a memory-mapped array of your own features instead).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from airlab.data.base import Dataset, Split
from airlab.data.splits import carve, check_labels, limited
from airlab.errors import ConfigError, DataError

MAX_CATEGORIES = 50
_BOM = b"\xef\xbb\xbf"


@dataclass
class _Column:
    name: str
    numeric: bool
    values: np.ndarray | list[str]  # numeric: float64 (N,); categorical: one str per row


@dataclass
class _Table:
    path: Path
    names: list[str]  # every column of the file, in order
    n: int
    label: list  # one value per row (str, int, float, bool or None)
    features: list[_Column]
    where: Callable[[int], str]  # row index -> "file.csv:LINE" / "file.parquet: row N"


# ------------------------------------------------------------------------------------------------
# options


def _path(options, kind: str) -> Path:
    path = Path(str(options.path)).expanduser()
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist", hint=f"give the {kind} file of your table")
    if not path.is_file():
        raise DataError(f"data.path: {path} is not a file; data.name: {kind} reads one {kind} file")
    return path


def _columns_used(path: Path, names: list[str], options) -> tuple[str, list[str]]:
    label = str(getattr(options, "label", "label") or "label")
    shown = ", ".join(repr(c) for c in names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    if label not in names:
        raise DataError(f"{path}: no label column {label!r}; the columns are {shown}",
                        hint="name the label column with data.label")
    features = getattr(options, "features", None)
    if features is None:
        features = [c for c in names if c != label]
    else:
        features = [str(f) for f in features]
        missing = [f for f in features if f not in names]
        if missing:
            raise DataError(f"{path}: data.features names {missing[0]!r}, which is not a column; the columns are "
                            f"{shown}")
        if label in features:
            raise DataError(f"{path}: data.features lists the label column {label!r}",
                            hint="a model must not read its label: remove it from data.features")
        seen = set()
        for f in features:
            if f in seen:
                raise DataError(f"{path}: data.features lists {f!r} twice")
            seen.add(f)
    if not features:
        raise DataError(f"{path}: no feature columns (only the label {label!r})",
                        hint="add columns, or list them in data.features")
    return label, features


# ------------------------------------------------------------------------------------------------
# CSV


def _csv_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    skip = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        return str(memoryview(raw)[skip:], "utf-8")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset})",
                        hint="save the table as UTF-8 CSV") from None


def _numbers(cells: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok): each cell as a float64, and whether it is a finite number."""
    try:
        values = np.array(cells, dtype=np.float64)
        ok = np.isfinite(values)
        return values, ok
    except ValueError:
        pass
    values = np.zeros(len(cells), dtype=np.float64)
    ok = np.zeros(len(cells), dtype=bool)
    for i, c in enumerate(cells):
        try:
            v = float(c)
        except ValueError:
            continue
        if math.isfinite(v):
            values[i], ok[i] = v, True
    return values, ok


def _csv_column(name: str, cells: list[str], where: Callable[[int], str]) -> _Column:
    values, ok = _numbers(cells)
    if ok.all():
        return _Column(name, True, values)
    if 2 * int(ok.sum()) > len(cells):  # mostly numbers: a hole or a typo, not a category
        i = int(np.flatnonzero(~ok)[0])
        what = "empty" if not cells[i].strip() else repr(cells[i])
        raise DataError(f"{where(i)}: column {name!r} holds numbers, but this row's cell is {what}",
                        hint="put a number in every row (or remove the row), or drop the column with data.features")
    return _Column(name, False, cells)


def _read_csv(path: Path, options) -> _Table:
    text = _csv_text(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    hline = 1  # the header's line
    try:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not row or (len(row) == 1 and not row[0].strip() and header is not None):
                continue  # a blank line
            if header is None:
                header, hline = [h.strip() for h in row], start
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{start}: expected {len(header)} fields, found {len(row)}",
                                hint="every row needs one field per column of the header row (quote fields "
                                     "that hold the delimiter)")
            rows.append(row)
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    if header is None:
        raise DataError(f"{path}: empty; a CSV needs a header row naming the columns, then one row per example")
    for i, h in enumerate(header):
        if not h:
            raise DataError(f"{path}:{hline}: column {i + 1} of the header row has no name",
                            hint="name it (or remove the column: an unnamed first column is often a saved index)")
    seen: dict[str, int] = {}
    for i, h in enumerate(header):
        if h in seen:
            raise DataError(f"{path}:{hline}: the header names column {h!r} twice (columns {seen[h] + 1} and {i + 1})")
        seen[h] = i
    if not rows:
        raise DataError(f"{path}: no rows below the header row")
    label, features = _columns_used(path, header, options)

    def where(i: int) -> str:
        return f"{path}:{lines[i]}"

    cols = [_csv_column(f, [r[seen[f]] for r in rows], where) for f in features]
    return _Table(path, header, len(rows), [r[seen[label]].strip() for r in rows], cols, where)


# ------------------------------------------------------------------------------------------------
# Parquet


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("data.name: parquet needs pyarrow: pip install 'airlab[parquet]'") from None
    return pa, pq


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _read_parquet(path: Path, options) -> _Table:
    pa, pq = _pyarrow()
    try:
        names = list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable Parquet file ({_first(e)})") from None
    label, features = _columns_used(path, names, options)
    try:
        table = pq.read_table(path, columns=[label, *features])
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read the Parquet file ({_first(e)})") from None
    n = table.num_rows
    if n == 0:
        raise DataError(f"{path}: the table has no rows")

    def where(i: int) -> str:
        return f"{path}: row {i + 1}"

    cols = []
    types = pa.types
    for name in features:
        col = table.column(name)
        t = col.type
        if types.is_dictionary(t):
            t = t.value_type
            col = col.cast(t)
        if types.is_integer(t) or types.is_floating(t) or types.is_decimal(t) or types.is_boolean(t):
            if col.null_count:
                i = int(np.flatnonzero(np.asarray(col.is_null()))[0])
                raise DataError(f"{where(i)}: column {name!r} holds numbers, but this row's cell is empty (null)",
                                hint="put a number in every row (or remove the row), or drop the column with "
                                     "data.features")
            values = np.asarray(col.to_numpy(), dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                i = int(bad[0])
                raise DataError(f"{where(i)}: column {name!r} holds {values[i]}, not a finite number",
                                hint="put a number in every row (or remove the row), or drop the column with "
                                     "data.features")
            cols.append(_Column(name, True, values))
        elif types.is_string(t) or types.is_large_string(t):
            cols.append(_Column(name, False, ["" if v is None else str(v) for v in col.to_pylist()]))
        else:
            raise DataError(f"{path}: column {name!r} has type {col.type}: neither numbers nor text",
                            hint="drop it with data.features, or convert it to numbers or strings")
    return _Table(path, names, n, table.column(label).to_pylist(), cols, where)


# ------------------------------------------------------------------------------------------------
# labels and features


def _as_integer(v) -> int | float | None:
    """An integer label as int; a non-integer number as float; None when `v` is not a number."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v.is_integer() else v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
        try:
            f = float(v)
        except ValueError:
            return None
        return int(f) if math.isfinite(f) and f.is_integer() else f
    return None


def _labels(t: _Table, label: str) -> tuple[np.ndarray, int, list[str] | None]:
    for i, v in enumerate(t.label):
        if v is None or (isinstance(v, str) and not v):
            raise DataError(f"{t.where(i)}: no label (column {label!r} is empty in this row)",
                            hint="give every row a label, or remove the row")
    numbers = [_as_integer(v) for v in t.label]
    if all(x is not None for x in numbers):
        fractional = next((i for i, x in enumerate(numbers) if isinstance(x, float)), None)
        if fractional is not None:
            raise DataError(f"{t.where(fractional)}: the label column {label!r} holds {t.label[fractional]!r}, "
                            "not a class: airlab's MLP classifies, it does not regress",
                            hint="labels are class indices 0..K-1 or class names")
        y = np.asarray(numbers, dtype=np.int64)
        k = int(y.max()) + 1 if int(y.max()) >= 0 else 1
        try:
            y = check_labels(y, k, f"{t.path}: column {label!r}")
        except DataError as e:
            raise DataError(e.message, hint="integer labels are class indices 0..K-1; write them as names "
                                            "(e.g. neg, pos) to have them mapped to indices") from None
        names = None
    else:
        text = [str(v) for v in t.label]
        names = sorted(set(text))
        index = {c: i for i, c in enumerate(names)}
        y = check_labels(np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text)), len(names),
                         f"{t.path}: column {label!r}")
        k = len(names)
    if k < 2:
        raise DataError(f"{t.path}: the label column {label!r} holds one class only ({t.label[0]!r})",
                        hint="a classifier needs examples of at least two classes")
    return y, k, names


def _encode(t: _Table, train: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Every row's features as float32 (N, F), with what was learned from the `train` rows."""
    blocks, meta = [], []
    for col in t.features:
        if col.numeric:
            v = np.asarray(col.values, dtype=np.float64)
            mean = float(v[train].mean())
            std = float(v[train].std())
            if not std > 1e-9 * max(1.0, abs(mean)):  # constant on the training rows
                std = 1.0
            blocks.append(((v - mean) / std)[:, None])
            meta.append({"name": col.name, "kind": "numeric", "mean": mean, "std": std})
            continue
        cells = col.values
        distinct = len(set(cells))
        if distinct > MAX_CATEGORIES:
            raise DataError(f"{t.path}: column {col.name!r} is not numeric and has {distinct} distinct values (more "
                            f"than {MAX_CATEGORIES} to one-hot encode): probably an id or free text",
                            hint="drop it with data.features (a numeric column must hold only numbers, e.g. 1234.5)")
        categories = sorted({cells[int(i)] for i in train})
        index = {c: j for j, c in enumerate(categories)}
        codes = np.fromiter((index.get(c, -1) for c in cells), dtype=np.int64, count=len(cells))
        blocks.append((codes[:, None] == np.arange(len(categories))[None, :]).astype(np.float64))
        meta.append({"name": col.name, "kind": "categorical", "categories": categories})
    return np.concatenate(blocks, axis=1).astype(np.float32), meta


def _dataset(kind: str, t: _Table, options, seed: int) -> Dataset:
    label = str(getattr(options, "label", "label") or "label")
    y, k, class_names = _labels(t, label)
    val_fraction = float(options.val_fraction)
    test_fraction = float(getattr(options, "test_fraction", 0.0) or 0.0)
    limit = options.limit
    train_rows, val_rows, test_rows = carve(t.n, val_fraction, seed, test_fraction, what=f"rows in {t.path}")
    train_rows, val_rows = limited(train_rows, limit), limited(val_rows, limit)
    test_rows = limited(test_rows, limit) if test_rows is not None else None
    x, features = _encode(t, train_rows)

    def split(rows: np.ndarray) -> Split:
        return Split(np.ascontiguousarray(x[rows]), y[rows])

    meta = {"label": label, "class_names": class_names, "features": features, "columns": int(x.shape[1])}
    extra = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": int(seed), "limit": limit,
             "rows": t.n}
    return Dataset(name=kind, kind="table", train=split(train_rows), val=split(val_rows),
                   test=split(test_rows) if test_rows is not None else None, num_classes=k,
                   class_names=class_names, source=str(t.path), meta=meta, extra=extra)


def load_csv(options, *, seed: int) -> Dataset:
    """The table of the CSV file `options.path` (see the module's docstring for the rules)."""
    path = _path(options, "csv")
    return _dataset("csv", _read_csv(path, options), options, seed)


def load_parquet(options, *, seed: int) -> Dataset:
    """The table of the Parquet file `options.path` (needs pyarrow: the `parquet` extra)."""
    _pyarrow()
    path = _path(options, "parquet")
    return _dataset("parquet", _read_parquet(path, options), options, seed)


__all__ = ["MAX_CATEGORIES", "load_csv", "load_parquet"]
