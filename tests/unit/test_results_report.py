"""`airlab report RUN`: one self-contained HTML file from a run directory's files."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from airlab.errors import UsageError
from airlab.results import report

CLASSES = ["circle", "<script>alert(1)</script>", "triangle"]


class _Doc(HTMLParser):
    """The tags, image sources, links and text of a document."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def _parse(document: str) -> _Doc:
    doc = _Doc()
    doc.feed(document)
    return doc


def _png_bytes(rgb=(200, 30, 30), size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def _run(tmp_path: Path, *, complete: bool = True, classifier: bool = True) -> Path:
    run = tmp_path / "runs" / "cnn-20261206-120000"
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text("name: cnn\nseed: 0\nmodel:\n  name: cnn\ntrain:\n  lr: 0.002\n")
    (run / "env.json").write_text(json.dumps({
        "airlab": "0.1.0", "python": "3.11.7", "cpu": {"model": "AMD EPYC", "logical_cores": 2},
        "backend": {"name": "torch", "torch": "2.13.0+cpu", "device": "cpu", "precision": "fp32"},
        "argv": ["airlab", "train", "configs/cnn.yaml"], "world_size": 1, "started": "2026-12-06T12:00:00+00:00"}))
    (run / "data.json").write_text(json.dumps({"name": "shapes", "kind": "image", "counts": {"train": 90, "test": 30},
                                               "class_names": CLASSES}))
    lines = []
    for step in range(10, 110, 10):
        lines.append({"step": step, "epoch": step / 50, "split": "train", "metrics": {"loss": 2.0 / step},
                      "lr": 0.002, "samples_per_s": 1000.0, "time": step / 10})
        if step % 50 == 0:
            lines.append({"step": step, "epoch": step / 50, "split": "val",
                          "metrics": {"loss": 3.0 / step, "accuracy": step / 120}, "time": step / 10})
    if complete:
        lines.append({"step": 100, "epoch": 2.0, "split": "test", "metrics": {"loss": 0.05, "accuracy": 0.8},
                      "time": 11.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + ('{"step": 11' if not complete
                                                                                          else ""))
    (run / "samples" / "step-100-predictions.png").write_bytes(_png_bytes())
    (run / "samples" / "step-100-predictions.txt").write_text("index\tpredicted\ttrue\n0\tcircle\t<b>circle</b>\n")
    if complete:
        summary = {"name": "cnn", "model": "cnn", "task": "classification" if classifier else "reconstruction",
                   "backend": "torch", "device": "cpu", "status": "completed", "steps": 100,
                   "final": {"val": {"loss": 0.03, "accuracy": 0.83}, "test": {"loss": 0.05, "accuracy": 0.8}},
                   "best": {"metric": "val/accuracy", "mode": "max", "value": 0.83, "step": 100},
                   "loss_units": "cross-entropy (nats)", "samples_per_s": 1000.0, "wall_time_s": 12.5,
                   "params": 1234, "data": {"name": "shapes"}, "mfu": 0.0412,
                   "samples": [str(run / "samples" / "step-100-predictions.txt"),
                               str(run / "samples" / "step-100-predictions.png")]}
        (run / "summary.json").write_text(json.dumps(summary))
        if classifier:
            matrix = np.array([[9, 1, 0], [2, 7, 1], [0, 2, 8]])
            (run / "confusion.json").write_text(json.dumps({
                "split": "test", "examples": 30, "classes": CLASSES, "matrix": matrix.tolist(),
                "per_class_accuracy": [0.9, 0.7, 0.8], "support": [10, 10, 10], "accuracy": 0.8}))
    else:
        (run / "status.json").write_text(json.dumps({"status": "interrupted", "exit_code": 143, "step": 100,
                                                     "last_checkpoint": str(run / "checkpoints" / "step-100")}))
    return run


def test_a_classifier_report_holds_metrics_curves_samples_confusion_config_and_environment(tmp_path):
    run = _run(tmp_path)
    path = report.write(run)
    assert path == run / "report.html"
    document = path.read_text(encoding="utf-8")
    doc = _parse(document)
    text = " ".join(doc.text)
    for heading in ("Metrics", "Learning curves", "Samples", "Confusion matrix (test split, 30 examples, accuracy 0.8)",
                    "Per-class accuracy (worst first)", "Data", "Config (resolved)", "Environment"):
        assert heading in text, heading
    # self-contained: every picture is an embedded PNG that decodes, and nothing is fetched
    assert len(doc.images) == 2  # the curves and the predictions grid
    for src in doc.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert doc.links == [] and "http://" not in document and "https://" not in document
    # the final metrics, best, the confusion counts and per-class accuracy (worst first)
    assert "0.83" in text and "Best val/accuracy" in text
    cells = re.findall(r'<table class="cm">(.*?)</table>', document, re.S)[0]
    assert [int(v) for v in re.findall(r">(\d+)</td>", cells)] == [9, 1, 0, 2, 7, 1, 0, 2, 8]
    per_class = document.split("Per-class accuracy")[1]
    assert per_class.index("&lt;script&gt;") < per_class.index("triangle") < per_class.index(">circle<")
    # hostile strings from the run's files are text, never markup
    assert "<script>" not in document and "<b>circle</b>" not in document
    assert "lr: 0.002" in text and "2.13.0+cpu" in text
    assert "MFU 4.1%" in text and "tokens/s" not in text  # summary.json's mfu; no tokens: not a language model


def test_an_interrupted_run_reports_what_it_has(tmp_path):
    run = _run(tmp_path, complete=False)
    document = report.build(run)
    text = " ".join(_parse(document).text)
    assert "interrupted (exit 143), last checkpoint step-100" in text
    assert "Learning curves" in text and "No confusion.json" not in text  # a task unknown without a summary
    assert len(_parse(document).images) == 2  # curves from the complete lines, and the newest samples


def test_a_model_that_is_not_a_classifier_has_no_confusion_section(tmp_path):
    run = _run(tmp_path, classifier=False)
    assert "Confusion matrix" not in report.build(run)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_not_a_run_directory_is_one_usage_error(tmp_path, make):
    with pytest.raises(UsageError, match="run directory"):
        report.build(make(tmp_path))


def test_the_report_command_writes_where_asked(tmp_path, airlab_cli):
    run = _run(tmp_path)
    out = tmp_path / "elsewhere" / "r.html"
    r = airlab_cli("report", run, "-o", out)
    assert r.code == 0, r.err
    assert r.out.strip() == f"report: {out}" and out.read_text().startswith("<!DOCTYPE html>")
    r = airlab_cli("report", tmp_path / "nope")
    assert r.code == 2 and "no such run directory" in r.err
