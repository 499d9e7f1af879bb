"""Config loading: safe YAML with positions, `extends:`, overrides, the schema, round trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlab.config import load_config, to_dict, to_yaml
from airlab.config import yaml_io
from airlab.config.load import MAX_EXTENDS_DEPTH
from airlab.errors import ConfigError
from conftest import only_problem, problems_of, shipped_configs, write



MLP = """
name: t
model:
  name: mlp
  hidden: [8]
  dropout: 0.3
"""


@pytest.fixture
def mlp_yaml(tmp_path):
    return write(tmp_path / "mlp.yaml", MLP)


# --- YAML safety and positions -----------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_file_line_col_and_key_path(tmp_path):
    path = write(tmp_path / "bad.yaml", """
        name: a
        model:
          name: mlp
          hiden: [3]
          dropout: 2
        train:
          lr: 1e-3
          epoch: 3
        foo: 1
        data:
          batch_size: 0
        """)
    problems = problems_of(path)
    assert len(problems) == 5, problems
    expected = {
        f"{path}:4:3: model.hiden: unknown key 'hiden'": "did you mean 'hidden'?",
        f"{path}:5:3: model.dropout:": "Received: dropout=2",
        f"{path}:8:3: train.epoch: unknown key 'epoch'": "did you mean 'epochs'",
        f"{path}:9:1: foo: unknown key 'foo'": "allowed: name, seed, backend",
        f"{path}:11:3: data.batch_size:": "Received: batch_size=0",
    }
    for prefix, detail in expected.items():
        hits = [p for p in problems if p.startswith(prefix)]
        assert len(hits) == 1, (prefix, problems)
        assert detail in hits[0], hits[0]
    # and the message people see lists them all
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("5 config problems:")
    assert "airlab validate" in info.value.hint


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = write(tmp_path / "dup.yaml", """
        name: a
        model:
          name: mlp
        name: b
        """)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:4:1: name: duplicate key")
    assert "first at line 1" in problem


def test_nested_duplicate_keys_name_the_dotted_path(tmp_path):
    path = write(tmp_path / "dup.yaml", """
        model:
          name: mlp
          hidden: [1]
          dropout: 0.1
          hidden: [2]
        """)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:5:3: model.hidden: duplicate key")
    assert "first at line 3" in problem


def test_unknown_key_nested_in_model_uses_that_models_spec(tmp_path):
    # `channels` is a cnn field, not an mlp one: the suggestion comes from the chosen model's spec
    path = write(tmp_path / "c.yaml", """
        model:
          name: cnn
          channel: [4]
        """)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:3:3: model.channel: unknown key 'channel'")
    assert "did you mean 'channels'?" in problem
    path = write(tmp_path / "d.yaml", """
        model:
          name: mlp
          channel: [4]
        """)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:3:3: model.channel: unknown key 'channel'")
    assert "channels" not in problem
    assert "allowed: name, hidden, activation, dropout" in problem


def test_unknown_top_level_key_suggests_the_closest(tmp_path):
    path = write(tmp_path / "c.yaml", "model: {name: mlp}\nsed: 3\ntrian:\n  lr: 0.1\n")
    problems = problems_of(path)
    assert len(problems) == 2
    assert any(p.startswith(f"{path}:2:1: sed: unknown key 'sed'; did you mean 'seed'") for p in problems), problems
    assert any(p.startswith(f"{path}:3:1: trian: unknown key 'trian'; did you mean 'train'") for p in problems), problems


def test_unknown_key_without_a_close_match_lists_the_allowed_ones(tmp_path):
    path = write(tmp_path / "c.yaml", """
        model: {name: mlp}
        train:
          zzzzzz: 1
        """)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:3:3: train.zzzzzz: unknown key 'zzzzzz'")
    assert "allowed:" in problem and "optimizer" in problem and "lr" in problem


def test_unknown_model_name_suggests_the_closest(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  name: vea\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:2:3: model.name: unknown model 'vea'")
    assert "did you mean 'vae'?" in problem
    assert "known: autoencoder, cnn, mlp, rnn, transformer, vae" in problem


@pytest.mark.parametrize("text, expected", [
    ("1e-3", 1e-3), ("1.0e-3", 1e-3), ("3E-4", 3e-4), ("1e3", 1000.0), ("-2e-1", -0.2), (".5", 0.5),
])
def test_exponent_floats_read_as_floats(text, expected):
    data, _ = yaml_io.parse(f"lr: {text}\n", "x.yaml")
    assert isinstance(data["lr"], float)
    assert data["lr"] == pytest.approx(expected)


def test_lr_1e_minus_3_in_a_config_is_a_float(tmp_path):
    path = write(tmp_path / "c.yaml", "model: {name: mlp}\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(path)
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 0.001


def test_plain_integers_and_strings_are_not_floats():
    data, _ = yaml_io.parse("a: 10\nb: e10\nc: 1e\nd: '1e-3'\n", "x.yaml")
    assert data == {"a": 10, "b": "e10", "c": "1e", "d": "1e-3"}
    assert isinstance(data["a"], int)


@pytest.mark.parametrize("payload", [
    'model: !!python/object/apply:os.system ["touch {s}"]',
    'model: !!python/object/apply:subprocess.call [["touch", "{s}"]]',
    'model: !!python/object/new:subprocess.Popen [["touch", "{s}"]]',
    'model: !!python/name:os.system',
    'name: !!python/object/apply:os.system ["touch {s}"]\nmodel: {{name: mlp}}',
    'model:\n  name: mlp\n  hidden: !!python/object/apply:os.system ["touch {s}"]',
    'train: !!python/object/apply:builtins.exec ["open(\'{s}\', \'w\').close()"]',
    'model: !custom {{name: mlp}}',
    'model: !!set {{mlp, cnn}}',
])
def test_yaml_tags_are_refused_and_never_run(tmp_path, payload):
    sentinel = tmp_path / "PWNED"
    path = write(tmp_path / "evil.yaml", payload.format(s=sentinel) + "\n")
    problems = problems_of(path)
    assert any(re.match(rf"{re.escape(str(path))}:\d+:\d+: .*(tag|constructor)", p) for p in problems), problems
    assert not sentinel.exists(), "a YAML tag ran code"


def test_tags_are_refused_by_the_cli_validate_too(tmp_path, airlab_cli):
    sentinel = tmp_path / "PWNED"
    path = write(tmp_path / "evil.yaml", f'model: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    result = airlab_cli("validate", path)
    assert result.code == 2
    assert f"{path}:1:8" in result.err
    assert not sentinel.exists()


@pytest.mark.parametrize("text, line", [
    ("model: {name: mlp\n", 2),
    ("model:\n  name: mlp\n   hidden: [1]\n", 3),
    ("model:\n  name: mlp\n  hidden: [1, 2\ntrain: {}\n", 4),
    ("name: 'unterminated\n", 2),
    ("model:\n\tname: mlp\n", 2),
])
def test_invalid_yaml_syntax_is_located(tmp_path, text, line):
    path = write(tmp_path / "syn.yaml", text)
    problem = only_problem(path)
    assert re.match(rf"{re.escape(str(path))}:{line}:\d+: invalid YAML", problem), problem


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path, text):
    path = write(tmp_path / "list.yaml", text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:1:1:")
    assert "must be a mapping" in problem


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_file_fails_asking_for_the_model(tmp_path, text):
    path = write(tmp_path / "empty.yaml", text)
    problem = only_problem(path)
    assert "model" in problem and "required" in problem


def test_an_empty_file_error_names_the_file(tmp_path):
    path = write(tmp_path / "empty.yaml", "")
    assert only_problem(path).startswith(f"{path}:1:1: model")


def test_a_config_missing_model_points_at_the_file(tmp_path):
    path = write(tmp_path / "nomodel.yaml", "name: x\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:1:1: model")
    assert "required" in problem


def test_minimal_config_takes_every_default(tmp_path):
    path = write(tmp_path / "m.yaml", "model: {name: mlp}\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.seed, cfg.backend, cfg.device) == ("run", 0, "torch", "auto")
    assert cfg.model.hidden == [512, 512] and cfg.data.name == "shapes" and cfg.train.optimizer == "adam"


def test_missing_file_directory_and_bad_encoding(tmp_path):
    problem = only_problem(tmp_path / "nope.yaml")
    assert "nope.yaml" in problem and "not found" in problem
    problem = only_problem(tmp_path)
    assert "is a directory" in problem
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    problem = only_problem(path)
    assert "latin1.yaml" in problem and "cannot read" in problem


def test_non_string_keys_and_complex_keys(tmp_path):
    path = write(tmp_path / "k.yaml", "model: {name: mlp}\n? [a, b]\n: 1\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:2:3:") and "plain names" in problem


def test_anchors_and_merge_keys_are_plain_yaml(tmp_path):
    path = write(tmp_path / "a.yaml", """
        model: {name: mlp}
        base: &b {hidden: [7], dropout: 0.1}
        """)
    # `base` is not a key of the schema: it is reported, located
    assert only_problem(path).startswith(f"{path}:2:1: base: unknown key")
    path = write(tmp_path / "b.yaml", """
        model:
          <<: {name: mlp, hidden: [7]}
          dropout: 0.1
        """)
    cfg = load_config(path)
    assert cfg.model.hidden == [7] and cfg.model.dropout == 0.1


# --- extends -----------------------------------------------------------------------------------


@pytest.fixture
def family(tmp_path):
    base = write(tmp_path / "base.yaml", """
        name: base
        seed: 3
        model:
          name: mlp
          hidden: [1, 2, 3]
          dropout: 0.3
        train:
          lr: 0.1
          optimizer: sgd
          momentum: 0.5
        data:
          batch_size: 16
        """)
    return tmp_path, base


def test_extends_resolves_relative_to_the_child_and_deep_merges(family, monkeypatch):
    root, _ = family
    child = write(root / "sub" / "child.yaml", """
        extends: ../base.yaml
        name: child
        model:
          hidden: [8]
        train:
          lr: 0.5
        """)
    # a relative child path from elsewhere: `../base.yaml` is relative to the child, not the cwd
    monkeypatch.chdir(root)
    cfg = load_config(Path("sub") / child.name)
    assert cfg.name == "child"  # child wins
    assert cfg.seed == 3  # parent kept
    assert cfg.model.hidden == [8]  # lists replace, never concatenate
    assert cfg.model.dropout == 0.3  # deep merge keeps the parent's sibling keys
    assert (cfg.train.lr, cfg.train.optimizer, cfg.train.momentum) == (0.5, "sgd", 0.5)
    assert cfg.data.batch_size == 16


def test_extends_a_different_model_replaces_the_model_section(family):
    root, _ = family
    child = write(root / "vae.yaml", """
        extends: base.yaml
        model:
          name: vae
          latent_dim: 4
        """)
    cfg = load_config(child)  # the mlp's dropout would be an unknown vae key if merged
    assert cfg.model.name == "vae" and cfg.model.latent_dim == 4
    assert cfg.model.hidden == [400]  # vae's default, not the mlp's [1, 2, 3]
    assert cfg.train.lr == 0.1


def test_extends_same_model_name_merges(family):
    root, _ = family
    child = write(root / "c.yaml", "extends: base.yaml\nmodel:\n  name: mlp\n  dropout: 0.0\n")
    cfg = load_config(child)
    assert cfg.model.hidden == [1, 2, 3] and cfg.model.dropout == 0.0


def test_extends_a_list_of_parents_later_wins(family):
    root, _ = family
    write(root / "other.yaml", "seed: 9\ntrain:\n  lr: 0.2\n")
    child = write(root / "c.yaml", "extends: [base.yaml, other.yaml]\ntrain:\n  momentum: 0.9\n")
    cfg = load_config(child)
    assert (cfg.seed, cfg.train.lr, cfg.train.momentum, cfg.train.optimizer) == (9, 0.2, 0.9, "sgd")


def test_extends_chain_of_three(family):
    root, _ = family
    write(root / "mid.yaml", "extends: base.yaml\nseed: 4\n")
    child = write(root / "leaf.yaml", "extends: mid.yaml\nname: leaf\n")
    cfg = load_config(child)
    assert (cfg.name, cfg.seed, cfg.model.hidden) == ("leaf", 4, [1, 2, 3])


def test_problems_in_a_parent_point_into_the_parent(family):
    root, base = family
    base.write_text(base.read_text().replace("  dropout: 0.3\n", "  dropout: 0.3\n  widht: 3\n"))
    child = write(root / "c.yaml", "extends: base.yaml\nname: c\ntrain:\n  lrr: 1\n")
    problems = problems_of(child)
    assert any(p.startswith(f"{base.resolve()}:7:3: model.widht: unknown key") for p in problems), problems
    assert any(p.startswith(f"{child}:4:3: train.lrr: unknown key") for p in problems), problems


@pytest.mark.parametrize("files", [
    {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
    {"a.yaml": "extends: a.yaml\n"},
    {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: b.yaml\n"},
])
def test_extends_cycles_are_detected(tmp_path, files):
    for name, text in files.items():
        write(tmp_path / name, text)
    problem = only_problem(tmp_path / "a.yaml")
    assert "cycle" in problem


def test_extends_too_deep_is_refused(tmp_path):
    n = MAX_EXTENDS_DEPTH + 3
    for i in range(n):
        write(tmp_path / f"c{i}.yaml", f"extends: c{i + 1}.yaml\n")
    write(tmp_path / f"c{n}.yaml", "model: {name: mlp}\n")
    assert "deeper than" in only_problem(tmp_path / "c0.yaml")


def test_extends_missing_parent_is_located(tmp_path):
    child = write(tmp_path / "c.yaml", "name: x\nextends: nope.yaml\n")
    problem = only_problem(child)
    assert problem.startswith(f"{child}:2:1: extends: file not found")
    assert "nope.yaml" in problem


@pytest.mark.parametrize("value", ["3", "{a: b}", "[a.yaml, 3]"])
def test_extends_must_name_files(tmp_path, value):
    child = write(tmp_path / "c.yaml", f"extends: {value}\n")
    problem = only_problem(child)
    assert problem.startswith(f"{child}:1:1: extends:") and "file name" in problem


# --- overrides ---------------------------------------------------------------------------------


def test_overrides_parse_values_as_yaml(mlp_yaml, tmp_path):
    write(tmp_path / "mlp.yaml", MLP + "data:\n  path: /somewhere\n")
    cfg = load_config(mlp_yaml, ["train.lr=3e-4", "model.hidden=[64,64]", "data.path=null", "seed=7",
                                 "train.betas=[0.8, 0.9]", "data.limit=", "name=with-dash"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 3e-4
    assert cfg.model.hidden == [64, 64]
    assert cfg.data.path is None
    assert cfg.seed == 7
    assert cfg.train.betas == (0.8, 0.9)
    assert cfg.data.limit is None
    assert cfg.name == "with-dash"


def test_later_override_of_the_same_key_wins(mlp_yaml):
    cfg = load_config(mlp_yaml, ["train.lr=0.1", "train.lr=0.2"])
    assert cfg.train.lr == 0.2


def test_override_creates_a_missing_section(mlp_yaml):
    cfg = load_config(mlp_yaml, ["train.early_stopping.patience=2"])
    assert cfg.train.early_stopping.patience == 2 and cfg.train.early_stopping.metric == "val/loss"


@pytest.mark.parametrize("item", ["foo", "=3", "train..lr=1", ".lr=1", "train.=1", " =1"])
def test_malformed_overrides_are_refused(mlp_yaml, item):
    problem = only_problem(mlp_yaml, [item])
    assert problem.startswith(f"override {item!r}:")
    assert "KEY=VALUE" in problem


def test_override_with_invalid_yaml_value_is_located(mlp_yaml):
    problem = only_problem(mlp_yaml, ["model.hidden=[1, 2"])
    assert problem.startswith("override 'model.hidden=[1, 2'")
    assert "invalid YAML" in problem


def test_override_value_tags_are_refused(mlp_yaml, tmp_path):
    sentinel = tmp_path / "PWNED"
    problem = only_problem(mlp_yaml, [f'name=!!python/object/apply:os.system ["touch {sentinel}"]'])
    assert problem.startswith("override 'name=") and "tag" in problem
    assert not sentinel.exists()


def test_override_into_a_value_that_is_not_a_section(tmp_path):
    path = write(tmp_path / "c.yaml", MLP + "train:\n  lr: 0.1\n")
    problem = only_problem(path, ["train.lr.x=1"])
    assert problem == "override 'train.lr.x=1': train.lr is not a section"
    problem = only_problem(path, ["name.first=1"])
    assert problem == "override 'name.first=1': name is not a section"


def test_unknown_override_key_is_located_at_the_override(mlp_yaml):
    problem = only_problem(mlp_yaml, ["train.lrr=1e-3"])
    assert problem.startswith("override 'train.lrr=1e-3': train.lrr: unknown key 'lrr'")
    assert "did you mean 'lr'?" in problem
    problem = only_problem(mlp_yaml, ["modle.name=mlp"])
    assert problem.startswith("override 'modle.name=mlp': modle: unknown key 'modle'")
    assert "did you mean 'model'?" in problem


def test_invalid_override_value_is_located_at_the_override(mlp_yaml):
    problem = only_problem(mlp_yaml, ["model.dropout=1.5"])
    assert problem.startswith("override 'model.dropout=1.5': model.dropout:")
    assert "Received: dropout=1.5" in problem


def test_several_invalid_overrides_are_all_reported(mlp_yaml):
    problems = problems_of(mlp_yaml, ["train.lrr=1", "model.dropout=2", "data.batch_size=0"])
    assert len(problems) == 3
    for item in ("train.lrr=1", "model.dropout=2", "data.batch_size=0"):
        assert any(p.startswith(f"override {item!r}") for p in problems), problems


def test_override_model_name_drops_the_old_models_keys(mlp_yaml):
    cfg = load_config(mlp_yaml, ["model.name=vae"])  # mlp's dropout is unknown to the vae
    assert cfg.model.name == "vae" and cfg.model.hidden == [400]
    cfg = load_config(mlp_yaml, ["model.name=vae", "model.latent_dim=3"])
    assert cfg.model.latent_dim == 3


def test_override_model_name_to_the_same_name_keeps_keys(mlp_yaml):
    cfg = load_config(mlp_yaml, ["model.name=mlp"])
    assert cfg.model.hidden == [8] and cfg.model.dropout == 0.3


def test_override_model_name_then_keys_of_the_old_model_are_unknown(mlp_yaml):
    problem = only_problem(mlp_yaml, ["model.name=cnn", "model.hidden=[3]"])
    assert problem.startswith("override 'model.hidden=[3]': model.hidden: unknown key 'hidden'")


def test_override_model_keys_before_model_name_are_not_silently_dropped(mlp_yaml):
    # model.name resets the model section; keys given with it on the same command line survive,
    # whatever their order
    for overrides in (["model.hidden=[64,64]", "model.name=vae"], ["model.name=vae", "model.hidden=[64,64]"]):
        cfg = load_config(mlp_yaml, overrides)
        assert cfg.model.name == "vae" and cfg.model.hidden == [64, 64], overrides
        assert cfg.model.latent_dim == 20  # vae defaults, nothing left of the mlp


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=1e-9, max_value=10.0, allow_nan=False, allow_infinity=False))
def test_override_lr_round_trips_any_float(tmp_path_factory, lr):
    path = tmp_path_factory.getbasetemp() / "lr-prop.yaml"
    if not path.exists():
        write(path, MLP)
    assert load_config(path, [f"train.lr={lr!r}"]).train.lr == lr


# --- schema rules ------------------------------------------------------------------------------


def test_epochs_and_steps_together_are_refused(tmp_path):
    path = write(tmp_path / "c.yaml", MLP + "train:\n  epochs: 2\n  steps: 10\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:6:1: train:")
    assert "train.epochs or train.steps, not both" in problem
    # one of them set to null is fine
    assert load_config(path, ["train.epochs=null"]).train.steps == 10


@pytest.mark.parametrize("train, ok", [
    ({"optimizer": "sgd", "nesterov": True}, False),
    ({"optimizer": "sgd", "nesterov": True, "momentum": 0.0}, False),
    ({"optimizer": "adam", "nesterov": True, "momentum": 0.9}, False),
    ({"optimizer": "sgd", "nesterov": True, "momentum": 0.9}, True),
    ({"optimizer": "sgd", "momentum": 0.9}, True),
])
def test_nesterov_needs_sgd_with_momentum(mlp_yaml, train, ok):
    overrides = [f"train.{k}={str(v).lower()}" for k, v in train.items()]
    if ok:
        assert load_config(mlp_yaml, overrides).train.nesterov == train.get("nesterov", False)
    else:
        assert "nesterov needs optimizer: sgd and momentum > 0" in only_problem(mlp_yaml, overrides)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices(mlp_yaml, device):
    assert load_config(mlp_yaml, [f"device={device}"]).device == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:0:1", "cpu0", "tpu", "cuda0", ""])
def test_invalid_devices(mlp_yaml, device):
    problems = problems_of(mlp_yaml, [f"device='{device}'"])
    assert len(problems) == 1
    assert problems[0].startswith(f"override \"device='{device}'\": device:")
    assert "Expected auto, cpu, cuda, cuda:N or mps" in problems[0]


@pytest.mark.parametrize("name, ok", [("run-1.a_b", True), ("a b", False), ("../x", False), ("-x", False),
                                      ("x/y", False), ("a" * 101, False)])
def test_run_name_is_safe_for_a_directory(mlp_yaml, name, ok):
    if ok:
        assert load_config(mlp_yaml, [f"name={name}"]).name == name
    else:
        assert only_problem(mlp_yaml, [f"name='{name}'"]).startswith("override")


@pytest.mark.parametrize("override, fragment", [
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("train.lr=0", "train.lr"),
    ("train.lr=-1e-3", "train.lr"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("backend=jax", "backend"),
    ("train.schedule=linear", "train.schedule"),
    ("train.precision=fp8", "train.precision"),
    ("seed=-1", "seed"),
    ("model.hidden=[0]", "model.hidden.0"),
    ("train.early_stopping.mode=up", "train.early_stopping.mode"),
])
def test_out_of_range_values_name_the_key(mlp_yaml, override, fragment):
    problem = only_problem(mlp_yaml, [override])
    assert problem.startswith(f"override {override!r}: {fragment}:"), problem


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_resolved_config_round_trips_for_every_shipped_config(path, tmp_path):
    cfg = load_config(path)
    again_path = tmp_path / "resolved.yaml"
    again_path.write_text(to_yaml(cfg))
    again = load_config(again_path)
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)
    assert to_yaml(again) == to_yaml(cfg)


def test_round_trip_keeps_overrides_and_nested_sections(mlp_yaml, tmp_path):
    cfg = load_config(mlp_yaml, ["train.early_stopping.patience=2", "train.lr=3e-4", "data.path=/x y/z",
                                 "train.betas=[0.5, 0.6]", "train.grad_clip=1.0"])
    p = tmp_path / "r.yaml"
    p.write_text(to_yaml(cfg))
    assert load_config(p) == cfg


def test_shipped_configs_exist():
    names = {p.name for p in shipped_configs()}
    assert {"quickstart.yaml", "mlp.yaml", "cnn.yaml", "rnn.yaml", "autoencoder.yaml", "vae.yaml",
            "transformer.yaml"} <= names


def test_refused_yaml_and_schema_problems_are_reported_together(tmp_path):
    path = write(tmp_path / "many.yaml", "name: x\nname: y\nseed: -1\nmodel:\n  name: mlp\n"
                 "  hidden: !!python/object/apply:os.system ['true']\n  dropot: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{path}:2:1: name: duplicate key")
    assert any(p.startswith(f"{path}:6:11: tag") for p in problems)
    assert any(p.startswith(f"{path}:3:1: seed:") for p in problems)
    assert any("did you mean 'dropout'" in p for p in problems)
    # the refused value is left out, not reported a second time by the schema
    assert not any("model.hidden" in p for p in problems)
