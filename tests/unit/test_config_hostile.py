"""Hostile and sloppy configs (issue 9, items 10, 11, 14, 17): YAML bombs, unreadable files,
non-finite numbers, bools for numbers, absurd models, override labels, steps vs epochs, run names.

Every refusal is a ConfigError (exit 2) with a location, never a RecursionError, ValueError or
MemoryError, and it comes at once: these tests run in milliseconds on today's code.
"""

from __future__ import annotations

import math
import os
import re
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from airlab import registry
from airlab.config import apply_overrides, load_config, resources, to_dict, validate, yaml_io
from airlab.config.load import MAX_EXTENDS_FILES
from airlab.config.schema import DataConfig, EarlyStoppingConfig, TrainConfig
from airlab.errors import ConfigError
from airlab.specs.base import BooleanInput
from airlab.specs.rnn import RNNSpec
from conftest import CONFIGS, only_problem, problems_of, write



def parse_problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        yaml_io.parse(text, "x.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


MLP = "name: t\nmodel:\n  name: mlp\n  hidden: [8]\n"


@pytest.fixture
def mlp_yaml(tmp_path):
    return write(tmp_path / "mlp.yaml", MLP)


def laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\nmodel: {name: mlp}\n"


# --- item 10: YAML bombs, files, depth, integers ------------------------------------------------


def test_a_billion_laughs_file_is_refused_at_once_with_its_location(tmp_path):
    path = write(tmp_path / "lol.yaml", laughs())
    assert len(path.read_bytes()) < 1000  # 9**9 = 387 million strings once expanded
    problem = only_problem(path)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: .*more than {yaml_io.MAX_NODES:,} values", problem), problem
    assert "alias" in problem


def test_a_merge_key_bomb_is_refused(tmp_path):
    # each mapping merges the one before twice: 2**40 keys once flattened
    text = "m0: &m0 {x: 1}\n" + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}\n"
                                         for i in range(1, 40))
    path = write(tmp_path / "merge.yaml", text)
    assert "more than" in only_problem(path)


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "x: &x {<<: *x}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(text):
    problem = parse_problem(text)
    assert problem.startswith("x.yaml:") and f"nesting deeper than {yaml_io.MAX_DEPTH}" in problem


def test_aliases_of_modest_size_still_work(tmp_path):
    path = write(tmp_path / "a.yaml", """
        model: &m {name: mlp, hidden: [8, 8]}
        data:
          batch_size: 16
        """)
    assert load_config(path).model.hidden == [8, 8]
    data, _ = yaml_io.parse(laughs(levels=3, width=9), "x.yaml")  # 729 values: fine
    assert len(data["a2"]) == 9 and len(data["a2"][0]) == 9


def test_a_key_merged_in_is_overridden_by_the_mapping_own_key(tmp_path):
    # YAML merge keys: the mapping's own keys win over merged ones (it is not a duplicate key)
    path = write(tmp_path / "m.yaml", """
        base: &b {name: mlp, hidden: [7], dropout: 0.3}
        model:
          <<: *b
          dropout: 0.1
        """)
    data, locs = yaml_io.read(path)
    assert data["model"] == {"name": "mlp", "hidden": [7], "dropout": 0.1}
    assert locs[("model", "dropout")] == f"{path}:4:3"
    path = write(tmp_path / "n.yaml", "model:\n  <<: [{name: mlp, dropout: 0.1}, {dropout: 0.2, hidden: [3]}]\n")
    cfg = load_config(path)
    assert (cfg.model.dropout, cfg.model.hidden) == (0.1, [3])  # the first merged mapping wins


@pytest.mark.parametrize("depth", [yaml_io.MAX_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("open_, close", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_refused_never_a_recursion_error(tmp_path, depth, open_, close):
    path = tmp_path / "deep.yaml"
    path.write_text("model: " + open_ * depth + close * depth + "\n")
    problem = only_problem(path)
    assert re.match(rf"{re.escape(str(path))}:1:\d+: nesting deeper than {yaml_io.MAX_DEPTH} levels", problem), problem


def test_nesting_below_the_limit_is_read():
    depth = yaml_io.MAX_DEPTH - 2
    data, _ = yaml_io.parse("a: " + "[" * depth + "]" * depth + "\n", "x.yaml")
    for _ in range(depth - 1):
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data == [] or data == [[]]


@pytest.mark.parametrize("digits, text", [
    (101, "1" * 101), (5000, "9" * 5000), (4301, "-" + "7" * 4301), (120, "0x" + "f" * 120), (101, "1_" * 101),
])
def test_integers_beyond_a_sane_number_of_digits_are_refused(tmp_path, digits, text):
    path = write(tmp_path / "int.yaml", f"model: {{name: mlp}}\nseed: {text}\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:2:7: seed: an integer of {digits:,} digits (at most 100)"), problem


def test_a_hundred_digit_integer_is_read():
    data, _ = yaml_io.parse("a: " + "9" * 100 + "\n", "x.yaml")
    assert data["a"] == 10**100 - 1


def test_a_huge_integer_key_is_refused():
    assert "a key: an integer of 200 digits" in parse_problem("? " + "9" * 200 + "\n: 1\n")


@pytest.mark.parametrize("value", ["2024-13-01", "2024-02-30"])
def test_a_value_yaml_cannot_construct_is_a_located_problem(tmp_path, value):
    path = write(tmp_path / "d.yaml", f"model: {{name: mlp}}\nname: {value}\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:2:7: cannot read {value!r}")


def test_a_config_larger_than_the_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"model: {name: mlp}\n# " + b"x" * yaml_io.MAX_BYTES + b"\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}: larger than 4 MiB")


def test_extends_dev_zero_is_refused_without_reading_it(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    path = write(tmp_path / "c.yaml", "extends: /dev/zero\nmodel: {name: mlp}\n")
    problem = only_problem(path)
    assert problem.startswith("/dev/zero: not a regular file"), problem


def test_a_fifo_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    assert only_problem(fifo).startswith(f"{fifo}: not a regular file")
    child = write(tmp_path / "c.yaml", "extends: pipe.yaml\n")
    assert "not a regular file" in only_problem(child)


def test_extends_of_a_directory_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "c.yaml", "extends: sub\nmodel: {name: mlp}\n")
    assert "is a directory" in only_problem(child)


def test_extends_cannot_fan_out_to_many_files(tmp_path):
    write(tmp_path / "leaf.yaml", "seed: 1\n")
    for level in range(3):  # 10**3 reads if nothing stopped it
        below = "leaf.yaml" if level == 0 else f"l{level - 1}.yaml"
        write(tmp_path / f"l{level}.yaml", "extends: [" + ", ".join([below] * 10) + "]\n")
    child = write(tmp_path / "c.yaml", "extends: l2.yaml\nmodel: {name: mlp}\n")
    assert f"more than {MAX_EXTENDS_FILES} files" in only_problem(child)


@pytest.mark.parametrize("override, fragment", [
    ("model.hidden=[&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                            for i in range(1, 9)) + "]", "more than"),
    ("model.hidden=" + "[" * 1000 + "]" * 1000, "nesting deeper than"),
    ("seed=" + "9" * 5000, "an integer of 5,000 digits"),
    ("name=" + "x" * (yaml_io.MAX_BYTES + 1), "more than a config may hold"),
])
def test_override_values_have_the_same_limits(mlp_yaml, override, fragment):
    problem = only_problem(mlp_yaml, [override])
    assert problem.startswith(f"override {override!r}"[:40]) and fragment in problem, problem[:300]


# --- item 11: values -----------------------------------------------------------------------------


def _float_fields(cls) -> list[tuple[str, typing.Any]]:
    """(field name, a value holding inf of the field's shape) for every float field of a model."""
    out = []
    for name, field in cls.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        if typing.get_origin(field.annotation) is tuple and float in args:
            out.append((name, [0.5] * (len(args) - 1) + [math.inf]))
        elif float in args:
            out.append((name, math.inf))
    return out


SECTIONS = [TrainConfig, DataConfig, EarlyStoppingConfig]


def test_every_float_field_is_found():
    names = {(cls.__name__, n) for cls in SECTIONS for n, _ in _float_fields(cls)}
    assert {("TrainConfig", n) for n in ("lr", "betas", "eps", "momentum", "weight_decay", "min_lr", "gamma",
                                         "grad_clip")} <= names
    assert ("EarlyStoppingConfig", "min_delta") in names
    assert any(_float_fields(registry.spec_class(m)) for m in registry.model_names())


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused_in_every_float_field_of_the_schema_and_the_specs(bad):
    def swap(value):
        return [bad if v == math.inf else v for v in value] if isinstance(value, list) else bad

    checked = 0
    for cls in SECTIONS:
        for name, value in _float_fields(cls):
            with pytest.raises(Exception) as info:
                cls.model_validate({name: swap(value)})
            assert "finite" in str(info.value), (cls.__name__, name)
            checked += 1
    for model in registry.model_names():
        cls = registry.spec_class(model)
        for name, value in _float_fields(cls):
            with pytest.raises(Exception) as info:
                cls.model_validate({"name": model, name: swap(value)})
            assert "finite" in str(info.value), (model, name)
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize("override, key", [
    ("train.lr=.inf", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.lr=1e999", "train.lr"),
    ("train.weight_decay=.inf", "train.weight_decay"), ("train.min_lr=.inf", "train.min_lr"),
    ("train.grad_clip=.inf", "train.grad_clip"), ("train.betas=[0.9, .nan]", "train.betas.1"),
    ("train.eps=.inf", "train.eps"), ("train.gamma=.nan", "train.gamma"),
    ("train.early_stopping.min_delta=.inf", "train.early_stopping.min_delta"),
    ("model.dropout=.nan", "model.dropout"),
])
def test_non_finite_values_name_the_key(mlp_yaml, override, key):
    problem = only_problem(mlp_yaml, [override])
    assert problem.startswith(f"override {override!r}: {key}: Input should be a finite number"), problem


@pytest.mark.parametrize("override, key", [
    ("train.steps=true", "train.steps"), ("train.epochs=false", "train.epochs"), ("seed=true", "seed"),
    ("data.batch_size=true", "data.batch_size"), ("train.lr=true", "train.lr"),
    ("model.hidden=[8, true]", "model.hidden.1"), ("train.betas=[true, 0.9]", "train.betas.0"),
    ("train.threads=true", "train.threads"),
])
def test_true_and_false_are_not_numbers(mlp_yaml, override, key):
    problem = only_problem(mlp_yaml, [override])
    assert problem.startswith(f"override {override!r}: {key}: Expected a number, not true/false. Received: "), problem


def test_every_int_and_float_field_refuses_a_bool():
    checked = 0
    classes = [(cls, {}) for cls in SECTIONS]
    classes += [(registry.spec_class(m), {"name": m}) for m in registry.model_names()]
    for cls, base in classes:
        for name, field in cls.model_fields.items():
            if bool in _types(field.annotation) or not ({int, float} & _types(field.annotation)):
                continue
            origin = typing.get_origin(field.annotation)
            value = [True] if origin is list else [True, 0.5] if origin is tuple else True
            with pytest.raises(ValidationError) as info:
                cls.model_validate({**base, name: value})
            (error,) = info.value.errors()
            assert isinstance(error["input"], BooleanInput), (cls.__name__, name, error)
            checked += 1
    assert checked >= 30


def _types(annotation) -> set:
    out = {annotation} if isinstance(annotation, type) else set()
    for arg in typing.get_args(annotation):
        out |= _types(arg)
    return out


def test_numbers_still_read_as_before(mlp_yaml):
    cfg = load_config(mlp_yaml, ["train.lr=1", "train.steps=3", "train.compile=true", "train.betas=[1, 0.5]"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 3 and cfg.train.compile is True and cfg.train.betas == (1.0, 0.5)


@pytest.mark.parametrize("override", ['name="abc\\n"', 'name="abc\\r"', "name='ab\tc'", 'device="cpu\\n"',
                                      'device="cuda:0\\n"'])
def test_control_characters_in_names_are_refused(mlp_yaml, override):
    problem = only_problem(mlp_yaml, [override])
    assert problem.startswith(f"override {override!r}: {override.split('=')[0]}:"), problem


def test_a_model_too_big_for_the_machine_is_refused_with_the_estimate(mlp_yaml):
    override = "model.hidden=[1000000000000]"
    problem = only_problem(mlp_yaml, [override])
    assert problem.startswith(f"override {override!r}: model: 7.95e+14 parameters"), problem
    assert "PiB to train" in problem and "adam's 2 moments" in problem and "(total RAM)" in problem
    # from a file, the model section is named
    path = write(mlp_yaml.parent / "big.yaml", MLP.replace("[8]", "[1000000000000]"))
    assert only_problem(path).startswith(f"{path}:2:1: model: ")


def test_the_estimate_counts_the_optimizer_state(mlp_yaml, monkeypatch):
    params = load_config(mlp_yaml).model.num_params(registry.spec_class("mlp").default_data)
    cases = {"train.optimizer=adam": 4, "train.optimizer=adamw": 4, "train.optimizer=sgd": 2}
    for override, copies in cases.items():
        est = resources.estimate(load_config(mlp_yaml, [override]))
        assert (est.params, est.train_bytes) == (params, params * 4 * copies)
    est = resources.estimate(load_config(mlp_yaml, ["train.optimizer=sgd", "train.momentum=0.9"]))
    assert est.train_bytes == params * 4 * 3
    # refused exactly when the state does not fit
    monkeypatch.setattr(resources, "machine_memory", lambda: (params * 16, "total RAM"))
    load_config(mlp_yaml)
    monkeypatch.setattr(resources, "machine_memory", lambda: (params * 16 - 1, "total RAM"))
    assert "more than this machine's" in only_problem(mlp_yaml)
    # and the check can be left out (for a command that reads a run's config on another machine)
    assert load_config(mlp_yaml, check_resources=False).model.hidden == [8]


def test_the_estimate_uses_the_datasets_own_shapes_where_known(tmp_path):
    # 5 pools need H and W divisible by 32: CIFAR's 32x32, not the default 28x28
    path = write(tmp_path / "ae.yaml", "model: {name: autoencoder, channels: [4, 4, 4, 4, 4]}\ndata: {name: cifar10}\n")
    est = resources.estimate(load_config(path))
    assert est.info.input_shape == (3, 32, 32) and est.params > 0


@pytest.mark.parametrize("model, override", [
    ("rnn", "model.num_layers=" + "9" * 90), ("transformer", "model.n_layer=" + "9" * 90),
    ("cnn", "model.kernel_size=" + "9" * 50), ("vae", "model.latent_dim=" + "9" * 90),
])
def test_huge_sizes_are_counted_at_once_and_refused(tmp_path, model, override):
    config = CONFIGS / f"{model}.yaml"
    extra = ["model.padding=same"] if model == "cnn" else []
    problem = only_problem(config, [override, *extra])
    assert re.search(r"model: \d\.\d\de\+\d+ parameters .* to train", problem), problem


def test_rnn_parameter_count_is_closed_form():
    info = RNNSpec.default_data
    for layers in (1, 2, 3):
        spec = RNNSpec(num_layers=layers, hidden_size=4, bidirectional=True)
        g, h, f, dirs, classes = 4, 4, 28, 2, 10
        expected = dirs * (g * h * (f + h) + 2 * g * h) + (layers - 1) * dirs * (g * h * (dirs * h + h) + 2 * g * h)
        assert spec.num_params(info) == expected + dirs * h * classes + classes
    assert RNNSpec(num_layers=10**90).num_params(info) > 10**90


# --- override labels and keys ---------------------------------------------------------------------


def test_an_override_can_carry_the_label_the_user_typed(mlp_yaml):
    problem = only_problem(mlp_yaml, [("backend=tf", "--backend tf")])
    assert problem.startswith("--backend tf: backend: "), problem
    assert "override" not in problem
    assert load_config(mlp_yaml, [("backend=tensorflow", "--backend tensorflow")]).backend == "tensorflow"


@pytest.mark.parametrize("item", ["train.l r=1", "train.lr[0]=1", "train.lr\x00=1", "train.-lr=1", "1train.lr=1"])
def test_override_keys_must_be_dotted_names(mlp_yaml, item):
    problem = only_problem(mlp_yaml, [item])
    assert problem.startswith(f"override {item!r}: expected KEY=VALUE with a dotted key"), problem


# --- item 14: a steps override replaces epochs, and the other way round ------------------------------


@pytest.fixture
def epochs_yaml(tmp_path):
    return write(tmp_path / "e.yaml", MLP + "train:\n  epochs: 5\n")


@pytest.fixture
def steps_yaml(tmp_path):
    return write(tmp_path / "s.yaml", MLP + "train:\n  steps: 50\n")


def test_a_steps_override_replaces_the_configs_epochs(epochs_yaml):
    cfg = load_config(epochs_yaml, ["train.steps=7"])
    assert (cfg.train.steps, cfg.train.epochs) == (7, None)
    assert load_config(epochs_yaml, ["train.steps=null"]).train.epochs == 5  # null replaces nothing


def test_an_epochs_override_replaces_the_configs_steps(steps_yaml):
    cfg = load_config(steps_yaml, ["train.epochs=2"])
    assert (cfg.train.steps, cfg.train.epochs) == (None, 2)


def test_steps_and_epochs_both_given_as_overrides_stay_an_error(epochs_yaml):
    problem = only_problem(epochs_yaml, ["train.steps=7", "train.epochs=2"])
    assert "train.epochs or train.steps, not both" in problem
    # and both in the file stays an error too
    path = write(epochs_yaml.parent / "both.yaml", MLP + "train:\n  epochs: 5\n  steps: 7\n")
    assert "not both" in only_problem(path)


def test_a_steps_override_on_a_saved_runs_config_dict(epochs_yaml):
    # `airlab train --resume RUN train.steps=N --allow-config-change` applies overrides to the run's
    # resolved config (every key present, steps null) and validates it
    data = to_dict(load_config(epochs_yaml))
    assert data["train"]["epochs"] == 5 and data["train"]["steps"] is None
    locs: dict = {}
    given = apply_overrides(data, locs, ["train.steps=12"])
    assert ("train", "steps") in given
    cfg = validate(data, locs)
    assert (cfg.train.steps, cfg.train.epochs) == (12, None)
    data = to_dict(cfg)
    apply_overrides(data, {}, ["train.epochs=3"])
    assert (validate(data).train.epochs, validate(data).train.steps) == (3, None)


def test_the_readme_example_on_every_epoch_based_shipped_config():
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        if cfg.train.epochs is None:
            continue
        data = to_dict(cfg)
        apply_overrides(data, {}, ["train.steps=3"])
        assert validate(data).train.steps == 3, path


# --- item 17: the run name follows a model or dataset override -----------------------------------


def test_a_dataset_override_renames_the_run():
    vae = CONFIGS / "vae.yaml"
    assert load_config(vae).name == "vae-mnist"
    assert load_config(vae, ["data.name=shapes"]).name == "vae-shapes"
    assert load_config(vae, ["model.name=mlp"]).name == "mlp-mnist"
    assert load_config(vae, ["model.name=mlp", "data.name=fashion_mnist"]).name == "mlp-fashion_mnist"


def test_a_name_override_wins_and_other_overrides_keep_the_name():
    vae = CONFIGS / "vae.yaml"
    assert load_config(vae, ["data.name=shapes", "name=mine"]).name == "mine"
    assert load_config(vae, ["train.lr=0.1", "model.latent_dim=3"]).name == "vae-mnist"


def test_the_resolved_config_records_the_name_used(tmp_path):
    path = write(tmp_path / "c.yaml", "model: {name: mlp}\n")  # no name, no data section
    cfg = load_config(path, ["model.name=cnn"])
    assert cfg.name == "cnn-shapes"
    again = write(tmp_path / "again.yaml", yaml_io.dump(to_dict(cfg)))
    assert load_config(again).name == "cnn-shapes"


def test_every_model_and_dataset_name_makes_a_valid_run_name(mlp_yaml):
    from airlab.data import dataset_names, user_kinds

    own = load_config(mlp_yaml, check_resources=False)
    for data in dataset_names():
        own_data = [f"data.path={mlp_yaml}"] if data in user_kinds() else []  # the user's kinds need a path
        name = load_config(mlp_yaml, [f"data.name={data}", *own_data], check_resources=False).name
        # an override that sets the config's own dataset changes nothing, the name included
        assert name == (own.name if data == own.data.name else f"mlp-{data}")


# --- hostile values stay readable in the error ------------------------------------------------------


def test_thousands_of_bad_values_are_listed_briefly(mlp_yaml):
    override = "model.hidden=[" + ",".join(["x"] * 5000) + "]"
    problems = problems_of(mlp_yaml, [override])
    assert len(problems) == 51 and problems[-1] == "... and 4,950 more problems"
    # the label names the override without copying all of it
    assert problems[0].startswith("override 'model.hidden=[x,x,") and "(10,014 characters)" in problems[0]
    assert max(len(p) for p in problems) < 400


def test_a_huge_received_value_is_cut_short(mlp_yaml):
    problem = only_problem(mlp_yaml, ["name=" + "x" * 100_000])
    assert "String should have at most 100 characters" in problem
    assert len(problem) < 500 and "(100,002 characters)" in problem
