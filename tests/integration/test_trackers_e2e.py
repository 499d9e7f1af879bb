"""A real run with `output.trackers: [tensorboard, mlflow]`, stopped dead after step 7 and resumed
from its checkpoint at step 4 (issue 13): its event file and its MLflow history hold each step
exactly once, equal to metrics.jsonl, and the stale steps of the first process are gone.

The first process dies in-process (an unexpected error injected right after optimizer step 7,
where AIRLAB_FAULT=kill_at_step would SIGKILL: a subprocess importing torch and mlflow would cost
seconds); a tracker's resume does not depend on how the process before it ended: it replaces what that
process wrote with metrics.jsonl, cut back to the resume step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from airlab import faults
from runs import QUICK, QUICK_TINY

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # MLflow's

RUN = [*QUICK_TINY, "train.steps=10", "train.checkpoint_every=4", "train.keep_checkpoints=10", "train.log_every=2",
       "output.trackers=[tensorboard,mlflow]", "output.curves=false"]


class Crash(RuntimeError):
    pass


def _points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as tracker tags: {"train/loss": [(2, 2.30), (4, 2.29), ...], ...}."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        extra = {k: r[k] for k in ("lr", "epoch", "samples_per_s")} if r["split"] == "train" else {}
        values = {**r["metrics"], **extra}
        for name, value in values.items():
            out.setdefault(f"{r['split']}/{name}", []).append((r["step"], value))
    return out


def _event_scalars(run_dir: Path, monkeypatch) -> dict[str, list[tuple[int, float]]]:
    if "tensorflow" not in sys.modules:  # TensorBoard's reader on its own stub: TensorFlow would only cost time
        monkeypatch.setitem(sys.modules, "tensorflow", None)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _same(got, want) -> bool:
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want],
                                                                                                 rel=1e-6)


def test_a_run_killed_and_resumed_has_each_step_once_in_tensorboard_and_mlflow(airlab_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: <runs root>/mlflow.db
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    run_dir = tmp_path / "runs" / "tracked"

    def die_after_step_7(self, step):
        if step == 7:
            raise Crash("the process died after step 7")

    with monkeypatch.context() as m:
        m.setattr(faults.Faults, "after_step", die_after_step_7)
        r = airlab_cli("train", QUICK, *RUN, "--run-dir", run_dir)
    assert r.code == 1 and "the process died after step 7" in r.err
    first = json.loads((run_dir / "mlflow.json").read_text())
    stale = _event_scalars(run_dir, monkeypatch)
    assert [s for s, _ in stale["train/loss"]] == [2, 4, 6]  # step 6 is after the checkpoint: the resume drops it
    for path in run_dir.glob("events.out.tfevents.*"):  # a name no writer of this second would reuse
        path.rename(run_dir / "events.out.tfevents.1000000000.earlier")

    r = airlab_cli("train", "--resume", run_dir)
    assert r.code == 0, r.err
    want = _points(run_dir)
    assert [s for s, _ in want["train/loss"]] == [2, 4, 6, 8, 10] and [s for s, _ in want["val/loss"]] == [4, 8, 10]

    # TensorBoard: one event file, each step once, the values of metrics.jsonl
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    got = _event_scalars(run_dir, monkeypatch)
    assert set(got) == set(want)
    for tag in want:
        assert _same(got[tag], want[tag]), tag

    # MLflow: the first process's run is deleted; the one run left has each step once
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "mlflow.json").read_text())
    assert state["tracking_uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    old = client.get_run(first["run_id"]).info
    assert (old.status, old.lifecycle_stage) == ("FAILED", "deleted")
    runs = client.search_runs([state["experiment_id"]], filter_string="attributes.run_name = 'tracked'")
    assert [x.info.run_id for x in runs] == [state["run_id"]] and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model.name"] == "cnn" and runs[0].data.tags["airlab.replaces"] == first["run_id"]
    for tag in want:
        history = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], tag))
        assert _same(history, want[tag]), tag
    assert {"summary.json", "config.yaml", "samples"} <= {a.path for a in client.list_artifacts(state["run_id"])}
