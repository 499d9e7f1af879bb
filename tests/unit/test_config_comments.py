"""The shipped configs cite only files that are in the repository.

A comment naming a file (`results.md`, `configs/mlp.yaml`) sends the reader looking for it; a
published figure is stated in the comment with its source instead. Globs (`samples/*-text.txt`)
are patterns of a run's outputs, not files in the repository, and are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.is_file())
FILE = re.compile(r"(?<![\w/.*-])([\w./*-]+\.(?:md|rst|txt|json|ya?ml|py|csv|png|npz|ipynb))\b")


def cited_files(text: str) -> list[tuple[int, str]]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        _, hash_, comment = line.partition("#")
        if hash_:
            found += [(lineno, m.group(1)) for m in FILE.finditer(comment) if "*" not in m.group(1)]
    return found


def test_the_scanner_finds_file_names_in_comments():
    text = ('# Targets results.md row "x"\nname: a  # see docs/notes.txt\n'
            "# Samples: samples/*-text.txt; airlab train configs/mlp.yaml; 98.40 % (Keras mnist_mlp example)\n")
    assert cited_files(text) == [(1, "results.md"), (2, "docs/notes.txt"), (3, "configs/mlp.yaml")]


def test_there_are_configs():
    assert len(CONFIGS) >= 7


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_a_config_cites_no_file_missing_from_the_repository(config):
    missing = [f"{config.relative_to(ROOT)}:{lineno}: {name}" for lineno, name in cited_files(config.read_text())
               if not ((ROOT / name).exists() or (config.parent / name).exists())]
    assert not missing, f"cites files not in the repository (state the figure and its source instead): {missing}"
