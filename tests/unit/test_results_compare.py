"""`airlab compare`: exactly the config keys that differ (flattened, lists as values, a missing key
told apart from null), summaries side by side (an interrupted run without summary.json too), the
overlaid curves PNG, and the command's table, plain and JSON output. Hand-written run
directories only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from PIL import Image

from airlab.errors import UsageError
from airlab.results import compare as results

BASE = {"name": "mlp-mnist", "seed": 0, "backend": "torch",
        "data": {"name": "mnist", "batch_size": 64, "augment": None},
        "train": {"lr": 0.001, "steps": 100, "betas": [0.9, 0.999], "compile": False},
        "model": {"name": "mlp", "hidden": [256, 128], "dropout": 0.1},
        "output": {"runs_root": "runs", "trackers": [], "curves": True}}


def _config(**changes) -> dict:
    """BASE with dotted keys changed (value ... removes the key)."""
    config = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *parents, leaf = dotted.replace("__", ".").split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return config


def make_run(path: Path, config: dict, *, loss=0.3, summary=True, status=None) -> Path:
    import yaml

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lines = [{"step": s, "epoch": s / 50, "split": "train", "metrics": {"loss": 2.0 / s + loss}, "lr": 0.001,
              "samples_per_s": 1000.0} for s in range(10, 101, 10)]
    lines += [{"step": 50, "split": "val", "metrics": {"loss": loss + 0.1, "accuracy": 0.8}},
              {"step": 100, "split": "val", "metrics": {"loss": loss, "accuracy": 0.9}}]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    if summary:
        (path / "summary.json").write_text(json.dumps({
            "name": config["name"], "model": "mlp", "backend": "torch", "status": "completed", "steps": 100,
            "final": {"val": {"loss": loss, "accuracy": 0.9}}, "best": {"metric": "val/loss", "value": loss, "step": 100},
            "samples_per_s": 1234.5, "wall_time_s": 12.0, "params": 235146, "data": {"name": "mnist"}}))
    if status is not None:
        (path / "status.json").write_text(json.dumps(status))
    return path


def test_exactly_the_keys_that_differ(tmp_path):
    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"train.lr": 0.003, "model.hidden": [512, 128]}))
    diff = results.config_diff([a, b])
    assert [row["key"] for row in diff] == ["model.hidden", "train.lr"]
    assert diff[0]["values"] == [[256, 128], [512, 128]] and diff[0]["missing"] == [False, False]
    assert diff[1]["values"] == [0.001, 0.003]
    c = make_run(tmp_path / "c", _config(**{"train.lr": 0.003, "name": "mlp-wide"}))
    assert [row["key"] for row in results.config_diff([a, c])] == ["name", "train.lr"]  # name is kept


def test_three_runs_nested_missing_and_null_keys(tmp_path):
    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"data.augment": {"random_crop": True, "flip": False}}))
    c = make_run(tmp_path / "c", _config(**{"model.dropout": ..., "train.compile": 0, "output.runs_root": "other"}))
    diff = {row["key"]: row for row in results.config_diff([a, b, c])}
    assert sorted(diff) == ["data.augment", "data.augment.flip", "data.augment.random_crop", "model.dropout",
                            "output.runs_root", "train.compile"]
    assert diff["data.augment"]["values"] == [None, None, None]  # null in a and c, a mapping (flattened) in b
    assert diff["data.augment"]["missing"] == [False, True, False]
    assert diff["data.augment.random_crop"]["values"] == [None, True, None]
    assert diff["data.augment.random_crop"]["missing"] == [True, False, True]
    assert diff["model.dropout"]["missing"] == [False, False, True]
    assert diff["train.compile"]["values"] == [False, False, 0]  # false and 0 are not the same setting


def test_identical_configs(tmp_path):
    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(), loss=0.5)
    assert results.config_diff([a, b]) == []


def test_flatten_keeps_lists_and_empty_mappings_as_values():
    assert results.flatten({"a": {"b": [1, {"c": 2}], "d": {}, "e": {"f": None}}}) == {
        "a.b": [1, {"c": 2}], "a.d": {}, "a.e.f": None}


def test_summaries_side_by_side_with_an_interrupted_run(tmp_path):
    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"train.lr": 0.01}), loss=0.7, summary=False,
                 status={"status": "interrupted", "exit_code": 143, "step": 100,
                         "last_checkpoint": str(tmp_path / "b" / "checkpoints" / "step-100")})
    rows = results.summaries([a, b])
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["status"] == "completed" and rows[0]["params"] == 235146 and rows[0]["steps"] == 100
    assert rows[0]["best"] == {"metric": "val/loss", "value": 0.3, "step": 100}
    assert rows[0]["val"] == {"loss": 0.3, "accuracy": 0.9} and rows[0]["samples_per_s"] == 1234.5
    assert rows[1]["status"] == "interrupted" and rows[1]["exit_code"] == 143
    assert rows[1]["steps"] == 100 and rows[1]["val"] == {"loss": 0.7, "accuracy": 0.9}
    assert rows[1]["best"] is None and rows[1]["params"] is None and rows[1]["samples_per_s"] == 1000.0


def test_bad_inputs_name_the_path(tmp_path):
    a = make_run(tmp_path / "a", _config())
    with pytest.raises(UsageError, match="at least two runs"):
        results.compare([a], tmp_path / "c.png")
    with pytest.raises(UsageError, match="no such run directory") as e:
        results.config_diff([a, tmp_path / "nowhere"])
    assert str(tmp_path / "nowhere") in e.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no config.yaml in .*empty"):
        results.config_diff([a, tmp_path / "empty"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("train: {lr: [1, 2\n")
    with pytest.raises(UsageError, match=r"bad/config.yaml:\d+: not valid YAML"):
        results.config_diff([a, bad])


def test_compare_draws_the_curves_of_the_runs_that_logged(tmp_path):
    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"train.lr": 0.01}), loss=0.6)
    found = results.compare([a, b], tmp_path / "cmp.png", metrics=["val/loss"])
    assert found["curves"] == str(tmp_path / "cmp.png") and found["curves_note"] is None
    with Image.open(tmp_path / "cmp.png") as image:
        assert image.format == "PNG" and image.size[0] >= 300
    (a / "metrics.jsonl").unlink()
    (b / "metrics.jsonl").unlink()
    found = results.compare([a, b], tmp_path / "none.png")
    assert found["curves"] is None and "metrics.jsonl" in found["curves_note"]
    assert not (tmp_path / "none.png").exists()


def _app():
    from airlab.cli.compare import compare

    app = typer.Typer()
    app.command("compare")(compare)
    app.command("other")(lambda: None)  # two commands: the subcommand is named on the command line
    return app


def test_compare_command_plain_json_and_table(tmp_path, monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"train.lr": 0.003, "model.hidden": [512, 128]}), loss=0.25)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(_app(), ["compare", str(a), str(b)])  # piped: tab-separated lines
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "runs\ta\tb"
    assert [ln for ln in lines if ln.startswith("config\t")] == ["config\tmodel.hidden\t[256, 128]\t[512, 128]",
                                                                 "config\ttrain.lr\t0.001\t0.003"]
    assert "summary\tval/loss\t0.3\t0.25" in lines and "summary\tparams\t235,146\t235,146" in lines
    assert lines[-1] == "curves\tcompare.png" and (tmp_path / "compare.png").is_file()

    result = runner.invoke(_app(), ["compare", str(a), str(b), "--json", "-o", str(tmp_path / "x.png"), "-m", "loss"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert [r["name"] for r in found["runs"]] == ["a", "b"]
    assert found["config"] == [{"key": "model.hidden", "values": [[256, 128], [512, 128]], "missing": [False, False]},
                               {"key": "train.lr", "values": [0.001, 0.003], "missing": [False, False]}]
    assert [s["status"] for s in found["summary"]] == ["completed", "completed"]
    assert found["curves"] == str(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as image:
        assert image.format == "PNG"

    same = make_run(tmp_path / "same", _config())
    result = runner.invoke(_app(), ["compare", str(a), str(same)])
    assert "config\tthe configs are the same" in result.output.splitlines()

    terminal = Console(force_terminal=True, width=160, record=True, file=open(tmp_path / "tty.txt", "w"))
    monkeypatch.setattr("airlab.cli.compare.out", terminal)
    result = runner.invoke(_app(), ["compare", str(a), str(b), "-o", str(tmp_path / "t.png")])
    assert result.exit_code == 0, result.output
    text = terminal.export_text()
    assert "2 keys differ" in text and "train.lr" in text and "0.003" in text and "val/accuracy" in text
    assert f"curves: {tmp_path / 't.png'}" in text
    result = runner.invoke(_app(), ["compare", str(a), str(same), "-o", str(tmp_path / "t.png")])
    assert "the configs are the same" in terminal.export_text()

    result = runner.invoke(_app(), ["compare", str(a)])
    assert isinstance(result.exception, UsageError) and "at least two runs" in result.exception.message


def test_compare_shows_mfu_where_a_run_has_it_and_tokens_per_s_only_for_a_language_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"train.lr": 0.003}))
    summary = json.loads((a / "summary.json").read_text())
    (a / "summary.json").write_text(json.dumps({**summary, "mfu": 0.2173, "tokens_per_s": None}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_app(), ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "summary\tMFU\t21.7%\t-" in lines  # b's summary.json predates the figure
    assert not [ln for ln in lines if ln.startswith("summary\ttokens/s")]  # neither is a language model
    (b / "summary.json").write_text(json.dumps({**summary, "tokens_per_s": 15360.0}))
    lines = CliRunner().invoke(_app(), ["compare", str(a), str(b)]).output.splitlines()
    assert "summary\ttokens/s\t-\t15,360" in lines


def test_a_hostile_mfu_or_tokens_figure_in_summary_json_is_shown_as_missing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    a = make_run(tmp_path / "a", _config())
    b = make_run(tmp_path / "b", _config(**{"train.lr": 0.003}))
    summary = json.loads((a / "summary.json").read_text())
    (a / "summary.json").write_text(json.dumps({**summary, "mfu": "abc", "tokens_per_s": [1]}))
    (b / "summary.json").write_text(json.dumps({**summary, "mfu": 0.5}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_app(), ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "summary\tMFU\t-\t50.0%" in lines and not [ln for ln in lines if ln.startswith("summary\ttokens/s")]
