"""`data.name: folder`: the user's own labelled images, in the layouts of torchvision's ImageFolder
and Keras's `image_dataset_from_directory`.

    DIR/<class>/*                     flat: val (and test, by data.test_fraction) carved from the
                                      seed, exactly as a built-in dataset is split
    DIR/train/<class>/*               split: a `train` folder in DIR chooses this layout; val/ and
    DIR/val/<class>/*   (optional)    test/ are used as given, and val is carved from train by
    DIR/test/<class>/*  (optional)    data.val_fraction when val/ is absent

Classes are the sorted names of the class folders (of train/ in the split layout; val/ and test/
may lack some but hold no class train lacks). A class folder's subfolders are read too. Samples
are ordered class by class, each class's files sorted by their path inside the class folder.
Files and folders whose names start with '.' (.ipynb_checkpoints, .DS_Store) are skipped, and so
are files outside the extension allow-list (png, jpg, jpeg, bmp, gif, webp, in any case); the
counts skipped are in `dataset.extra["skipped"]`.

Decoding, with Pillow (only PNG, JPEG, BMP, GIF and WebP decoders are tried, whatever a file's
name says): the EXIF orientation is applied (a phone photo comes out upright), a GIF or animated
WebP gives its first frame, 16-bit grayscale is scaled to 8 bits (65535 -> 255), and a
transparent image is composited onto black (pre-multiplied alpha: a fully transparent pixel is
black whatever colour it stores). Images are converted to `data.channels`: 1 ("L", ITU-R 601-2
luma) or 3 ("RGB"); left unset, 1 when every image is stored grayscale (modes 1, L, LA, I, I;16),
else 3 (palette images count as colour). With `data.image_size: [H, W]`, every image of another
size is resized to it with Pillow's BILINEAR filter (antialiased when shrinking, the default of
both torchvision's Resize and Keras; the aspect ratio is not kept); without it every image must
have the same size. JPEGs much larger than the target are decoded at a reduced scale first
(Pillow's `draft`, the JPEG decoder's DCT scaling), which is several times faster.

The decoded images go once into a memory-mapped cache (airlab.data.cache) keyed by the files'
contents and the options above: uint8 arrays (N, C, H, W) per split, written a chunk at a time by a
thread pool (Pillow releases the GIL while it decodes), so memory stays at one chunk of images.
Every file that cannot be decoded is listed in one DataError; the cache is then not created.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from airlab.data import cache, splits
from airlab.data.base import Dataset
from airlab.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLITS = ("train", "val", "test")
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "WEBP")  # the Pillow decoders tried (JPEG includes MPO)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
RESAMPLE = Image.Resampling.BILINEAR
CHUNK = 256  # images decoded (and held in memory) at a time
SHOW = 5  # bad files named in an error before "and N more"
VERSION = 1  # of the cache's contents: bump when decoding changes

_ORIENTATION = ExifTags.Base.Orientation
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees
_LAYOUT_HELP = "DIR/<class>/*.png, or DIR/train/<class>/*.png (with optional DIR/val/ and DIR/test/)"


@dataclass
class _Scan:
    root: Path
    layout: str  # "flat" | "split"
    classes: list[str]
    files: dict[str, list[Path]] = field(default_factory=dict)  # split -> files, class by class
    labels: dict[str, list[int]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    def ordered(self) -> list[tuple[str, Path]]:
        """(split, file) of every image, split by split, class by class."""
        return [(s, f) for s in SPLITS if s in self.files for f in self.files[s]]


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _subfolders(folder: Path, skipped: Counter) -> list[Path]:
    """The non-hidden folders in `folder`, sorted by name; other entries are counted as skipped."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror})") from None
    out = []
    for entry in entries:
        if _hidden(entry.name):
            skipped["hidden"] += 1
        elif entry.is_dir():
            out.append(Path(entry.path))
        else:
            skipped["outside_class_folders"] += 1
    return out


def _images(class_dir: Path, skipped: Counter) -> list[Path]:
    """The image files under `class_dir` (recursively, hidden entries skipped), sorted by their
    path relative to it."""
    found: list[tuple[str, Path]] = []

    def fail(e: OSError):
        raise DataError(f"{e.filename}: cannot read the folder ({e.strerror})") from None

    seen = {os.path.realpath(class_dir)}  # a linked folder is read once: a link to a parent is no loop
    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=fail, followlinks=True):
        keep = [d for d in dirnames if not _hidden(d)]
        skipped["hidden"] += len(dirnames) - len(keep)
        fresh = []
        for d in sorted(keep):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                fresh.append(d)
        dirnames[:] = fresh
        for name in filenames:
            if _hidden(name):
                skipped["hidden"] += 1
            elif os.path.splitext(name)[1].lower() in EXTENSIONS:
                path = Path(dirpath, name)
                found.append((path.relative_to(class_dir).as_posix(), path))
            else:
                skipped["not_an_image"] += 1
    return [p for _, p in sorted(found)]


def _scan(root: Path) -> _Scan:
    if not root.exists():
        raise DataError(f"data.path {root} does not exist", hint=f"give the folder of your images: {_LAYOUT_HELP}")
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a folder (data.name: folder reads a folder of images)",
                        hint=f"lay your images out as {_LAYOUT_HELP}; a .npz file is read by data.name: npz")
    skipped: Counter = Counter()
    split_layout = (root / "train").is_dir()
    if split_layout:
        folders = {}
        for sub in _subfolders(root, skipped):
            if sub.name not in SPLITS:
                raise DataError(f"{sub}: a folder beside train/ that is not val/ or test/ (a folder with train/ "
                                "in it is read as train/, val/, test/, each holding class folders)",
                                hint="rename it to val or test, or move it out of " + str(root))
            folders[sub.name] = sub
    else:
        folders = {"train": root}
    class_dirs = {name: _subfolders(folder, skipped) for name, folder in folders.items()}
    classes = [d.name for d in class_dirs["train"]]
    where = folders["train"]
    if not classes:
        loose = sum(1 for f in where.iterdir() if f.suffix.lower() in EXTENSIONS) if where.is_dir() else 0
        held = f" (it holds {loose} images directly)" if loose else ""
        raise DataError(f"{where}: found no class folders{held}; the label of an image is the name of its folder",
                        hint=f"lay your images out as {_LAYOUT_HELP}")
    # one class folder is a folder of unlabelled images: an autoencoder or a VAE trains on it; a
    # classifier refuses it (airlab.train.loop._load_data)
    index = {name: i for i, name in enumerate(classes)}
    scan = _Scan(root=root, layout="split" if split_layout else "flat", classes=classes, skipped=skipped)
    empty = []
    for name, dirs in class_dirs.items():
        if not dirs:
            raise DataError(f"{folders[name]}: holds no class folders; {name}/ must hold the same class folders "
                            f"as train/ (or be removed)", hint=f"lay your images out as {_LAYOUT_HELP}")
        files, labels = [], []
        for d in dirs:
            if d.name not in index:
                raise DataError(f"{d}: class {d.name!r} is not a class of {folders['train']} "
                                f"(classes: {', '.join(classes)})",
                                hint=f"{name}/ may only hold class folders that train/ has: rename or remove it")
            found = _images(d, skipped)
            if not found:
                empty.append(d)
            files += found
            labels += [index[d.name]] * len(found)
        scan.files[name], scan.labels[name] = files, labels
    if empty:
        more = f" and {len(empty) - SHOW} more" if len(empty) > SHOW else ""
        raise DataError(f"{len(empty)} class folder{'s' if len(empty) > 1 else ''} without any image "
                        f"({', '.join(EXTENSIONS)}): " + ", ".join(str(d) for d in empty[:SHOW]) + more,
                        hint="add images to them or remove them")
    return scan


# --- decoding --------------------------------------------------------------------------------


def _reason(e: Exception) -> str:
    if isinstance(e, Image.UnidentifiedImageError):
        return "not a PNG, JPEG, BMP, GIF or WebP image, or damaged"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "truncated" in text.lower():
        return "truncated"
    if isinstance(e, OSError) and getattr(e, "strerror", None):
        return e.strerror
    return text[:120]


def _orientation(im: Image.Image) -> int:
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # a PNG's EXIF chunk after the pixels is read (and applied) only when decoding
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: decoding ignores it too
        return 1


def _header(path: Path) -> tuple[tuple[int, int], bool] | str:
    """((height, width) as displayed, stored grayscale?) from the file's header, or why not."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path, formats=FORMATS) as im:
            w, h = im.size
            if _orientation(im) in _SWAPS_AXES:
                w, h = h, w
            return (h, w), im.mode in GRAY_MODES
    except Exception as e:  # any decoder's complaint about a user's file is a reason, not a crash
        return _reason(e)


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """`im` as "L" or "RGB": 16-bit scaled, alpha composited onto black, palettes expanded."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "RGBa", "LA", "La"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _decode(path: Path, channels: int, size: tuple[int, int] | None, resize: bool) -> np.ndarray | str:
    """The image at `path` as uint8 (C, H, W) of `size` (resized when `resize`, else a size other
    than `size` is a reason), or the reason it cannot be read. size None: any size (validation)."""
    try:
        with Image.open(path, formats=FORMATS) as im:
            if resize and size is not None and im.format == "JPEG":
                h, w = size
                want = (h, w) if _orientation(im) in _SWAPS_AXES else (w, h)
                im.draft(None, want)  # DCT scaling by a power of 2, never below `want`
            im.load()  # the first frame's pixels: a truncated or damaged file fails here
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # a damaged EXIF block: the pixels as stored (the header read them so)
                pass
            im = _to_mode(im, channels)
            if size is not None and im.size != (size[1], size[0]):
                if not resize:
                    return (f"{im.size[1]}x{im.size[0]} after its EXIF orientation, unlike the others' "
                            f"{size[0]}x{size[1]} (set data.image_size: [H, W])")
                im = im.resize((size[1], size[0]), RESAMPLE)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # any decoder's complaint about a user's file is a reason, not a crash
        return _reason(e)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _workers() -> int:
    from airlab.train.threads import cores

    return max(1, min(32, cores().usable))


def _bad_files_error(root: Path, bad: list[tuple[Path, str]], total: int) -> DataError:
    shown = "; ".join(f"{_rel(root, p)} ({why})" for p, why in bad[:SHOW])
    more = f"; and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
    return DataError(f"{root}: {len(bad)} of {total} image files cannot be read: {shown}{more}",
                     hint="replace or remove them (or re-export them as PNG or JPEG), then run again")


def _writer(scan: _Scan, image_size, channels_opt):
    """The cache writer of `scan`: decodes every file into x_<split>, y_<split>."""

    def write(tmp: Path) -> dict:
        root = scan.root
        order = scan.ordered()
        total = len(order)
        bad: list[tuple[Path, str]] = []
        with ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="airlab-decode") as pool:
            headers: list = []
            for start in range(0, total, 4 * CHUNK):  # a bounded number of pending tasks
                headers += pool.map(_header, [f for _, f in order[start:start + 4 * CHUNK]])
            good = [(f, h) for (_, f), h in zip(order, headers) if not isinstance(h, str)]
            bad += [(f, h) for (_, f), h in zip(order, headers) if isinstance(h, str)]
            if not good:
                raise _bad_files_error(root, bad, total)
            channels = channels_opt or (1 if all(gray for _, (_, gray) in good) else 3)
            resize = image_size is not None
            size = tuple(image_size) if resize else good[0][1][0]
            if not resize:
                other = next(((f, h) for f, (h, _) in good if h != size), None)
                if other is not None:
                    if not bad:
                        first = good[0][0]
                        raise DataError(f"{root}: images differ in size: {_rel(root, first)} is {size[0]}x{size[1]} "
                                        f"and {_rel(root, other[0])} is {other[1][0]}x{other[1][1]} (height x width)",
                                        hint="set data.image_size: [H, W] to resize every image to one size")
                    size = None  # only find every unreadable file, then report them
            manifest = {"layout": scan.layout, "class_names": scan.classes, "channels": channels,
                        "image_size": list(size) if size else None, "version": VERSION, "counts": {},
                        "class_counts": {}, "skipped": dict(scan.skipped)}
            for split in SPLITS:
                if split not in scan.files:
                    continue
                files, labels = scan.files[split], np.asarray(scan.labels[split], dtype=np.int64)
                known_bad = {f for f, _ in bad}
                n = len(files)
                out = None if size is None else cache.new_array(tmp, f"x_{split}", (n, channels, *size), np.uint8)
                for start in range(0, n, CHUNK):
                    chunk = files[start:start + CHUNK]
                    decoded = pool.map(lambda f: None if f in known_bad else _decode(f, channels, size, resize), chunk)
                    for i, (f, a) in enumerate(zip(chunk, decoded)):
                        if a is None:
                            continue  # found unreadable by its header
                        if isinstance(a, str):
                            bad.append((f, a))
                        elif out is not None and not bad:
                            out[start + i] = a
                if out is not None:
                    out.flush()
                    del out
                cache.new_array(tmp, f"y_{split}", (n,), np.int64)[:] = labels
                manifest["counts"][split] = n
                manifest["class_counts"][split] = np.bincount(labels, minlength=len(scan.classes)).tolist()
        if bad:
            position = {f: i for i, (_, f) in enumerate(order)}
            bad.sort(key=lambda b: position[b[0]])
            raise _bad_files_error(root, bad, total)
        return manifest

    return write


def load(options, *, seed: int) -> Dataset:
    """The folder at `options.path` as an image Dataset of uint8 (N, C, H, W) memory-mapped from
    the cache (decoded on the first load, reused while the files are unchanged)."""
    root = Path(str(options.path)).expanduser()
    scan = _scan(root)
    image_size = list(options.image_size) if options.image_size is not None else None
    channels_opt = int(options.channels) if options.channels is not None else None
    key = cache.content_key([f for _, f in scan.ordered()], root=root,
                            options={"image_size": image_size, "channels": channels_opt, "layout": scan.layout,
                                     "classes": scan.classes, "version": VERSION})
    cache_dir, manifest = cache.build("folder", key, _writer(scan, image_size, channels_opt))

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray] | None:
        if split not in manifest["counts"]:
            return None
        return cache.open_array(cache_dir, f"x_{split}"), np.array(cache.open_array(cache_dir, f"y_{split}"))

    classes = list(manifest["class_names"])
    channels, size = int(manifest["channels"]), list(manifest["image_size"])
    extra = {"layout": scan.layout, "channels": channels, "image_size": size, "dtype": "uint8",
             "files": dict(manifest["counts"]), "skipped": dict(scan.skipped),
             "channels_from": "config" if channels_opt else "images"}
    ds = splits.image_dataset("folder", options, seed, train=arrays("train"), val=arrays("val"),
                              test=arrays("test"), class_names=classes, source=str(root),
                              cache=str(cache_dir), extra=extra)
    ds.extra["counts"] = {name: len(split) for name, split in ds.splits().items()}
    ds.extra["class_counts"] = {
        name: dict(zip(classes, np.bincount(split.y, minlength=len(classes)).tolist()))
        for name, split in ds.splits().items()}
    ds.meta = {"class_names": classes, "channels": channels, "image_size": size, "layout": scan.layout}
    return ds


__all__ = ["EXTENSIONS", "load"]
