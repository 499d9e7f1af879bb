"""`airlab data inspect`: what training would see of the data, before anything trains.

    >>> from airlab.config import load_config
    >>> from airlab.data.inspect import inspect
    >>> report = inspect(load_config("configs/cnn.yaml", ["data.name=shapes"]), grid="cnn-data.png")
    >>> report["splits"]["train"]["count"], report["placement"]["path"]      # (10800, 'fast path')

`inspect(config, grid=PATH)` loads the data exactly as `airlab train` does (the same loader, the
same model-kind check), and returns one JSON-able dict: the dataset and its kind, counts per split
and per class (with their share and a note when the classes are imbalanced), the sample shape,
the stored dtype, the range of the values (over at most SAMPLE_ROWS rows of each split, evenly
spaced, and said so when sampled), the vocabulary of text and the features of a table, the cache
or "in memory", the size in bytes and whether training would take the fast path or stream
(`choose_placement` against the free memory of the config's device: psutil's available RAM for
the CPU, NVML's free memory for a GPU, never a framework), and the augmentation and
normalisation in force. For images it writes a PNG grid: one row per class, the first
GRID_PER_CLASS training examples of that class, the class name at the left.

Framework-free (DESIGN rule 2): nothing here imports torch or TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from airlab.data.base import Dataset, Split

SAMPLE_ROWS = 2048  # rows of each split the value range is read from (images, tables)
SAMPLE_TOKENS = 1 << 19  # tokens of each text split the value range is read from
IMBALANCE = 3.0  # the largest class over the smallest above this: said to be imbalanced
GRID_PER_CLASS = 8  # examples per row of the grid
GRID_MAX_CLASSES = 64  # rows of the grid at most (the first classes, in order)
GRID_TILE = 96  # pixels a tile is scaled up to, at least (integer factor, nearest neighbour)
LABEL_CHARS = 24  # a class name longer than this is cut in the grid


# -- loading, as training does --------------------------------------------------------------------


def load(config) -> Dataset:
    """The dataset as `airlab train` loads it for `config`: the same loader and options, then the
    same check that the model reads this kind of data (ConfigError / DataError, exit 2)."""
    from airlab.train.loop import _load_data  # framework-free; imported here: data sits below train

    return _load_data(config)


# -- where the data would live ---------------------------------------------------------------------


def _ram_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # a platform psutil cannot read
        return None


def _visible(index: int) -> tuple[str | None, str | None]:
    """The NVML handle key of CUDA's device `index` under CUDA_VISIBLE_DEVICES: ("index", "2"),
    ("uuid", "GPU-..."), or (None, why) when that device is not visible."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return "index", str(index)
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    usable = []
    for e in entries:  # CUDA stops at the first entry that names no device (e.g. -1)
        if e.isdigit():
            usable.append(("index", e))
        elif e.startswith("GPU-"):
            usable.append(("uuid", e))
        else:
            break
    if index >= len(usable):
        return None, f"CUDA_VISIBLE_DEVICES={spec!r} leaves no GPU {index}"
    return usable[index]


def _nvml_free(index: int) -> tuple[int | None, str, str | None]:
    """(free bytes, "cuda:N (name)", why unknown) of CUDA device `index`, through NVML."""
    where = f"cuda:{index}"
    key, value = _visible(index)
    if key is None:
        return None, where, value
    try:
        import pynvml  # nvidia-ml-py: the driver's own library, no framework
    except Exception as e:
        return None, where, f"cannot import pynvml ({type(e).__name__})"
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return None, where, f"NVML unavailable ({type(e).__name__}: {e})"
    try:
        if key == "uuid":
            handle = pynvml.nvmlDeviceGetHandleByUUID(value)
        else:
            count = pynvml.nvmlDeviceGetCount()
            if int(value) >= count:
                return None, where, f"NVML sees {count} GPU(s), none at index {value}"
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(value))
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        free = int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
        return free, f"{where} ({name})", None
    except Exception as e:
        return None, where, f"NVML could not read the GPU ({type(e).__name__}: {e})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _gpu_seen() -> bool:
    """Whether NVML sees a GPU that CUDA_VISIBLE_DEVICES leaves visible (device: auto)."""
    if _visible(0)[0] is None:
        return False
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def free_memory(device: str) -> tuple[int | None, str, str | None]:
    """(free bytes or None, where, why unknown) for the config's `device`: the RAM available on
    the host for cpu (and mps, whose memory is the host's); NVML's free memory of the GPU for
    cuda and cuda:N; for auto, GPU 0 when NVML sees one, else the host as the CPU would train
    (what the framework itself would see is not asked: that would import it)."""
    if device == "auto":
        if _gpu_seen():
            return _nvml_free(0)
        free = _ram_available()
        return free, "cpu (device: auto, no GPU seen by NVML)", None if free is not None else "psutil cannot say"
    if device.startswith("cuda"):
        return _nvml_free(int(device.split(":", 1)[1]) if ":" in device else 0)
    free = _ram_available()
    where = "mps (memory shared with the host)" if device == "mps" else "cpu"
    return free, where, None if free is not None else "psutil cannot say"


def placement(config, dataset: Dataset) -> dict:
    """Whether training would take the fast path or stream, and why (airlab.backends.common's
    `choose_placement`, the rule the backends use)."""
    from airlab.backends.common import choose_placement  # framework-free

    free, where, unknown = free_memory(config.device)
    mode, reason = choose_placement(config.data.placement, dataset.nbytes, free, where)
    return {"requested": config.data.placement, "device": config.device, "where": where, "free_bytes": free,
            "free_unknown_because": unknown, "mode": mode,
            "path": "fast path" if mode == "device" else "streaming", "reason": reason}


# -- what the data holds ---------------------------------------------------------------------------


def _number(v):
    v = v.item() if isinstance(v, np.generic) else v
    return float(v) if isinstance(v, float) else int(v)


def value_range(split: Split, bound: int = SAMPLE_ROWS) -> dict | None:
    """min and max of the split's values as stored, over at most `bound` rows evenly spaced (all
    of them when the split has no more); non-finite values are counted, not ranged."""
    n = len(split)
    if n == 0:
        return None
    sampled = n > bound
    idx = np.unique(np.linspace(0, n - 1, bound).astype(np.int64)) if sampled else np.arange(n, dtype=np.int64)
    x = np.asarray(split.gather(idx)[0])
    nonfinite = 0
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        nonfinite = int(x.size - np.count_nonzero(finite))
        x = x[finite]
    out = {"min": None, "max": None, "rows": int(idx.shape[0]), "of": n, "sampled": sampled, "nonfinite": nonfinite}
    if x.size:
        out.update(min=_number(x.min()), max=_number(x.max()))
    return out


def class_counts(dataset: Dataset) -> dict | None:
    """Per split: the examples of each class, their share, and the balance (largest over smallest;
    a class with no example counts as imbalanced). None for data without class labels."""
    if dataset.kind == "text" or not dataset.num_classes or dataset.train.y is None:
        return None
    k = int(dataset.num_classes)
    names = list(dataset.class_names or [str(i) for i in range(k)])
    counts, share, balance = {}, {}, {}
    for split_name, split in dataset.splits().items():
        if split.y is None or len(split) == 0:  # an empty split (data.val_fraction: 0) has no classes to count
            continue
        c = np.bincount(np.asarray(split.y, dtype=np.int64), minlength=k)[:k]
        total = int(c.sum())
        counts[split_name] = [int(v) for v in c]
        share[split_name] = [float(v) / total if total else 0.0 for v in c]
        if total == 0:
            continue
        big, small = int(np.argmax(c)), int(np.argmin(c))
        ratio = float(c[big]) / float(c[small]) if c[small] else None
        balance[split_name] = {"largest": names[big], "largest_count": int(c[big]), "smallest": names[small],
                               "smallest_count": int(c[small]), "ratio": ratio,
                               "empty": [names[i] for i in np.flatnonzero(c == 0)],
                               "imbalanced": ratio is None or ratio > IMBALANCE}
    return {"num_classes": k, "names": names, "counts": counts, "share": share, "balance": balance}


def _stored(dataset: Dataset) -> str:
    """How the values are stored, in words."""
    dtype = dataset.train.x.dtype
    if dataset.kind == "image":
        if dtype == np.uint8:
            return "uint8 pixels 0..255 (divided by 255 on the device)"
        return f"{dtype} pixels (in [0, 1] expected)"
    if dataset.kind == "table":
        return (f"{dtype} features: numeric columns standardised with the training split's mean and std, "
                "categorical ones one-hot")
    return f"{dtype} token ids"


def _text_facts(dataset: Dataset) -> dict:
    """The tokenizer, the vocabulary, tokens per split and the characters of the text (per split
    where the loader says, before data.limit)."""
    tok = dataset.tokenizer
    facts = {"tokenizer": getattr(tok, "kind", "char"), "vocab_size": len(dataset.vocab or []),
             "tokens": {name: len(split) for name, split in dataset.splits().items()},
             "characters": dataset.meta.get("characters"), "files": dataset.meta.get("files")}
    per_split = dataset.extra.get("split_characters")  # the text file loader: [train, test, val]
    if isinstance(per_split, (list, tuple)) and len(per_split) == 3:
        facts["split_characters"] = {"train": int(per_split[0]), "val": int(per_split[2])}
        if dataset.test is not None:
            facts["split_characters"]["test"] = int(per_split[1])
    return facts


def _features(config, dataset: Dataset) -> dict:
    """The table's input columns (the loader's meta: name, kind, and a numeric column's mean and
    std or a categorical one's categories) and the width of the features they encode to."""
    columns = dataset.meta.get("features")
    if not columns:  # a loader that kept no meta: the names asked for, if any
        columns = [{"name": str(n)} for n in (config.data.features or [])]
    width = dataset.train.sample_shape[0] if dataset.train.sample_shape else 0
    return {"width": int(width), "label": dataset.meta.get("label", config.data.label),
            "columns": [dict(c) if isinstance(c, dict) else {"name": str(c)} for c in columns]}


def _normalization(config, dataset: Dataset) -> dict | None:
    """data.normalize as the backends apply it: (x - mean) / std with the dataset's mean and std.
    A loader that set none leaves the pixels as they are (said so: `applied` False)."""
    if not config.data.normalize or dataset.kind != "image":
        return None
    if dataset.mean is None or dataset.std is None:
        return {"applied": False, "mean": None, "std": None}
    return {"applied": True, "mean": [float(v) for v in dataset.mean], "std": [float(v) for v in dataset.std]}


def _augment(config) -> dict | None:
    from airlab.data.augment import active

    a = config.data.augment
    return {"random_crop": a.random_crop, "horizontal_flip": a.horizontal_flip} if active(a) else None


def describe(config, dataset: Dataset) -> dict:
    """Everything `airlab data inspect` says of a loaded dataset, as one JSON-able dict."""
    spec = config.model
    splits = {}
    for name, split in dataset.splits().items():
        bound = SAMPLE_TOKENS if dataset.kind == "text" else SAMPLE_ROWS
        splits[name] = {"count": len(split), "value_range": value_range(split, bound)}
    report = {
        "dataset": dataset.name, "kind": dataset.kind, "source": dataset.source,
        "model": spec.name, "model_reads": list(getattr(spec, "reads", ("image",))),
        "unit": "tokens" if dataset.kind == "text" else "examples",
        "splits": splits,
        "sample_shape": list(dataset.train.sample_shape), "dtype": str(dataset.train.x.dtype),
        "stored": _stored(dataset),
        "classes": class_counts(dataset),
        "text": _text_facts(dataset) if dataset.kind == "text" else None,
        "features": _features(config, dataset) if dataset.kind == "table" else None,
        "cache": dataset.cache, "storage": f"memory-mapped cache {dataset.cache}" if dataset.cache else "in memory",
        "bytes": int(dataset.nbytes),
        "placement": placement(config, dataset),
        "augment": _augment(config) if dataset.kind == "image" else None,
        "normalize": _normalization(config, dataset),
        "unverified": list(dataset.unverified),
        "notes": [],
    }
    notes = report["notes"]
    if len(dataset.val) == 0:
        notes.append("no validation split (data.val_fraction: 0): nothing is validated while training"
                     + ("; the test split is scored at the end" if dataset.test is not None else ""))
    for name, b in (report["classes"] or {}).get("balance", {}).items():
        if b["empty"]:
            notes.append(f"{name}: no examples of class {', '.join(repr(c) for c in b['empty'][:5])}"
                         + (f" and {len(b['empty']) - 5} more" if len(b["empty"]) > 5 else ""))
        elif b["imbalanced"]:
            notes.append(f"{name}: imbalanced classes: {b['largest']!r} has {b['largest_count']:,} examples, "
                         f"{b['smallest']!r} {b['smallest_count']:,} ({b['ratio']:.1f}x, above {IMBALANCE:g}x)")
    if report["normalize"] is not None and not report["normalize"]["applied"]:
        notes.append(f"data.normalize: true, but data.name: {config.data.name} gives no mean and std: "
                     "training would not normalise")
    for name, s in splits.items():
        r = s["value_range"]
        if r and r["nonfinite"]:
            notes.append(f"{name}: {r['nonfinite']:,} non-finite values in the rows read")
    if dataset.unverified:
        notes.append(f"{len(dataset.unverified)} file(s) used without a published digest to verify them")
    return report


# -- the grid of examples ------------------------------------------------------------------------


def label_font(size: int = 12):
    """Pillow's default font at `size` (the bitmap font where Pillow has no FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def draw_label(draw, xy, text: str, font, fill=(0, 0, 0)) -> None:
    """Text on a picture; characters the font cannot draw become '?'."""
    try:
        draw.text(xy, text, fill=fill, font=font)
    except (UnicodeError, ValueError):  # a bitmap font cannot draw every character
        draw.text(xy, text.encode("ascii", "replace").decode(), fill=fill, font=font)


def write_grid(dataset: Dataset, path: Path) -> dict:
    """A PNG of the training split: one row per class (the first GRID_MAX_CLASSES), its first
    GRID_PER_CLASS examples left to right, the class name at the left. Pixels are shown as
    stored: uint8 as they are, float in [0, 1]; float data outside [0, 1] is scaled from its own
    min..max for display (and said so). Returns {path, rows (the class names, in order), ...}."""
    from PIL import Image, ImageDraw

    train = dataset.train
    k = int(dataset.num_classes or 0)
    names = list(dataset.class_names or [str(i) for i in range(k)])
    y = np.asarray(train.y if train.y is not None else np.zeros(len(train), dtype=np.int64))
    rows = names[:GRID_MAX_CLASSES] if k else ["(all)"]
    picks = [np.flatnonzero(y == c)[:GRID_PER_CLASS] for c in range(len(rows))]
    idx = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    x = np.asarray(train.gather(idx)[0]) if idx.size else np.zeros((0, *train.sample_shape), dtype=np.float32)
    c, h, w = train.sample_shape
    display = None
    if x.dtype == np.uint8:
        tiles = x
    else:
        x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            display = [lo, hi]
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        tiles = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    scale = max(1, min(12, -(-GRID_TILE // max(h, w))))
    th, tw, pad = h * scale, w * scale, 4
    font = label_font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [n if len(n) <= LABEL_CHARS else n[:LABEL_CHARS - 1] + "~" for n in rows]
    label_w = int(max((probe.textlength(t, font=font) for t in labels), default=0)) + 2 * pad
    width = label_w + GRID_PER_CLASS * (tw + pad) + pad
    height = len(rows) * (th + pad) + pad
    canvas = Image.new("RGB", (width, height), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    at = 0  # the next tile of `tiles`, which holds the picks row after row
    for r, (label, chosen) in enumerate(zip(labels, picks)):
        top = pad + r * (th + pad)
        draw_label(draw, (pad, top + th // 2 - 6), label, font)
        for col in range(chosen.size):
            tile = np.ascontiguousarray(np.transpose(tiles[at], (1, 2, 0)))
            at += 1
            img = Image.fromarray(np.ascontiguousarray(tile[..., :3] if c >= 3 else tile[..., 0]))  # RGB, or L
            if scale > 1:
                img = img.resize((tw, th), Image.NEAREST)
            canvas.paste(img.convert("RGB"), (label_w + col * (tw + pad), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return {"path": str(path), "rows": rows, "per_row": GRID_PER_CLASS, "examples": [int(p.size) for p in picks],
            "classes_left_out": max(0, k - len(rows)), "display_rescaled_from": display,
            "size": [width, height]}


def inspect(config, grid: Path | str | None = None) -> dict:
    """Load the data as training would and describe it (see `describe`); for images, also write
    the grid of examples to `grid` (None: no grid). The report's "grid" is None when none was
    written."""
    dataset = load(config)
    report = describe(config, dataset)
    report["grid"] = write_grid(dataset, grid) if grid is not None and dataset.kind == "image" else None
    return report


__all__ = ["class_counts", "describe", "free_memory", "inspect", "load", "placement", "value_range",
           "write_grid"]
