"""Tokenizers of a text dataset: characters, or a byte-level BPE trained locally.

`CharTokenizer`: one id per distinct character, in sorted order (as the built-in text datasets
do); saved as `vocab.json` ({"kind": "char", "vocab": [...]}). A character outside the vocabulary
cannot be encoded: `unknown(text)` lists them, and `encode` refuses them.

`BpeTokenizer`: a byte-level BPE (GPT-2 style: every byte has a token, so every text encodes and
`unknown` is always empty) trained on the training text with the `tokenizers` library, nothing
downloaded; saved as the library's own `tokenizer.json` (JSON, no pickle). No prefix space is
added and no special tokens exist, so decode(encode(text)) == text for every text.

Long texts are cut into chunks at places where the byte-level pre-tokenizer always starts a new
piece (before a lone space or newline between two non-space characters), so training on the
chunks and encoding them in parallel (`encode_batch`) give exactly what one call on the whole
text would, without the library keeping per-token strings and offsets of a 100 MB text at once.

`load_tokenizer(directory)` reads either file back (what `airlab sample` uses without the data).
The `tokenizers` package is imported on first use only, so importing this module is cheap.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from airlab.errors import ConfigError, DataError

CHAR_FILE = "vocab.json"
BPE_FILE = "tokenizer.json"
CHUNK_CHARS = 1 << 16  # characters per piece handed to the library (cut at a safe place after this)
BATCH_CHUNKS = 64  # pieces per encode_batch call
_SAFE_CUT = re.compile(r"(?<=\S)[ \n](?=\S)")  # the byte-level pre-tokenizer starts a piece here


def require_tokenizers():
    """The `tokenizers` module, or a ConfigError naming the extra that installs it."""
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("data.tokenizer: bpe needs the tokenizers package: pip install 'airlab[bpe]'") from None
    return tokenizers


def chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """`text` in pieces of about `size` characters, cut only where byte-level BPE pre-tokenization
    would cut anyway (so the pieces tokenize exactly as the whole text does)."""
    pos, n = 0, len(text)
    while pos < n:
        m = _SAFE_CUT.search(text, pos + size) if pos + size < n else None
        end = m.start() if m else n
        yield text[pos:end]
        pos = end


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class CharTokenizer:
    """Characters <-> ids, id i being `vocab[i]`."""

    kind = "char"

    def __init__(self, vocab: list[str]):
        vocab = list(vocab)
        if any(not isinstance(c, str) or len(c) != 1 for c in vocab) or len(set(vocab)) != len(vocab):
            raise DataError("a character vocabulary must list distinct single characters")
        self._vocab = vocab
        self._index = {c: i for i, c in enumerate(vocab)}
        top = max((ord(c) for c in vocab), default=0)
        self._lut = np.full(top + 1, -1, dtype=np.int32)  # code point -> id, -1: not in the vocabulary
        for i, c in enumerate(vocab):
            self._lut[ord(c)] = i

    @classmethod
    def build(cls, text: str) -> "CharTokenizer":
        """The sorted distinct characters of `text` (sorted by code point, as `sorted(set(text))`)."""
        codes = _code_points(text)
        present = np.flatnonzero(np.bincount(codes)) if codes.size else np.array([], dtype=np.int64)
        return cls([chr(int(c)) for c in present])

    @property
    def vocab(self) -> list[str]:
        return list(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)

    def _ids(self, text: str) -> np.ndarray:
        codes = _code_points(text)
        ids = np.full(codes.shape, -1, dtype=np.int32)
        inside = codes < self._lut.shape[0]
        ids[inside] = self._lut[codes[inside]]
        return ids

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in order of appearance."""
        ids = self._ids(text)
        if (ids >= 0).all():
            return []
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of `text`; a DataError when it holds characters outside the vocabulary."""
        ids = self._ids(text)
        if (ids < 0).any():
            bad = self.unknown(text)
            shown = ", ".join(repr(c) for c in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise DataError(f"cannot encode characters that are not in the vocabulary: {shown}",
                            hint="use only characters of the training text")
        return ids

    def decode(self, ids) -> str:
        vocab = self._vocab
        return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))

    def save(self, directory) -> list[str]:
        path = Path(directory) / CHAR_FILE
        path.write_text(json.dumps({"kind": "char", "vocab": self._vocab}, ensure_ascii=False), encoding="utf-8")
        return [CHAR_FILE]

    @classmethod
    def load(cls, directory) -> "CharTokenizer":
        path = Path(directory) / CHAR_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the vocabulary {path}: {e}") from None
        if not isinstance(data, dict) or data.get("kind") != "char" or not isinstance(data.get("vocab"), list):
            raise DataError(f"{path}: not a character vocabulary (expected {{\"kind\": \"char\", \"vocab\": [...]}})")
        try:
            return cls(data["vocab"])
        except DataError as e:
            raise DataError(f"{path}: {e.message}") from None


class BpeTokenizer:
    """A byte-level BPE of the `tokenizers` library; ids are the library's."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self._vocab = [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int) -> "BpeTokenizer":
        """Train on `texts` (one string, or pieces of a text cut with `chunks`) up to `vocab_size`
        tokens (256 bytes + merges; fewer when the text has no more pairs to merge). The same text
        gives the same merges (training is deterministic)."""
        tk = require_tokenizers()
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=int(vocab_size), show_progress=False, special_tokens=[],
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        pieces = chunks(texts) if isinstance(texts, str) else texts
        tok.train_from_iterator(pieces, trainer=trainer)
        return cls(tok)

    @property
    def vocab(self) -> list[str]:
        return list(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)

    def unknown(self, text: str) -> list[str]:
        return []

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of `text` (long texts encoded in chunks, in parallel, with the same result)."""
        parts: list[np.ndarray] = []
        batch: list[str] = []
        for piece in chunks(text):
            batch.append(piece)
            if len(batch) == BATCH_CHUNKS:
                parts.extend(np.asarray(e.ids, dtype=np.int32) for e in self._tok.encode_batch(batch))
                batch = []
        if batch:
            parts.extend(np.asarray(e.ids, dtype=np.int32) for e in self._tok.encode_batch(batch))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def save(self, directory) -> list[str]:
        self._tok.save(str(Path(directory) / BPE_FILE))
        return [BPE_FILE]

    @classmethod
    def load(cls, directory) -> "BpeTokenizer":
        path = Path(directory) / BPE_FILE
        tk = require_tokenizers()
        try:
            tok = tk.Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own Exception for a bad file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DataError(f"cannot read the tokenizer {path}: {first}",
                            hint="it is written by airlab when training on text with data.tokenizer: bpe") from None
        return cls(tok)


def load_tokenizer(directory) -> CharTokenizer | BpeTokenizer | None:
    """The tokenizer saved in `directory` (a run directory or a text cache): tokenizer.json (BPE)
    or vocab.json (characters); None when neither is there."""
    directory = Path(directory)
    if (directory / BPE_FILE).is_file():
        return BpeTokenizer.load(directory)
    if (directory / CHAR_FILE).is_file():
        return CharTokenizer.load(directory)
    return None


__all__ = ["BpeTokenizer", "CharTokenizer", "chunks", "load_tokenizer", "require_tokenizers"]
