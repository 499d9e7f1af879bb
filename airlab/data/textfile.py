"""`data.name: text`: the user's own text, a UTF-8 file or a folder of them, as token ids.

    data: {name: text, path: corpus.txt}                                  # characters
    data: {name: text, path: books/, tokenizer: bpe, vocab_size: 4096}    # byte-level BPE

Files. `data.path` is one file, or a folder whose every regular file (recursively, hidden files
and folders skipped) is read in the order of their paths relative to the folder. Files are
concatenated as they are, with a "\\n" added after a file that does not end with one, so no two
files share a line. A UTF-8 byte order mark at the start of a file is dropped; line endings are
kept as written. A file that is not UTF-8 is refused, naming the file and the offset of its first
bad byte (binary files in the folder included: remove them). No text at all is refused.

Splits, by characters, as the built-in text datasets: the first (1 - val_fraction) of the text
trains and the rest validates (val_fraction 0: an empty val split). `data.test_fraction` carves a
test part just before val: train | test | val, each contiguous (the last val_fraction of the text
validates whatever test_fraction is). `data.limit` keeps the first `limit` tokens of each part.

Tokens. `tokenizer: char` (the default): one id per distinct character of the WHOLE text, sorted
(so val never holds a character the vocabulary lacks, as with the built-ins). `tokenizer: bpe`: a
byte-level BPE trained with the `tokenizers` library on the TRAINING part only (nothing of val or
test leaks into the merges), up to `data.vocab_size` tokens (a small text may give fewer; the
real size is what the model gets). The text is cut into its parts first and each part encoded on
its own, so no token straddles a boundary.

Cache. The ids (int32) and the tokenizer are written once into a cache directory keyed by the
files' contents and the options that shape them (airlab.data.cache), and memory-mapped on every
run after: encoding 100 MB with BPE happens once, and a changed file builds a new cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from airlab.data import cache
from airlab.data.base import Dataset, Split
from airlab.data.splits import text_cuts
from airlab.data.tokenize import BpeTokenizer, CharTokenizer, load_tokenizer, require_tokenizers
from airlab.errors import DataError

CACHE_VERSION = 1
log = logging.getLogger("airlab.data")


def text_files(path: Path) -> list[Path]:
    """The files of `path` (a file: itself; a folder: every non-hidden regular file below it,
    sorted by relative path), or a DataError naming the path."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist", hint="give a UTF-8 text file or a folder of them")
    if not path.is_dir():
        raise DataError(f"data.path: {path} is neither a file nor a folder")
    found = []
    for f in path.rglob("*"):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue
        found.append((rel.as_posix(), f))
    if not found:
        raise DataError(f"data.path: the folder {path} holds no files", hint="put UTF-8 text files in it")
    return [f for _, f in sorted(found)]


def _decode(f: Path) -> str:
    try:
        raw = f.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {f}: {e.strerror}") from None
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a byte order mark is not text
    try:
        return str(memoryview(raw)[skip:], "utf-8")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        raise DataError(f"{f}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset} is not valid UTF-8)",
                        hint="convert it to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8), or move it out of data.path"
                        ) from None


def read_text(files: list[Path]) -> str:
    """The files' text, concatenated with a newline after any file that does not end with one."""
    parts = []
    for i, f in enumerate(files):
        text = _decode(f)
        if i < len(files) - 1 and text and not text.endswith("\n"):
            text += "\n"
        parts.append(text)
    return "".join(parts)


def _writer(files: list[Path], kind: str, vocab_size: int, val_fraction: float, test_fraction: float):
    def write(tmp: Path) -> dict:
        text = read_text(files)
        if not text:
            where = files[0] if len(files) == 1 else f"every file under {files[0].parent}"
            raise DataError(f"{where}: no text (empty)", hint="data.name: text needs some text to train on")
        n = len(text)
        end_train, end_test = text_cuts(n, val_fraction, test_fraction)
        parts = [text[:end_train], text[end_train:end_test], text[end_test:]]  # train, test, val
        log.info("text: tokenizing %s characters of %d file(s) with %s, once (the ids are cached)",
                 f"{n:,}", len(files), "byte-level BPE" if kind == "bpe" else "characters")
        if kind == "bpe":
            tok = BpeTokenizer.train(parts[0], vocab_size)
            encoded = [tok.encode(p) for p in parts]
        else:
            tok = CharTokenizer.build(text)
            del text
            encoded = [tok.encode(p) for p in parts]
        total = sum(int(e.shape[0]) for e in encoded)
        ids = cache.new_array(tmp, "ids", (total,), np.int32)
        at = 0
        for e in encoded:
            ids[at:at + e.shape[0]] = e
            at += e.shape[0]
        ids.flush()
        del ids
        tok.save(tmp)
        return {"tokenizer": kind, "vocab_size": len(tok.vocab), "files": len(files), "characters": n,
                "tokens": total, "train_tokens": int(encoded[0].shape[0]), "test_tokens": int(encoded[1].shape[0]),
                "val_tokens": int(encoded[2].shape[0]),
                "split_characters": [end_train, end_test - end_train, n - end_test]}
    return write


def load(options, *, seed: int) -> Dataset:
    """The text dataset of `options` (the config's data section: path, tokenizer, vocab_size,
    val_fraction, test_fraction, limit). `seed` does not change a text split (it is contiguous)."""
    path = Path(str(options.path)).expanduser()
    kind = str(getattr(options, "tokenizer", "char") or "char")
    vocab_size = int(getattr(options, "vocab_size", 512) or 512)
    val_fraction = float(options.val_fraction)
    test_fraction = float(getattr(options, "test_fraction", 0.0) or 0.0)
    limit = options.limit
    if kind == "bpe":
        require_tokenizers()  # before reading any file
    files = text_files(path)
    root = path if path.is_dir() else None
    key = cache.content_key(files, {"tokenizer": kind, "vocab_size": vocab_size if kind == "bpe" else None,
                                    "val_fraction": val_fraction, "test_fraction": test_fraction,
                                    "version": CACHE_VERSION}, root)
    directory, manifest = cache.build("text", key, _writer(files, kind, vocab_size, val_fraction, test_fraction))
    tok = load_tokenizer(directory)
    ids = cache.open_array(directory, "ids")
    try:
        n_train, n_test, n_val = (int(manifest[k]) for k in ("train_tokens", "test_tokens", "val_tokens"))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"the data cache {directory} is damaged (its manifest lacks the split sizes)",
                        hint=f"delete {directory} and run again to rebuild it") from None
    if tok is None or ids.ndim != 1 or ids.shape[0] != n_train + n_test + n_val:
        raise DataError(f"the data cache {directory} is damaged (ids.npy or the tokenizer)",
                        hint=f"delete {directory} and run again to rebuild it")

    def part(start: int, count: int) -> Split:
        stop = start + (count if limit is None else min(count, int(limit)))
        return Split(ids[start:stop])

    train = part(0, n_train)
    test = part(n_train, n_test) if test_fraction > 0 else None
    val = part(n_train + n_test, n_val)
    meta = {"tokenizer": kind, "vocab_size": len(tok.vocab), "files": int(manifest["files"]),
            "characters": int(manifest["characters"]), "tokens": int(manifest["tokens"])}
    extra = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": int(seed), "limit": limit,
             "tokenizer": kind, "split_characters": manifest.get("split_characters"),
             "split_tokens": {"train": n_train, "test": n_test, "val": n_val}}
    if kind == "bpe":
        extra["vocab_size_requested"] = vocab_size
    return Dataset(name="text", kind="text", train=train, val=val, test=test, vocab=tok.vocab, tokenizer=tok,
                   source=str(path), cache=str(directory), meta=meta, extra=extra)


__all__ = ["load", "read_text", "text_files"]
