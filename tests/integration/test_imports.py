"""Rule 2: `airlab --help`, `validate`, `models` and config errors never import a framework.

Each case runs in a fresh interpreter, calls the CLI seam (or imports a module), then reports
which heavy modules ended up in sys.modules.
"""

from __future__ import annotations

import json
import textwrap

import pytest

HEAVY = ("torch", "tensorflow", "keras", "jax")

PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    argv = json.loads(sys.argv[1])
    imports = json.loads(sys.argv[2])
    code = None
    for name in imports:
        if name.startswith("!"):  # hide an installed package: find_spec and import see None
            sys.modules[name[1:]] = None
        else:
            __import__(name)
    if argv is not None:
        from airlab.cli.main import run
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = run(argv)
    heavy = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in {heavy})
    print(json.dumps({{"code": code, "heavy": heavy}}))
""").format(heavy=set(HEAVY))


def probe(airlab_proc, argv=None, imports=()):
    r = airlab_proc(json.dumps(argv), json.dumps(list(imports)), code=PROBE)
    assert r.code == 0, r.err
    return json.loads(r.out.strip().splitlines()[-1])


@pytest.fixture
def bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: mlp\n  hiden: [3]\n")
    return path


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["--version"], 0),
    (["validate", "configs/quickstart.yaml"], 0),
    (["validate", "configs/transformer.yaml", "--json"], 0),
    (["models"], 0),
    (["models", "*vae*", "--json"], 0),
    (["train", "--help"], 0),
    (["train", "configs/quickstart.yaml", "model.name=cnnn"], 2),
    (["train"], 2),
], ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_light_commands_import_no_framework(airlab_proc, argv, code):
    got = probe(airlab_proc, argv)
    assert got["code"] == code
    assert got["heavy"] == []


def test_a_missing_backend_exits_4_importing_no_framework(airlab_proc):
    got = probe(airlab_proc, ["train", "configs/quickstart.yaml", "--backend", "tensorflow"], imports=["!tensorflow"])
    assert got["code"] == 4
    assert got["heavy"] == []


def test_a_bad_config_train_imports_no_framework(airlab_proc, bad_config):
    got = probe(airlab_proc, ["train", str(bad_config)])
    assert got["code"] == 2
    assert got["heavy"] == []


@pytest.mark.parametrize("module", ["airlab", "airlab.cli.main", "airlab.config", "airlab.registry",
                                    "airlab.train.loop", "airlab.train.checkpoint", "airlab.backends",
                                    "airlab.data", "airlab.tasks", "airlab.specs.transformer"])
def test_importing_core_modules_imports_no_framework(airlab_proc, module):
    assert probe(airlab_proc, imports=[module])["heavy"] == []


def test_the_probe_can_see_a_framework(airlab_proc):
    # guards the guard: the probe must report torch when torch is imported
    pytest.importorskip("torch")
    assert "torch" in probe(airlab_proc, imports=["airlab.backends.torch.backend"])["heavy"]
