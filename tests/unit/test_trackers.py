"""The TensorBoard and MLflow trackers (issue 13, items 5-6) and `airlab export`, on hand-written
run directories: what they write is read back with TensorBoard's own event reader and with
MLflow's client and `mlflow.search_runs` from a temporary sqlite store (never ~/ or ./mlruns).

Checked: tags, steps and values; the config as text and as HParams; params flattened; artifacts;
a resume (and a second export) leaves each step once; a library that is missing is one line
naming the extra; a run directory that cannot be exported is one line; a failed MLflow send is
raised, not lost; how an unfinished MLflow run ends (KILLED after a signal, FAILED after an error).
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import pytest

from airlab.errors import EnvironmentProblem, UsageError
from airlab.results import export
from airlab.signals import SignalReceived
from airlab.train import rundir, sinks
from conftest import without_package

# MLflow's sqlite store configures SQLAlchemy mappers with a loader SQLAlchemy deprecates (not ours)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

TRAIN_STEPS = [10, 20, 30, 40]
CONFIG = """\
name: tiny
seed: 0
backend: torch
device: cpu
model:
  name: mlp
  hidden: [256, 128]
  dropout: 0.1
data:
  name: shapes
  path: null
  batch_size: 64
train:
  steps: 40
  lr: 0.001
  early_stopping: null
output:
  runs_root: runs
  trackers: []
"""


def _png(path: Path) -> None:
    """A 1x1 PNG (without Pillow: only read back, never decoded, here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def _train(step: int, time: float) -> dict:
    return {"step": step, "epoch": step / 20, "split": "train", "metrics": {"loss": 1.0 / step, "accuracy": step / 100},
            "lr": 0.001 * step / 40, "samples_per_s": 1000.0 + step, "time": time}


def _records(steps=TRAIN_STEPS) -> list[dict]:
    out = []
    for step in steps:
        out.append(_train(step, step / 10))
        if step % 20 == 0:
            out.append({"step": step, "epoch": step / 20, "split": "val",
                        "metrics": {"loss": 2.0 / step, "accuracy": step / 50}, "time": step / 10 + 0.05})
    return out


def _write_run(run: Path, *, complete: bool = True) -> Path:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(CONFIG)
    (run / "env.json").write_text(json.dumps({"started": "2026-01-02T03:04:05+00:00"}))
    lines = [json.dumps(r) for r in _records()]
    if complete:
        lines.append(json.dumps({"step": 40, "epoch": 2.0, "split": "test", "metrics": {"loss": 0.06, "accuracy": 0.8},
                                 "time": 4.2}))
        (run / "summary.json").write_text(json.dumps({
            "status": "completed", "steps": 40, "final": {"val": {"loss": 0.05, "accuracy": 0.8},
                                                        "test": {"loss": 0.06, "accuracy": 0.8}}}))
        (run / "confusion.json").write_text(json.dumps({"split": "test", "classes": ["a", "b"],
                                                        "matrix": [[4, 1], [0, 5]]}))
        _png(run / "curves.png")
        (run / "samples").mkdir()
        _png(run / "samples" / "step-40-predictions.png")
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 50, "epoch": 2.5, "spl')  # torn by a kill
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating its tables is the slow part)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture
def run(tmp_path) -> Path:
    return _write_run(tmp_path / "runs" / "tiny-20260102-030405")


def _scalars(run_dir: Path, monkeypatch) -> tuple[dict[str, list[tuple[int, float]]], object]:
    """Every scalar of the run's event files, read with TensorBoard's EventAccumulator (on its
    own stub, without TensorFlow: importing TensorFlow would only cost time)."""
    if "tensorflow" not in sys.modules:
        monkeypatch.setitem(sys.modules, "tensorflow", None)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def _expected(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    split, name = tag.split("/")
    out = []
    for r in export.read_metrics(run_dir / "metrics.jsonl"):
        if r["split"] == split:
            value = r["metrics"].get(name) if name in r["metrics"] else r.get(name)
            out.append((r["step"], value))
    return out


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """The same steps, in order, with the same values (float32 in an event file)."""
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want],
                                                                                                 rel=1e-6)


def _of(run: Path) -> str:
    """search_runs' filter for the MLflow runs of one run directory."""
    return f"tags.`airlab.run_dir` = '{run.resolve()}'"


def _client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


class Lines:
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def _sink(name: str, run_dir: Path):
    cls = sinks._sink_class(name)
    return cls(sinks.Context(run_dir=run_dir, config=export._read_config(run_dir), reporter=Lines()))


# -- the pieces ---------------------------------------------------------------------------------

def test_config_is_flattened_to_dotted_keys_with_lists_as_text():
    flat = export.flat_config({"model": {"name": "mlp", "hidden": [256, 128]}, "train": {"lr": 0.001,
                                                                                         "early_stopping": None}})
    assert flat == {"model.name": "mlp", "model.hidden": "[256, 128]", "train.lr": 0.001,
                    "train.early_stopping": "null"}


def test_records_read_back_skip_a_torn_line_and_rebuild_wall_times(run):
    records = export.run_records(run)
    assert [(r.step, r.split) for r in records][-2:] == [(40, "val"), (40, "test")]
    assert len(records) == len(_records()) + 1  # the torn line is left out
    started = export.started_at(run)
    assert records[0].wall == pytest.approx(started + 1.0) and records[0].lr == pytest.approx(0.00025)
    assert [r.step for r in export.run_records(run, upto=20, test=False)] == [10, 20, 20]


# -- TensorBoard --------------------------------------------------------------------------------

def test_tensorboard_export_has_the_tags_steps_values_config_and_hparams(run, monkeypatch):
    done = export.export_run(run, "tensorboard")
    assert done["records"] == 7 and done["completed"] and len(done["event_files"]) == 1
    assert Path(done["event_files"][0]).parent == run  # in the run directory: --logdir runs/ lists the run
    scalars, acc = _scalars(run, monkeypatch)
    assert set(scalars) == {"train/loss", "train/accuracy", "train/lr", "train/epoch", "train/samples_per_s",
                            "val/loss", "val/accuracy", "test/loss", "test/accuracy"}
    for tag in scalars:
        assert _same(scalars[tag], _expected(run, tag)), tag
    assert [s for s, _ in scalars["train/loss"]] == TRAIN_STEPS
    assert [s for s, _ in scalars["val/accuracy"]] == [20, 40]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "hidden:" in text and "256" in text
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.hidden"].string_value == "[256, 128]"
    assert start.hparams["train.lr"].number_value == pytest.approx(0.001)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/loss", "val/accuracy", "test/loss", "test/accuracy"}


def test_tensorboard_export_twice_replaces_the_first(run, monkeypatch):
    export.export_run(run, "tensorboard")
    _age(run)
    done = export.export_run(run, "tensorboard")
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 == len(done["event_files"])
    scalars, _ = _scalars(run, monkeypatch)
    assert [s for s, _ in scalars["train/loss"]] == TRAIN_STEPS


def _age(run: Path) -> None:
    """Give the run's event files the name of a process from an earlier second: tensorboardX names a
    file by the second it opened it, and a writer opened in the same second would overwrite it."""
    for i, path in enumerate(sorted(run.glob("events.out.tfevents.*"))):
        path.rename(run / f"events.out.tfevents.{1_000_000_000 + i}.earlier")


def _live(name: str, run: Path, steps, *, resume_at: int | None = None, finish: bool = False):
    """Play a run's process through a tracker as the loop does: resume, open, write, finish, close."""
    sink = _sink(name, run)
    if resume_at is not None:
        rundir.truncate_metrics(run / "metrics.jsonl", resume_at)  # the metrics sink goes first
        sink.resume(sinks.Resume(step=resume_at, checkpoint=run / "checkpoints" / f"step-{resume_at}", run_dir=run))
    sink.open()
    lines = []
    for r in _records(steps):
        record = sinks.Record(step=r["step"], split=r["split"], metrics=r["metrics"], epoch=r["epoch"],
                              epoch_index=0, wall=1.8e9 + r["time"], lr=r.get("lr"),
                              samples_per_s=r.get("samples_per_s"))
        sink.write(record)
        lines.append(json.dumps(r))
    with open(run / "metrics.jsonl", "a") as f:  # as the metrics sink wrote them
        f.write("".join(line + "\n" for line in lines))
    if finish:
        sink.finish(json.loads((run / "summary.json").read_text()))
    sink.close()
    return sink


@pytest.fixture
def killed(tmp_path) -> Path:
    """A run directory whose process logged steps 10-30 and died; its checkpoint is at step 20."""
    run = _write_run(tmp_path / "runs" / "killed", complete=False)
    (run / "metrics.jsonl").write_text("")
    (run / "summary.json").write_text(json.dumps({"status": "completed", "final": {"val": {"loss": 0.05}}}))
    return run


def test_tensorboard_resume_has_each_step_once(killed, monkeypatch):
    _live("tensorboard", killed, [10, 20, 30])
    _age(killed)
    _live("tensorboard", killed, [30, 40], resume_at=20, finish=True)
    scalars, _ = _scalars(killed, monkeypatch)
    assert [s for s, _ in scalars["train/loss"]] == TRAIN_STEPS
    assert [s for s, _ in scalars["val/loss"]] == [20, 40]
    assert _same(scalars["train/loss"], _expected(killed, "train/loss"))


# -- MLflow -------------------------------------------------------------------------------------

def test_mlflow_export_has_params_tags_metrics_and_artifacts(run, store):
    import mlflow

    done = export.export_run(run, "mlflow")
    assert done["tracking_uri"] == store and done["experiment"] == "airlab"
    state = json.loads((run / "mlflow.json").read_text())
    assert state["run_id"] == done["run_id"] and state["tracking_uri"] == store
    found = mlflow.search_runs(experiment_names=["airlab"], filter_string=_of(run))
    assert list(found["run_id"]) == [done["run_id"]]
    row = found.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["params.model.hidden"] == "[256, 128]" and row["params.train.lr"] == "0.001"
    assert row["params.data.path"] == "null" and row["params.model.name"] == "mlp"
    assert row["tags.airlab.model"] == "mlp" and row["tags.airlab.backend"] == "torch"
    assert row["tags.airlab.data"] == "shapes" and row["tags.airlab.run_dir"] == str(run.resolve())
    client = _client(store)
    for tag in ("train/loss", "train/lr", "train/epoch", "train/samples_per_s", "val/accuracy", "test/loss"):
        assert _same(_history(client, done["run_id"], tag), _expected(run, tag)), tag
    artifacts = {a.path for a in client.list_artifacts(done["run_id"])}
    assert {"summary.json", "config.yaml", "env.json", "curves.png", "confusion.json", "samples"} <= artifacts
    assert [a.path for a in client.list_artifacts(done["run_id"], "samples")] == ["samples/step-40-predictions.png"]
    experiment = client.get_experiment(done["experiment_id"])
    location = experiment.artifact_location
    assert location.startswith("file://") and location.endswith("/mlflow-artifacts")  # beside the store
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's training view


def test_mlflow_export_twice_replaces_the_first(run, store):
    import mlflow

    first = export.export_run(run, "mlflow")
    second = export.export_run(run, "mlflow")
    client = _client(store)
    assert client.get_run(first["run_id"]).info.lifecycle_stage == "deleted"
    found = mlflow.search_runs(experiment_names=["airlab"], filter_string=_of(run))
    assert list(found["run_id"]) == [second["run_id"]]
    assert found.iloc[0]["tags.airlab.replaces"] == first["run_id"]
    steps = [s for s, _ in _history(client, second["run_id"], "train/loss")]
    assert steps == TRAIN_STEPS


def test_mlflow_resume_has_each_step_once(killed, store):
    first = _live("mlflow", killed, [10, 20, 30])
    client = _client(store)
    assert client.get_run(first.run_id).info.status == "KILLED"  # closed without finish, no error
    second = _live("mlflow", killed, [30, 40], resume_at=20, finish=True)
    assert second.run_id != first.run_id and client.get_run(first.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(second.run_id).info.status == "FINISHED"
    assert _same(_history(client, second.run_id, "train/loss"), _expected(killed, "train/loss"))
    assert [s for s, _ in _history(client, second.run_id, "train/loss")] == TRAIN_STEPS
    assert [s for s, _ in _history(client, second.run_id, "val/loss")] == [20, 40]


@pytest.mark.parametrize("error, status", [(SignalReceived(15), "KILLED"), (RuntimeError("boom"), "FAILED")])
def test_an_unfinished_mlflow_run_ends_killed_after_a_signal_and_failed_after_an_error(killed, store, error, status):
    sink = _sink("mlflow", killed)
    sink.open()
    try:
        raise error
    except BaseException:  # the loop's `finally`: close() sees the error in flight
        sink.close()
    assert _client(store).get_run(sink.run_id).info.status == status


def test_a_failed_mlflow_send_is_raised_not_lost(killed, monkeypatch):
    sink = _sink("mlflow", killed)
    sink.open()
    monkeypatch.setattr("airlab.train.trackers.mlflow.RETRIES", ())

    def refuse(*args, **kwargs):
        raise OSError("database is locked")

    monkeypatch.setattr(sink.client, "log_batch", refuse)
    record = sinks.Record(step=1, split="train", metrics={"loss": 1.0}, epoch=0.1, epoch_index=0, wall=1.8e9,
                          lr=0.1, samples_per_s=10.0)
    sink.write(record)
    with pytest.raises(EnvironmentProblem) as info:
        sink.close()
    assert info.value.message.startswith("output.trackers: mlflow cannot log the run's metrics at sqlite:///")
    assert "database is locked" in info.value.message and "--to mlflow" in info.value.hint


# -- what cannot be done is one line ------------------------------------------------------------

@pytest.mark.parametrize("tracker, package", [("tensorboard", "tensorboardX"), ("mlflow", "mlflow")])
def test_a_tracker_without_its_library_says_how_to_install_it(run, monkeypatch, tracker, package):
    without_package(monkeypatch, package)
    with pytest.raises(EnvironmentProblem) as info:
        _sink(tracker, run)
    assert info.value.message == f"output.trackers: {tracker} needs {package}, which is not installed"
    assert info.value.hint == f'pip install "airlab[{tracker}]"' and info.value.exit_code == 4
    with pytest.raises(EnvironmentProblem) as info:
        export.export_run(run, tracker)
    assert info.value.message == f"output.trackers: {tracker} needs {package}, which is not installed"
    assert not list(run.glob("events.out.tfevents.*")) and not (run / "mlflow.json").exists()


def test_what_cannot_be_exported_is_one_line(tmp_path, run):
    cases = {}
    (tmp_path / "plain").mkdir()
    no_metrics = tmp_path / "no-metrics"
    no_metrics.mkdir()
    (no_metrics / "config.yaml").write_text(CONFIG)
    torn = _write_run(tmp_path / "torn")
    (torn / "metrics.jsonl").write_text('{"step": 1, "spl')
    bad = _write_run(tmp_path / "bad-config")
    (bad / "config.yaml").write_text("model: [unclosed\n")
    for name, path, to in [("missing", tmp_path / "nope", "tensorboard"), ("plain", tmp_path / "plain", "tensorboard"),
                           ("no metrics", no_metrics, "tensorboard"), ("torn", torn, "tensorboard"),
                           ("bad config", bad, "tensorboard"), ("tracker", run, "wandb")]:
        with pytest.raises(UsageError) as info:
            export.export_run(path, to)
        cases[name] = info.value
    assert cases["missing"].message == f"{tmp_path / 'nope'}: no such directory"
    assert cases["plain"].message == f"{tmp_path / 'plain'}: not a run directory (no config.yaml)"
    assert cases["no metrics"].message.endswith("no metrics.jsonl (the run stopped before its first record)")
    assert cases["torn"].message == f"{torn / 'metrics.jsonl'}: no metric records to export"
    assert cases["bad config"].message.startswith(f"{bad / 'config.yaml'}:2: not a readable YAML config")
    assert cases["tracker"].message == "--to wandb: not a tracker"
    for e in cases.values():
        assert "\n" not in e.message and e.hint and e.exit_code == 2


def test_export_command_prints_what_it_wrote(run, tmp_path):
    """The command module through a tiny Typer app (the lead wires it into airlab.cli.main)."""
    import typer
    from typer.testing import CliRunner

    from airlab.cli.export import export as export_cmd

    app = typer.Typer()
    app.command()(export_cmd)
    app.command("other")(lambda: None)  # two commands: `export` is a subcommand, as in airlab
    other = _write_run(tmp_path / "runs" / "second")
    result = CliRunner().invoke(app, ["export", str(run), str(other), "--to", "tensorboard"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{run}: 7 records -> {run}/events.out.tfevents.")
    assert lines[1].startswith(f"{other}: 7 records -> {other}/events.out.tfevents.")
    assert lines[2] == f"view: tensorboard --logdir {run.resolve().parent}"
    result = CliRunner().invoke(app, ["export", str(run), "--to", "mlflow", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["run_id"] == json.loads((run / "mlflow.json").read_text())["run_id"]
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "nope"), "--to", "tensorboard"])
    assert isinstance(result.exception, UsageError)  # airlab's error boundary prints it (exit 2)
