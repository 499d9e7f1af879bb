"""`data.name: text` (airlab.data.textfile) and its tokenizers (airlab.data.tokenize): characters
and byte-level BPE, on small generated files; errors name the file."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from airlab.config.schema import DataConfig
from airlab.data import load_dataset
from airlab.data import textfile
from airlab.data.raw import RawData
from airlab.data.tokenize import BpeTokenizer, CharTokenizer, chunks, load_tokenizer
from airlab.errors import DataError

WORDS = ["the", "cat", "sat", "on", "a", "mat", "über", "naïve", "café", "dog", "ran", "far", "away", "and",
         "then", "slept", "日本", "tea"]


def _corpus(n_lines: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + ".\n" for _ in range(n_lines))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))


def _opts(path, **kw) -> DataConfig:
    return DataConfig(name="text", path=str(path), **kw)


# --- characters ---------------------------------------------------------------------------------


def test_char_text_file_splits_like_the_builtin_text_datasets(tmp_path):
    text = _corpus(50)
    f = tmp_path / "corpus.txt"
    f.write_text(text, encoding="utf-8")
    ds = textfile.load(_opts(f, val_fraction=0.1), seed=3)
    assert ds.kind == "text" and ds.tokenizer.kind == "char"
    assert ds.vocab == sorted(set(text))
    n_train = int(len(text) * 0.9)
    assert (len(ds.train), len(ds.val)) == (n_train, len(text) - n_train) and ds.test is None
    assert ds.train.x.dtype == np.int32 and isinstance(ds.train.x, np.memmap)
    assert ds.decode(ds.train.x) + ds.decode(ds.val.x) == text
    # the same ids as a built-in dataset of the same text
    from airlab.data import _split_text
    train, val, vocab = _split_text(RawData(kind="text", text=text), 0.1, None)
    assert vocab == ds.vocab
    np.testing.assert_array_equal(np.asarray(ds.train.x), train.x)
    np.testing.assert_array_equal(np.asarray(ds.val.x), val.x)
    assert ds.meta == {"tokenizer": "char", "vocab_size": len(vocab), "files": 1, "characters": len(text),
                       "tokens": len(text)}
    assert ds.info.vocab_size == len(vocab)
    # through load_dataset, as training calls it
    again = load_dataset("text", seed=0, options=_opts(f, val_fraction=0.1))
    np.testing.assert_array_equal(np.asarray(again.train.x), train.x)


def test_char_tokenizer_round_trip_unknown_and_save(tmp_path):
    tok = CharTokenizer.build("hello, wörld 😀")
    assert tok.vocab == sorted(set("hello, wörld 😀"))
    ids = tok.encode("world 😀")
    assert ids.dtype == np.int32 and tok.decode(ids) == "world 😀"
    assert tok.unknown("hello xyz!") == ["x", "y", "z", "!"]
    with pytest.raises(DataError, match="'x'"):
        tok.encode("x")
    assert tok.save(tmp_path) == ["vocab.json"]
    data = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert data == {"kind": "char", "vocab": tok.vocab}
    back = load_tokenizer(tmp_path)
    assert isinstance(back, CharTokenizer) and back.vocab == tok.vocab
    np.testing.assert_array_equal(back.encode("world 😀"), ids)
    assert load_tokenizer(tmp_path / "nothing-here") is None
    (tmp_path / "vocab.json").write_text('{"kind": "char", "vocab": ["ab"]}')
    with pytest.raises(DataError, match="vocab.json"):
        load_tokenizer(tmp_path)


def test_val_fraction_zero_limit_and_test_fraction(tmp_path):
    text = "abcdefghij" * 10  # 100 characters
    f = tmp_path / "t.txt"
    f.write_text(text)
    ds = textfile.load(_opts(f, val_fraction=0.0), seed=0)
    assert len(ds.train) == 100 and len(ds.val) == 0 and ds.test is None
    ds = textfile.load(_opts(f, val_fraction=0.1, limit=7), seed=0)
    assert (len(ds.train), len(ds.val)) == (7, 7)
    assert ds.meta["tokens"] == 100  # the whole text, before the limit
    # train | test | val, contiguous: val keeps the last tenth whatever test_fraction is
    ds = textfile.load(_opts(f, val_fraction=0.1, test_fraction=0.2), seed=0)
    assert (len(ds.train), len(ds.test), len(ds.val)) == (70, 20, 10)
    assert ds.decode(ds.train.x) + ds.decode(ds.test.x) + ds.decode(ds.val.x) == text
    assert ds.decode(ds.val.x) == text[90:]


def test_folder_of_files_in_path_order_hidden_skipped(tmp_path):
    root = tmp_path / "books"
    (root / "b").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b" / "two.txt").write_text("second\n")
    (root / "a.txt").write_text("first")  # no final newline: one is added
    (root / "c.md").write_text("\ufeffthird", encoding="utf-8")  # a byte order mark is dropped
    (root / ".hidden.txt").write_text("HIDDEN")
    (root / ".git" / "config").write_bytes(b"\xff\xfe binary")
    ds = textfile.load(_opts(root, val_fraction=0.0), seed=0)
    assert ds.decode(ds.train.x) == "first\nsecond\nthird"
    assert ds.meta["files"] == 3 and ds.source == str(root)


def test_not_utf8_file_is_named_with_the_offset(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.txt").write_text("fine text\n")
    (root / "latin.txt").write_bytes("ok café".encode("latin-1"))
    with pytest.raises(DataError) as info:
        textfile.load(_opts(root), seed=0)
    msg = info.value.message
    assert str(root / "latin.txt") in msg and "offset 6" in msg and "0xe9" in msg and "\n" not in msg
    assert info.value.exit_code == 2 and "UTF-8" in info.value.hint


def test_empty_and_missing_text_are_named(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("")
    with pytest.raises(DataError, match=f"{f}: no text"):
        textfile.load(_opts(f), seed=0)
    with pytest.raises(DataError, match="does not exist"):
        textfile.load(_opts(tmp_path / "nope.txt"), seed=0)
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        textfile.load(_opts(tmp_path / "void"), seed=0)
    one = tmp_path / "one.txt"
    one.write_text("x")
    with pytest.raises(DataError, match="at least 2 characters"):
        textfile.load(_opts(one, val_fraction=0.1), seed=0)


def test_cache_is_reused_and_rebuilt_when_the_text_changes(tmp_path, monkeypatch):
    f = tmp_path / "c.txt"
    f.write_text(_corpus(20))
    first = textfile.load(_opts(f), seed=0)
    calls = []
    real = textfile.read_text
    monkeypatch.setattr(textfile, "read_text", lambda files: calls.append(files) or real(files))
    second = textfile.load(_opts(f), seed=0)
    assert second.cache == first.cache and calls == []  # memory-mapped from the cache, not re-read
    np.testing.assert_array_equal(np.asarray(second.train.x), np.asarray(first.train.x))
    f.write_text(_corpus(20, seed=1))
    third = textfile.load(_opts(f), seed=0)
    assert third.cache != first.cache and len(calls) == 1
    # other split options: another cache
    fourth = textfile.load(_opts(f, val_fraction=0.2), seed=0)
    assert fourth.cache != third.cache


# --- byte-level BPE -----------------------------------------------------------------------------


def test_bpe_trains_on_the_training_text_only_and_round_trips(tmp_path):
    text = _corpus(400)
    val_only = "zebra quokka xylophone\n" * 40  # words only the val part holds
    f = tmp_path / "corpus.txt"
    f.write_text(text + val_only, encoding="utf-8")
    frac = len(val_only) / len(text + val_only)
    ds = textfile.load(_opts(f, tokenizer="bpe", vocab_size=2000, val_fraction=frac), seed=0)
    tok = ds.tokenizer
    assert tok.kind == "bpe" and 256 < len(ds.vocab) <= 2000 and ds.meta["vocab_size"] == len(ds.vocab)
    assert ds.info.vocab_size == len(ds.vocab) and tok.unknown("anything ✓") == []
    assert "Ġcat" in ds.vocab  # whole words merged ("Ġ" shows the space byte)
    assert not any("quokka" in t or "zebra" in t for t in ds.vocab)  # no merge learned from val
    leaky = BpeTokenizer.train(text + val_only, 2000)
    assert "Ġquokka" in leaky.vocab  # (what training on val would have learned)
    assert ds.decode(ds.train.x) + ds.decode(ds.val.x) == text + val_only
    assert ds.meta["tokens"] == len(ds.train) + len(ds.val) < ds.meta["characters"]
    unseen = "A new sentence: Ærø, 東京, emoji 😀 and\ttabs\r\n  twice  spaced"
    assert tok.decode(tok.encode(unseen)) == unseen
    (tmp_path / "run").mkdir()
    assert tok.save(tmp_path / "run") == ["tokenizer.json"]
    back = load_tokenizer(tmp_path / "run")
    assert isinstance(back, BpeTokenizer) and back.vocab == tok.vocab
    np.testing.assert_array_equal(back.encode(unseen), tok.encode(unseen))
    head = text[:text.index("\n", 500) + 1]  # whole lines: the ids the training split starts with
    np.testing.assert_array_equal(back.encode(head), np.asarray(ds.train.x[:len(back.encode(head))]))


def test_bpe_training_is_deterministic_and_chunking_changes_nothing():
    text = _corpus(300, seed=5) + "  double  spaces\n\n\nblank lines\t\ttabs\n" * 20
    a, b = BpeTokenizer.train(text, 320), BpeTokenizer.train(text, 320)
    assert a.vocab == b.vocab and len(a.vocab) == 320
    pieces = list(chunks(text, 50))
    assert len(pieces) > 10 and "".join(pieces) == text
    c = BpeTokenizer.train(iter(pieces), 320)  # pieces cut where pre-tokenization cuts anyway
    assert c.vocab == a.vocab
    whole = np.asarray(a._tok.encode(text).ids, dtype=np.int32)
    np.testing.assert_array_equal(a.encode(text), whole)


def test_bpe_vocabulary_may_come_out_smaller_on_a_tiny_text(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("ab ab ab ab\n")
    ds = textfile.load(_opts(f, tokenizer="bpe", vocab_size=4096, val_fraction=0.0), seed=0)
    assert 256 <= len(ds.vocab) < 270 and ds.meta["vocab_size"] == len(ds.vocab)
    assert ds.decode(ds.train.x) == "ab ab ab ab\n"


def test_bpe_without_the_tokenizers_package_names_the_extra(tmp_path, monkeypatch):
    from conftest import without_package

    without_package(monkeypatch, "tokenizers")
    f = tmp_path / "t.txt"
    f.write_text("some text here\n")
    from airlab.errors import ConfigError
    with pytest.raises(ConfigError) as info:
        textfile.load(_opts(f, tokenizer="bpe"), seed=0)
    assert info.value.message == "data.tokenizer: bpe needs the tokenizers package: pip install 'airlab[bpe]'"
    assert info.value.exit_code == 2


def test_importing_the_tokenizer_module_does_not_import_tokenizers():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, airlab.data.textfile, airlab.data.tokenize; "
                          "print('tokenizers' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
