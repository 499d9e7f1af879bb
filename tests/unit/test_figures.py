"""Figures that mean what they say (issue 14, items 4 and 5): the summary's times, tokens/s for the
language model, achieved FLOP/s and MFU, and the epoch the progress line shows.

Two tiny real runs in this process (torch, one thread, fp32), read back; the progress line's
wording from the Reporter directly.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from airlab.train import loop
from airlab.train.progress import Rate, Reporter
from conftest import CONFIGS, PYCORPUS_TINY, SHAPES_TINY
from numerics import NUMERICS

pytest.importorskip("torch")


def _run(tmp_path, config, *overrides):
    from airlab.config import load_config

    out = io.StringIO()
    reporter = Reporter(Console(file=out, width=300), rich_bar=False)
    cfg = load_config(config, [*overrides, *NUMERICS, "backend=torch", "train.epochs=null"])
    result = loop.Trainer(cfg, run_dir=tmp_path / "run", reporter=reporter).run()
    return cfg, result.summary, out.getvalue()


def _check_times_and_flops(cfg, s, dataset_info):
    assert s["process_time_s"] >= s["wall_time_s"] >= s["train_time_s"] > 0
    assert s["train_time_this_process_s"] == s["train_time_s"]  # a new run: all of it trained here
    assert set(s["timing"]) == {"train_time_s", "train_time_this_process_s", "wall_time_s", "process_time_s"}
    assert s["model_flops_per_sample"] == cfg.model.train_flops_per_sample(dataset_info) > 0
    seconds = s["train_time_this_process_s"]
    achieved = s["model_flops_per_sample"] * s["samples_seen"] / seconds
    assert s["achieved_flops"] == pytest.approx(achieved, rel=1e-3 + 0.0006 / seconds)  # the time: to the ms
    if s["mfu"] is None:  # a CPU whose clock or ISA is not known here
        assert s["peak_flops"] is None and s["mfu_reason"]
    else:
        assert s["mfu"] == pytest.approx(s["achieved_flops"] / s["peak_flops"], rel=1e-3)
        assert s["peak_source"].startswith("cpu fp32: ") and " cores x " in s["peak_source"]
        assert s["mfu_reason"] is None


def test_classifier_summary_figures_and_the_epoch_on_the_progress_line(tmp_path):
    from airlab.data import load_dataset

    # 256 examples / batch 64: 4 steps an epoch, so 6 steps are 1.5 epochs
    cfg, s, out = _run(tmp_path, CONFIGS / "quickstart.yaml", *SHAPES_TINY, "model.channels=[4,8]",
                       "model.dense=[16]", "train.steps=6", "train.log_every=3", "train.eval_every=6")
    _check_times_and_flops(cfg, s, load_dataset("shapes", size=512, limit=256).info)
    assert s["tokens_per_s"] is None and s["samples_per_s"] > 0
    lines = re.findall(r"^step (\d+)/6 epoch ([\d.]+) .* ([\d,]+) samples/s eta", out, re.M)
    assert [(int(step), float(epoch)) for step, epoch, _ in lines] == [(3, 0.75), (6, 1.5)]
    assert float(lines[-1][1]) == s["epochs"] == 1.5  # the line and the summary count epochs alike


def test_language_model_reports_tokens_per_s(tmp_path):
    from airlab.data import load_dataset

    cfg, s, out = _run(tmp_path, CONFIGS / "transformer.yaml", *PYCORPUS_TINY, "model.n_layer=1", "model.n_embd=32",
                       "model.n_head=2", "model.context_length=16", "train.steps=4", "train.log_every=2",
                       "train.eval_every=4", "train.warmup_steps=2")
    context = cfg.model.context_length
    assert s["tokens_per_s"] == pytest.approx(s["samples_per_s"] * context, rel=1e-3)
    _check_times_and_flops(cfg, s, load_dataset("pycorpus", size=20000, limit=4000).info)
    assert s["model_flops_per_sample"] == context * cfg.model.train_flops_per_token(
        load_dataset("pycorpus", size=20000, limit=4000).info)
    assert re.search(r"^step 4/4 epoch [\d.]+ .* [\d,]+ tokens/s eta", out, re.M), out
    assert "samples/s" not in out


def _line(rate: Rate, total: int) -> str:
    out = io.StringIO()
    reporter = Reporter(Console(file=out, width=300), rich_bar=False)
    reporter.begin(total, 0, "run", rate=rate)
    reporter.train(1, 0.25, {"loss": 1.0}, 1e-3, 1000.0)
    return out.getvalue().splitlines()[-1]


def test_progress_line_shows_flops_and_mfu_only_in_long_runs():
    rate = Rate(flops_per_sample=2_000_000, peak=lambda: 1e11)
    long = _line(rate, total=10**9)  # eta: far beyond a minute
    assert "step 1/1000000000 epoch 0.25 loss 1 lr 0.001 1,000 samples/s 2 GFLOP/s MFU 2.0% eta" in long
    short = _line(rate, total=1)
    assert "1,000 samples/s eta" in short and "FLOP/s" not in short
    unknown = _line(Rate(flops_per_sample=2_000_000, peak=lambda: None), total=10**9)
    assert "1,000 samples/s 2 GFLOP/s eta" in unknown and "MFU" not in unknown
    tokens = _line(Rate(unit="tokens", per_sample=64), total=1)
    assert "64,000 tokens/s eta" in tokens
