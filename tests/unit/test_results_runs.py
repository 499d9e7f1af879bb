"""`airlab runs` on a runs root holding every kind of run directory: finished, early-stopped,
interrupted, failed, running (a live lock), dead (running, nobody holds the lock), half-written (a
truncated metrics line, no summary), empty and garbage. Each is listed as what it is; none
crashes the listing; filters and sorting do what `airlab runs --help` says."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from airlab.errors import UsageError
from airlab.results import runs as results


def _write(run: Path, *, summary=None, status=None, metrics=None, config=True, model="mlp", data="shapes"):
    run.mkdir(parents=True)
    (run / ".lock").touch()
    if config:
        (run / "config.yaml").write_text(f"name: x\nbackend: torch\nmodel:\n  name: {model}\ndata:\n  name: {data}\n")
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        (run / "metrics.jsonl").write_text(metrics)


def _summary(model, loss, acc, *, status="completed", steps=100, sps=1000.0):
    return {"model": model, "backend": "torch", "status": status, "steps": steps, "samples_per_s": sps,
            "wall_time_s": 12.5, "data": {"name": "shapes"}, "checkpoint": "x/checkpoints/step-100",
            "final": {"val": {"loss": loss, "accuracy": acc}, "test": {"loss": loss + 0.1, "accuracy": acc - 0.01}},
            "best": {"metric": "val/accuracy", "mode": "max", "value": acc, "step": steps}}


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "runs"
    _write(r / "a-finished", summary=_summary("mlp", 0.30, 0.91), status={"status": "completed", "started": "2026-01-01T00:00:01"})
    _write(r / "b-early", summary=_summary("cnn", 0.20, 0.95, status="early_stopped"),
           status={"status": "early_stopped", "started": "2026-01-01T00:00:02"}, model="cnn")
    _write(r / "c-interrupted", status={"status": "interrupted", "exit_code": 143, "step": 40,
                                        "last_checkpoint": "runs/c/checkpoints/step-40", "started": "2026-01-01T00:00:03"},
           metrics='{"step": 40, "split": "train", "metrics": {"loss": 0.5}, "samples_per_s": 900}\n'
                   '{"step": 40, "split": "val", "metrics": {"loss": 0.6, "accuracy": 0.8}}\n')
    _write(r / "d-failed", status={"status": "failed", "exit_code": 4, "step": 7, "started": "2026-01-01T00:00:04"})
    _write(r / "e-dead", status={"status": "running", "step": 3, "started": "2026-01-01T00:00:05"},
           metrics='{"step": 3, "split": "train", "metrics": {"loss": 0.9}}\n{"step": 4, "spl')  # truncated
    _write(r / "f-half", metrics='{"step": 2, "split": "val", "metrics": {"loss": 1.5, "accuracy": 0.4}}\n{"ste',
           model="vae")  # config only: no status, no summary
    (r / "g-empty").mkdir()
    _write(r / "h-garbage", summary=None, status=None, metrics="\xff\xfe not json\n", config=False)
    (r / "h-garbage" / "status.json").write_text("[1, 2")
    (r / "h-garbage" / "summary.json").write_text('"a string"')
    _write(r / "i-running", status={"status": "running", "step": 9, "started": "2026-01-01T00:00:09"})
    return r


def test_every_kind_of_run_is_listed_as_what_it_is(root):
    fd = os.open(root / "i-running" / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live process holds it
    try:
        rows = {r["name"]: r for r in results.list_runs(root)}
    finally:
        os.close(fd)
    assert set(rows) == {"a-finished", "b-early", "c-interrupted", "d-failed", "e-dead", "f-half", "i-running"}
    assert rows["a-finished"]["status"] == "completed" and rows["a-finished"]["metrics"]["val/accuracy"] == 0.91
    assert rows["b-early"]["status"] == "early_stopped" and rows["b-early"]["model"] == "cnn"
    c = rows["c-interrupted"]
    assert (c["status"], c["exit_code"], c["steps"], c["samples_per_s"]) == ("interrupted", 143, 40, 900)
    assert c["last_checkpoint"].endswith("step-40") and c["metrics"]["val/loss"] == 0.6
    assert (rows["d-failed"]["status"], rows["d-failed"]["exit_code"]) == ("failed", 4)
    assert rows["e-dead"]["status"] == "dead" and rows["e-dead"]["steps"] == 3
    assert rows["i-running"]["status"] == "running"
    f = rows["f-half"]
    assert (f["status"], f["model"], f["data"], f["backend"]) == ("incomplete", "vae", "shapes", "torch")
    assert f["metrics"] == {"val/loss": 1.5, "val/accuracy": 0.4}


@pytest.mark.parametrize("filters, names", [
    (["model=mlp"], {"a-finished", "c-interrupted", "d-failed", "e-dead", "i-running"}),
    (["model=c*"], {"b-early"}),
    (["status!=completed", "val/loss<1"], {"b-early", "c-interrupted"}),
    (["val/accuracy>=0.91"], {"a-finished", "b-early"}),
    (["steps>50"], {"a-finished", "b-early"}),
])
def test_filters(root, filters, names):
    assert {r["name"] for r in results.select(results.list_runs(root), filters)} == names


def test_sorting_by_a_metric_puts_runs_without_it_last(root):
    rows = results.select(results.list_runs(root), sort="-val/accuracy")
    assert [r["name"] for r in rows[:4]] == ["b-early", "a-finished", "c-interrupted", "f-half"]
    assert all(r["metrics"].get("val/accuracy") is None for r in rows[4:])


@pytest.mark.parametrize("term", ["model", "val/loss<", "val/loss<abc", "=x"])
def test_a_bad_filter_is_a_usage_error_naming_it(term):
    with pytest.raises(UsageError, match="--filter"):
        results.parse_filter(term)


def test_the_cli_lists_filters_and_prints_json(root, airlab_cli):
    r = airlab_cli("runs", root, "--filter", "status=completed")
    assert r.code == 0, r.err
    assert [line.split("\t")[0] for line in r.out_lines] == ["a-finished"]
    r = airlab_cli("runs", root, "--json", "--sort", "name")
    assert r.code == 0 and [row["name"] for row in json.loads(r.out)][:2] == ["a-finished", "b-early"]
    r = airlab_cli("runs", root / "nowhere")
    assert r.code == 2 and "no such directory" in r.err
