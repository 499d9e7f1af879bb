"""Learning curves (airlab.results.curves, `airlab plot`): series read from a metrics.jsonl with a
garbage line, a step logged twice and a truncated last line; what each panel holds (checked on the
data handed to matplotlib, not on pixels); the log-scale rule; TensorBoard's debiased smoothing;
the epoch axis; a PNG that decodes; errors that name what is wrong; and one tiny real run that
writes curves.png by itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from airlab.errors import UsageError
from airlab.results import curves


def _record(step, split, metrics, epoch=None, **extra):
    return json.dumps({"step": step, "epoch": step / 100 if epoch is None else epoch, "split": split,
                       "metrics": metrics, **extra, "time": step * 0.01})


def make_run(path: Path, *, lines: list[str] | None = None, model="mlp", data="shapes", name="exp") -> Path:
    """A hand-written run directory: config.yaml and metrics.jsonl (train every 10 steps to 100,
    val at 50 and 100, test at 100; a garbage line, step 30 logged twice, a truncated last line)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"name: {name}\nbackend: torch\nmodel: {{name: {model}}}\ndata: {{name: {data}}}\n")
    if lines is None:
        lines = [_record(s, "train", {"loss": 10.0 / s}, lr=0.001 * s, samples_per_s=900.0) for s in range(10, 101, 10)]
        lines.insert(3, "this line is garbage {")
        lines.insert(4, _record(30, "train", {"loss": 0.25}, lr=0.03, samples_per_s=900.0))  # step 30 again: kept
        lines += [_record(50, "val", {"loss": 0.5, "accuracy": 0.6}), _record(100, "val", {"loss": 0.2, "accuracy": 0.9}),
                  _record(100, "test", {"loss": 0.21, "accuracy": 0.88}), '{"step": 110, "split": "tra']
    (path / "metrics.jsonl").write_text("\n".join(lines))
    return path


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "exp-20260101-000000")


def test_read_series_skips_bad_lines_and_keeps_the_last_value_of_a_step(run):
    series = curves.read_series(run)
    assert set(series) == {"train/loss", "train/lr", "val/loss", "val/accuracy", "test/loss", "test/accuracy"}
    loss = series["train/loss"]
    assert loss["split"] == "train" and loss["metric"] == "loss"
    assert loss["step"].tolist() == list(range(10, 101, 10))  # the truncated step 110 is not there
    assert loss["value"][2] == 0.25  # step 30 logged twice: the last value
    assert loss["value"][-1] == pytest.approx(0.1)
    assert loss["epoch"].tolist() == pytest.approx([s / 100 for s in range(10, 101, 10)])
    assert series["train/lr"]["value"][2] == pytest.approx(0.03)
    assert series["val/accuracy"]["step"].tolist() == [50, 100]
    assert series["test/loss"]["value"].tolist() == [0.21]
    assert not any("samples_per_s" in key or "time" in key for key in series)


def test_missing_run_or_metrics_is_a_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match="no such run directory") as e:
        curves.read_series(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in e.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no metrics.jsonl in .*empty: not a run directory, or the run has not logged"):
        curves.read_series(tmp_path / "empty")


def test_a_run_without_records_has_nothing_to_draw_a_value_error(tmp_path):
    run = make_run(tmp_path / "r", lines=["", '{"step": 1, "spl'])
    assert curves.read_series(run) == {}
    with pytest.raises(ValueError, match="nothing to draw") as e:  # the run loop catches ValueError
        curves.draw([run], tmp_path / "c.png")
    assert isinstance(e.value, UsageError)  # and the CLI's boundary prints it as one line
    assert not (tmp_path / "c.png").exists()
    (run / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="no metrics.jsonl"):  # never fails the run that calls it
        curves.draw_run(run, run / "curves.png")


def test_panels_hold_every_split_of_every_metric_but_lr(run):
    plan = curves.panels({"exp": curves.read_series(run)})
    assert [p["metric"] for p in plan] == ["loss", "accuracy"]
    loss = {line["split"]: line for line in plan[0]["lines"]}
    assert [line["role"] for line in plan[0]["lines"]] == ["train", "val", "test"]
    assert loss["val"]["x"].tolist() == [50, 100] and loss["val"]["y"].tolist() == [0.5, 0.2]
    assert loss["test"]["x"].tolist() == [100] and loss["test"]["label"] == "test"
    assert [line["split"] for line in plan[1]["lines"]] == ["val", "test"]
    assert plan[0]["xlabel"] == "step"


def test_metric_selection_and_unknown_metric(run):
    series = {"exp": curves.read_series(run)}
    plan = curves.panels(series, ["val/loss", "accuracy", "lr"])
    assert [p["metric"] for p in plan] == ["loss", "accuracy", "lr"]
    assert [line["split"] for line in plan[0]["lines"]] == ["val"]
    assert [line["split"] for line in plan[1]["lines"]] == ["val", "test"]
    assert plan[2]["lines"][0]["y"][2] == pytest.approx(0.03)
    with pytest.raises(UsageError) as e:
        curves.panels(series, ["val/bleu"])
    message = e.value.message
    assert "val/bleu" in message and "loss" in message and "accuracy" in message and "val/loss" in message
    with pytest.raises(UsageError, match="'perplexity'"):
        curves.panels(series, ["perplexity"])


def test_several_runs_one_colour_each_and_labelled_by_run(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    plan = curves.panels({"a": curves.read_series(a), "b": curves.read_series(b)}, ["loss"])
    lines = plan[0]["lines"]
    assert [(ln["run"], ln["run_index"], ln["split"]) for ln in lines] == [
        ("a", 0, "train"), ("a", 0, "val"), ("a", 0, "test"), ("b", 1, "train"), ("b", 1, "val"), ("b", 1, "test")]
    assert lines[4]["label"] == "b val"


def test_run_labels_are_distinct(tmp_path):
    assert curves.run_labels([tmp_path / "x" / "r", tmp_path / "y" / "r", tmp_path / "s"]) == ["x/r", "y/r", "s"]
    assert curves.run_labels([tmp_path / "r", tmp_path / "r"]) == ["r", "r (2)"]


def _series(metric: str, values, split="val") -> dict:
    steps = np.arange(1, len(values) + 1)
    return {f"{split}/{metric}": {"split": split, "metric": metric, "step": steps, "epoch": steps / 10.0,
                                  "value": np.asarray(values, dtype=float)}}


@pytest.mark.parametrize("metric, values, mode, expected", [
    ("loss", [10.0, 1.0, 0.5], "auto", True),       # spans more than a decade
    ("loss", [2.0, 1.0, 0.5], "auto", False),       # within a decade
    ("ppl", [3000.0, 40.0, 12.0], "auto", True),
    ("accuracy", [0.02, 0.5, 0.95], "auto", False),  # a fraction reads best on a linear axis
    ("elbo", [-300.0, -10.0, -1.0], "auto", False),  # negative: never log
    ("elbo", [-300.0, -10.0, 5.0], "on", False),
    ("kl", [0.0, 10.0, 200.0], "auto", False),      # a zero cannot be drawn on a log axis
    ("loss", [2.0, 1.0, 0.5], "on", True),
    ("loss", [10.0, 1.0, 0.01], "off", False),
])
def test_log_scale_rule(metric, values, mode, expected):
    plan = curves.panels({"r": _series(metric, values)}, log=mode)
    assert plan[0]["log"] is expected


def test_ema_is_tensorboards_debiased_average():
    got = curves.ema([1.0, 2.0, 3.0], 0.5)
    # last_n = 0.5 last_{n-1} + 0.5 x_n, divided by 1 - 0.5**n
    assert got.tolist() == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert curves.ema([4.0, 4.0, 4.0], 0.9).tolist() == pytest.approx([4.0, 4.0, 4.0])  # debiased: no pull to 0
    assert curves.ema([1.0, 5.0], 0.0).tolist() == [1.0, 5.0]
    nan = curves.ema([1.0, float("nan"), 3.0], 0.5)
    assert np.isnan(nan[1]) and nan[2] == pytest.approx(1.75 / 0.75)


def test_smoothing_keeps_the_raw_train_curve_behind(run):
    series = {"exp": curves.read_series(run)}
    plan = curves.panels(series, ["loss"], smooth=0.6)
    roles = [line["role"] for line in plan[0]["lines"]]
    assert roles == ["train-raw", "train", "val", "test"]
    raw, smooth = plan[0]["lines"][0], plan[0]["lines"][1]
    assert raw["y"].tolist() == series["exp"]["train/loss"]["value"].tolist()
    assert smooth["y"].tolist() == pytest.approx(curves.ema(raw["y"], 0.6).tolist())
    assert smooth["smoothed"] and "smoothed 0.6" in smooth["label"]
    assert [line["role"] for line in curves.panels(series, ["val/loss"], smooth=0.6)[0]["lines"]] == ["val"]


def test_epoch_axis(tmp_path):
    lines = [_record(10, "train", {"loss": 1.0}, epoch=0.5), _record(20, "train", {"loss": 0.8}, epoch=1.0),
             json.dumps({"step": 30, "split": "train", "metrics": {"loss": 0.7}})]  # no epoch: left out
    run = make_run(tmp_path / "r", lines=lines)
    plan = curves.panels({"r": curves.read_series(run)}, x="epoch")
    assert plan[0]["xlabel"] == "epoch"
    assert plan[0]["lines"][0]["x"].tolist() == [0.5, 1.0]
    assert plan[0]["lines"][0]["y"].tolist() == [1.0, 0.8]


@pytest.mark.parametrize("kwargs, match", [({"x": "time"}, "--x 'time'"), ({"smooth": 1.0}, r"--smooth 1.0.*\[0, 1\)"),
                                           ({"smooth": -0.1}, "--smooth"), ({"log": "yes"}, "--log 'yes'")])
def test_bad_options_are_usage_errors(run, tmp_path, kwargs, match):
    with pytest.raises(UsageError, match=match):
        curves.draw([run], tmp_path / "c.png", **kwargs)


def test_draw_writes_a_png_atomically_with_the_run_title(run, tmp_path):
    out = tmp_path / "out" / "curves.png"
    out.parent.mkdir()
    assert curves.draw_run(run, out) == out
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
    assert 600 <= width <= 1400 and 250 <= height <= 600  # two panels side by side
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary file left behind
    assert curves.run_title(run) == "exp-20260101-000000 · mlp · shapes"
    (run / "summary.json").write_text(json.dumps({"model": "cnn", "data": {"name": "mnist"}}))
    assert curves.run_title(run) == "exp-20260101-000000 · cnn · mnist"


def test_twenty_thousand_records_draw_decimated(tmp_path):
    n = 20_000
    lines = [_record(s, "train", {"loss": 1.0 + 1.0 / s}, lr=0.001) for s in range(1, n + 1)]
    lines += [_record(s, "val", {"loss": 1.0 + 1.0 / s}) for s in range(500, n + 1, 500)]
    run = make_run(tmp_path / "long", lines=lines)
    t0 = time.perf_counter()
    series = curves.read_series(run)
    t1 = time.perf_counter()
    plan = curves.panels({"long": series}, smooth=0.9)
    t2 = time.perf_counter()
    curves.render(plan, tmp_path / "long.png")
    t3 = time.perf_counter()
    print(f"20,000 records: read {t1 - t0:.3f} s, panels {t2 - t1:.3f} s, render {t3 - t2:.3f} s")  # measured, not asserted
    train = [line for line in plan[0]["lines"] if line["role"] == "train"][0]
    assert len(train["x"]) <= curves.MAX_POINTS
    assert train["x"][0] == 1 and train["x"][-1] == n  # first and last kept
    with Image.open(tmp_path / "long.png") as image:
        assert image.format == "PNG"


def _app():
    from airlab.cli.plot import plot

    app = typer.Typer()
    app.command("plot")(plot)
    app.command("other")(lambda: None)  # two commands: the subcommand is named on the command line
    return app


def test_plot_command(run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(_app(), ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {run / 'curves.png'}"
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG"
    other = make_run(tmp_path / "other")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(_app(), ["plot", str(run), str(other), "-m", "val/loss", "--smooth", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["path"] == "curves.png" and (tmp_path / "curves.png").is_file()  # several runs: ./curves.png
    assert [(ln["run"], ln["split"]) for ln in found["panels"][0]["lines"]] == [("exp-20260101-000000", "val"),
                                                                             ("other", "val")]
    result = runner.invoke(_app(), ["plot", str(run), "-m", "bleu"])
    assert isinstance(result.exception, UsageError) and "available: loss" in result.exception.message
    result = runner.invoke(_app(), ["plot", str(run), "-o", str(tmp_path / "c.pdf")])
    assert isinstance(result.exception, UsageError) and ".png" in result.exception.message


def test_a_finished_run_writes_its_curves(tmp_path, airlab_cli):
    from conftest import SHAPES_TINY

    run = tmp_path / "run"
    r = airlab_cli("train", "configs/quickstart.yaml", "--run-dir", run, "device=cpu", "train.epochs=null",
                   "train.steps=6", "train.log_every=2", *SHAPES_TINY, "output.curves=true")
    assert r.code == 0, r.err
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG"
    plan = curves.panels({"run": curves.read_series(run)})
    assert [p["metric"] for p in plan] == ["loss", "accuracy"]
    assert plan[0]["lines"][0]["x"].tolist() == [2, 4, 6]
