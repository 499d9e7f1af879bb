"""The CLI: exit codes, one-line errors with hints, tables and JSON, --dry-run, --version."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap

import pytest

import airlab
from airlab import registry
from conftest import CONFIGS, SHAPES_TINY

QUICK = CONFIGS / "quickstart.yaml"
SIX = ["autoencoder", "cnn", "mlp", "rnn", "transformer", "vae"]


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def bad_config(tmp_path):
    return write(tmp_path / "bad.yaml", """
        name: bad
        model:
          name: mlp
          hidden: [8]
        train:
          lrr: 0.1
        """)


# --- errors and exit codes ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "validate"])
def test_bad_config_exits_2_with_file_line_first(airlab_cli, bad_config, command):
    r = airlab_cli(command, bad_config)
    assert r.code == 2
    assert r.err_lines[0].startswith(f"error: {bad_config}:6:3: train.lrr: unknown key 'lrr'")
    assert "did you mean 'lr'?" in r.err_lines[0]
    assert r.err_lines[-1].startswith("hint: ")
    assert len(r.err_lines) == 2
    assert r.out == ""


def test_several_problems_are_all_printed(airlab_cli, tmp_path):
    path = write(tmp_path / "bad.yaml", """
        model:
          name: mlp
          hiden: [8]
        train:
          lrr: 0.1
        """)
    r = airlab_cli("validate", path)
    assert r.code == 2
    assert r.err_lines[0] == "error: 2 config problems:"
    assert any(f"{path}:3:3: model.hiden" in line for line in r.err_lines)
    assert any(f"{path}:5:3: train.lrr" in line for line in r.err_lines)


@pytest.mark.parametrize("command", ["train", "validate"])
def test_unknown_model_exits_2_with_did_you_mean(airlab_cli, command):
    r = airlab_cli(command, QUICK, "model.name=cnnn")
    assert r.code == 2
    assert "unknown model 'cnnn'; did you mean 'cnn'" in r.err_lines[0]
    assert "override 'model.name=cnnn'" in r.err_lines[0]


@pytest.mark.parametrize("command", ["train", "validate"])
def test_missing_config_file_exits_2(airlab_cli, tmp_path, command):
    r = airlab_cli(command, tmp_path / "nope.yaml")
    assert r.code == 2
    assert r.err_lines[0] == f"error: {tmp_path / 'nope.yaml'}: config file not found"
    assert r.err_lines[1].startswith("hint:")


def test_a_dataset_missing_offline_is_one_error_line_then_hint_then_details(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_OFFLINE", "1")
    monkeypatch.setenv("AIRLAB_DATA_DIR", str(tmp_path / "data"))
    r = airlab_cli("train", CONFIGS / "mlp.yaml", "--run-dir", tmp_path / "run")
    assert r.code == 2, r.err
    lines = r.err.splitlines()
    assert lines[0].startswith("error: dataset 'mnist': 4 file(s) missing (") and "AIRLAB_OFFLINE is set" in lines[0]
    assert str(tmp_path / "data") in lines[0]
    assert lines[1].startswith("hint: download the files from one of the URLs below")
    assert all(line.startswith("  ") for line in lines[2:]) and any("sha256 " in line for line in lines[2:])
    assert "Traceback" not in r.err


def test_train_with_no_arguments_exits_2(airlab_cli):
    r = airlab_cli("train")
    assert r.code == 2
    assert r.err_lines[0] == "error: train needs a CONFIG file (or --resume RUN_DIR)"
    assert "airlab train configs/quickstart.yaml" in r.err_lines[1]


def test_train_with_an_override_before_the_config(airlab_cli):
    r = airlab_cli("train", "train.lr=0.1", QUICK)
    assert r.code == 2
    assert "expected the CONFIG file first" in r.err


@pytest.mark.parametrize("argv", [["train", str(QUICK), "--bogus"], ["models", "--nope"], ["frobnicate"],
                                  ["sample"], ["validate"], ["sample", "x", "--n", "0"]])
def test_usage_errors_exit_2_with_a_help_hint(airlab_cli, argv):
    r = airlab_cli(*argv)
    assert r.code == 2
    assert r.err_lines[0].startswith("error: ")
    assert r.err_lines[-1].startswith("hint: see `airlab")
    assert "Traceback" not in r.err


def test_missing_tensorflow_backend_exits_4_with_a_message(airlab_cli, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "tensorflow" else real(name, *a, **k))
    r = airlab_cli("train", QUICK, "--backend", "tensorflow", *SHAPES_TINY)
    assert r.code == 4
    assert r.err_lines[0].startswith("error: ") and "tensorflow" in r.err_lines[0]
    assert r.err_lines[1].startswith('hint: install it with: pip install "airlab[tf]"')
    assert "Traceback" not in r.err


def test_missing_torch_exits_4_with_an_install_hint(airlab_cli, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "torch" else real(name, *a, **k))
    r = airlab_cli("train", QUICK, *SHAPES_TINY, "--run-dir", tmp_path / "run")
    assert r.code == 4
    assert "'torch' package" in r.err_lines[0]
    assert 'pip install "airlab[torch]"' in r.err_lines[1]
    assert not (tmp_path / "run").exists()


def test_unexpected_errors_exit_1_without_a_traceback(airlab_cli, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr("airlab.config.load_config", boom)
    r = airlab_cli("validate", QUICK)
    assert r.code == 1
    assert r.err_lines[0] == "error: unexpected RuntimeError: kaboom"
    assert "AIRLAB_DEBUG=1" in r.err_lines[1]
    assert "Traceback" not in r.err


def test_unexpected_errors_raise_with_airlab_debug(airlab_cli, monkeypatch):
    monkeypatch.setenv("AIRLAB_DEBUG", "1")
    monkeypatch.setattr("airlab.config.load_config", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("kaboom")))
    with pytest.raises(RuntimeError, match="kaboom"):
        airlab_cli("validate", QUICK)


def test_errors_in_a_real_process_one_line_plus_hint_no_traceback(airlab_proc, bad_config):
    r = airlab_proc("train", bad_config)
    assert r.code == 2
    lines = r.err.splitlines()
    assert len(lines) == 2, r.err
    assert lines[0].startswith(f"error: {bad_config}:6:3:")
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in r.err
    assert r.out == ""


@pytest.mark.parametrize("value", ["1", "true"])
def test_airlab_debug_shows_the_traceback(airlab_proc, bad_config, value):
    r = airlab_proc("train", bad_config, env={"AIRLAB_DEBUG": value})
    assert r.code == 2
    assert "Traceback (most recent call last)" in r.err
    assert "airlab.errors.ConfigError" in r.err
    assert r.err.rstrip().splitlines()[-2].startswith("error: ")  # the one line still ends it


def test_airlab_debug_0_is_off(airlab_proc, bad_config):
    r = airlab_proc("validate", bad_config, env={"AIRLAB_DEBUG": "0"})
    assert r.code == 2 and "Traceback" not in r.err


def test_exit_code_of_a_real_process_for_a_missing_backend(airlab_proc):
    hide_tensorflow = ("import sys; sys.modules['tensorflow'] = None; from airlab.cli.main import run; "
                       "sys.exit(run(sys.argv[1:]))")
    r = airlab_proc("train", QUICK, "--backend", "tensorflow", *SHAPES_TINY, code=hide_tensorflow)
    assert r.code == 4
    assert len(r.err.splitlines()) == 2 and "Traceback" not in r.err


# --- models ------------------------------------------------------------------------------------


def table_names(text: str) -> list[str]:
    """Model names in the first column of the rich table (a wrapped row continues with a blank)."""
    return re.findall(r"^[│|] ([a-z]+) +[│|]", text, flags=re.M)


def test_models_lists_six_with_params(airlab_cli):
    r = airlab_cli("models")
    assert r.code == 0
    assert table_names(r.out) == SIX
    for name in SIX:
        assert re.search(rf"\b{name}\b", r.out), name
        cls = registry.spec_class(name)
        assert f"{cls().num_params(cls.default_data):,}" in r.out


def test_models_pattern(airlab_cli):
    r = airlab_cli("models", "*vae*")
    assert r.code == 0
    assert table_names(r.out) == ["vae"]
    assert table_names(airlab_cli("models", "nn").out) == ["cnn", "rnn"]


def test_models_json(airlab_cli):
    r = airlab_cli("models", "--json")
    assert r.code == 0
    rows = json.loads(r.out)
    assert [row["name"] for row in rows] == SIX
    for row in rows:
        cls = registry.spec_class(row["name"])
        assert row["params"] == cls().num_params(cls.default_data)
        assert row["backends"] == ["torch", "tensorflow"]
        assert row["task"] == registry.get_model(row["name"]).task
    assert [row["name"] for row in json.loads(airlab_cli("models", "*n", "--json").out)] == ["cnn", "rnn"]


# --- validate ----------------------------------------------------------------------------------


def test_validate_ok_line(airlab_cli):
    r = airlab_cli("validate", QUICK)
    assert r.code == 0
    from airlab.config import load_config

    cfg = load_config(QUICK)
    params = cfg.model.num_params(type(cfg.model).default_data)
    assert r.out_lines == [f"{QUICK}: ok — model cnn (classification, {params:,} params at (1, 28, 28) input), "
                           f"data shapes, backend torch, device {cfg.device}"]


def test_validate_json_is_the_resolved_config(airlab_cli):
    from airlab.config import load_config, to_dict

    r = airlab_cli("validate", QUICK, "train.lr=3e-4", "--json")
    assert r.code == 0
    data = json.loads(r.out)
    assert data == to_dict(load_config(QUICK, ["train.lr=3e-4"]))
    assert data["train"]["lr"] == 3e-4


def test_validate_print_shows_resolved_yaml(airlab_cli):
    from airlab.config import load_config, to_yaml

    r = airlab_cli("validate", QUICK, "--print")
    assert r.code == 0
    assert r.out.startswith(to_yaml(load_config(QUICK)))


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_prints_config_layers_and_params_and_writes_nothing(airlab_cli, tmp_path, monkeypatch):
    from airlab.config import load_config, to_yaml
    from airlab.data import load_dataset

    monkeypatch.chdir(tmp_path)
    overrides = [*SHAPES_TINY, "model.channels=[4,8]", "model.dense=[16]", "device=cpu",
                 f"output.runs_root={tmp_path / 'runs'}"]
    r = airlab_cli("train", QUICK, *overrides, "--dry-run", "--run-dir", tmp_path / "run")
    assert r.code == 0, r.err
    cfg = load_config(QUICK, overrides)
    assert "# resolved config" in r.out
    assert to_yaml(cfg) in r.out
    ds = load_dataset("shapes", size=512, limit=256)
    params = cfg.model.num_params(ds.info)
    assert f"parameters: {params:,} " in r.out
    for layer in ("features.0", "Conv2d", "head.0", "Linear", "MaxPool2d"):  # the layer table
        assert layer in r.out
    assert re.search(r"\((B|2), 10\)", r.out)  # the logits' output shape
    assert "dry run: nothing trained" in r.out
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()
    assert list(tmp_path.iterdir()) == []


def test_dry_run_of_a_bad_config_is_a_config_error(airlab_cli, bad_config):
    assert airlab_cli("train", bad_config, "--dry-run").code == 2


# --- misc --------------------------------------------------------------------------------------


def test_version(airlab_cli, airlab_proc):
    r = airlab_cli("--version")
    assert r.code == 0 and r.out.strip() == f"airlab {airlab.__version__}"
    p = airlab_proc("--version")
    assert p.code == 0 and p.out.strip() == f"airlab {airlab.__version__}"


def test_help_lists_commands(airlab_cli):
    r = airlab_cli("--help")
    assert r.code == 0
    for command in ("train", "validate", "models", "sample"):
        assert command in r.out


@pytest.mark.parametrize("command", ["train", "validate", "models", "sample"])
def test_every_command_help_ends_with_an_example(airlab_cli, command):
    r = airlab_cli(command, "--help")
    assert r.code == 0
    assert f"Example: airlab {command}" in r.out


def test_no_arguments_shows_help(airlab_proc):
    r = airlab_proc()
    assert r.code == 0  # bare `airlab` is `airlab --help`
    assert r.out.startswith("Usage: airlab") and "train" in r.out
    assert r.err == ""


def test_sample_of_a_missing_directory(airlab_cli, tmp_path):
    r = airlab_cli("sample", tmp_path / "nope")
    assert r.code == 2
    assert "not a run directory" in r.err_lines[0]


def test_python_dash_m_airlab_is_the_cli(airlab_proc):
    r = airlab_proc("models", "--json")
    assert r.code == 0
    assert [row["name"] for row in json.loads(r.out)] == SIX


def test_an_existing_run_dir_is_refused_before_any_work(airlab_cli, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    r = airlab_cli("train", QUICK, *SHAPES_TINY, "--run-dir", taken)
    assert r.code == 2
    assert r.err_lines[0] == f"error: --run-dir {taken}: already exists"
    assert "--resume" in r.err_lines[1]
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]  # nothing lost, nothing added


def test_an_unknown_dataset_is_a_config_error_with_did_you_mean(airlab_cli):
    r = airlab_cli("validate", QUICK, "data.name=mnsit")
    assert r.code == 2
    assert "data.name: unknown dataset 'mnsit'; did you mean 'mnist'?" in r.err_lines[0]


@pytest.mark.parametrize("config, data", [("transformer.yaml", "shapes"), ("cnn.yaml", "pycorpus")])
def test_a_model_on_the_wrong_kind_of_data_is_a_config_error(airlab_cli, tmp_path, config, data):
    r = airlab_cli("train", CONFIGS / config, f"data.name={data}", "data.limit=64", "train.steps=1",
                   "train.epochs=null", "--run-dir", tmp_path / "run")
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith("error: model.name: ") and f"data.name: {data}" in r.err_lines[0]
    assert not (tmp_path / "run").exists()
