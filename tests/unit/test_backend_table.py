"""The backend table is the one place that says which backends exist: every reference in it
resolves, and the modules that used to spell the backends out read it instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airlab.backends import table

PACKAGE = Path(__file__).resolve().parents[2] / "airlab"

# modules that must take the backends from the table, never name one themselves
READERS = ["registry.py", "backends/__init__.py", "config/schema.py", "bench/backends.py", "cli/doctor.py",
           "cli/setup.py", "doctor/core.py", "interop/convert.py", "interop/weights.py", "doctor/checks/registry.py",
           "doctor/checks/gpu.py", "doctor/checks/__init__.py"]


def _module_file(dotted: str) -> Path:
    parts = dotted.partition(":")[0].split(".")
    assert parts[0] == "airlab", dotted
    base = PACKAGE.joinpath(*parts[1:])
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


@pytest.mark.parametrize("row", table.ROWS, ids=lambda r: r.name)
def test_every_reference_of_a_row_resolves_to_a_file(row):
    for ref in (row.implementation, row.bench, row.weights, row.setup_planner, row.builder("mlp"), row.doctor):
        assert _module_file(ref).is_file(), ref
    assert set(row.devices) <= {"cpu", "cuda", "mps"} and row.rng_parts
    assert (PACKAGE / "doctor" / "probes" / row.probe).is_file()


def test_names_and_aliases_are_unique_and_canonical():
    names = [n for row in table.ROWS for n in (row.name, *row.aliases)]
    assert len(names) == len(set(names))
    for row in table.ROWS:
        assert table.canonical(row.name.upper()) == row.name
        assert all(table.canonical(alias) == row.name for alias in row.aliases)
    assert table.canonical("nosuch") is None


def test_the_weight_converters_need_no_framework():
    import subprocess
    import sys

    mods = ", ".join(row.weights for row in table.ROWS)
    code = (f"import importlib, sys\nfor m in {mods!r}.split(', '): importlib.import_module(m)\n"
            "print(sorted({'torch', 'tensorflow', 'keras'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("path", READERS)
def test_modules_that_read_the_table_name_no_backend(path):
    tree = ast.parse((PACKAGE / path).read_text())
    names = {n for row in table.ROWS for n in (row.name, *row.aliases)}
    found = [(node.lineno, node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    assert not found, f"{path} spells out backends {found}: read airlab/backends/table.py instead"
