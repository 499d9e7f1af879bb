"""Learning-rate schedules: pure functions of the step."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlab.train.schedule import lr_at, lr_function

LR = 0.1


def test_constant():
    assert [lr_at(s, lr=LR, schedule="constant", total_steps=10) for s in range(10)] == [LR] * 10


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_warmup_is_linear_up_to_lr(schedule):
    w = 4
    got = [lr_at(s, lr=LR, schedule=schedule, total_steps=100, warmup_steps=w) for s in range(w)]
    assert got == pytest.approx([LR * (s + 1) / w for s in range(w)])
    assert got[-1] == pytest.approx(LR)  # the last warm-up step reaches lr
    assert all(b > a for a, b in zip(got, got[1:]))
    assert lr_at(w, lr=LR, schedule=schedule, total_steps=100, warmup_steps=w) == pytest.approx(LR)


def test_cosine_endpoints():
    # 101 steps (indices 0..100), 10 of warm-up: the decay spans steps 10..100
    kw = dict(lr=LR, schedule="cosine", total_steps=101, warmup_steps=10, min_lr=0.001)
    assert lr_at(9, **kw) == pytest.approx(LR)  # the last warm-up step
    assert lr_at(10, **kw) == pytest.approx(LR)  # the first step after warm-up
    assert lr_at(55, **kw) == pytest.approx((LR + 0.001) / 2)  # half way down
    assert lr_at(100, **kw) == pytest.approx(0.001)  # the last optimizer step reaches min_lr
    assert lr_at(500, **kw) == pytest.approx(0.001)  # held afterwards
    after = [lr_at(s, **kw) for s in range(10, 101)]
    assert all(b < a for a, b in zip(after, after[1:]))
    assert min(after) >= 0.001 - 1e-12


def test_cosine_without_warmup_starts_at_lr_and_ends_at_min_lr():
    assert lr_at(0, lr=LR, schedule="cosine", total_steps=10) == pytest.approx(LR)
    assert lr_at(9, lr=LR, schedule="cosine", total_steps=10) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(8, lr=LR, schedule="cosine", total_steps=10) > 0.0


def test_cosine_decay_steps_shorter_than_the_run():
    kw = dict(lr=LR, schedule="cosine", total_steps=100, min_lr=0.01, decay_steps=51)
    assert lr_at(25, **kw) == pytest.approx((LR + 0.01) / 2)
    assert lr_at(50, **kw) == pytest.approx(0.01)
    assert lr_at(99, **kw) == pytest.approx(0.01)


def test_cosine_reaches_min_lr_on_the_last_optimizer_step():
    # the schema: min_lr is "the lr reached at the last step"; lr_at counts steps from 0
    for total, warmup in ((10, 0), (10, 3), (2, 0), (1000, 100)):
        assert lr_at(total - 1, lr=LR, schedule="cosine", total_steps=total, warmup_steps=warmup,
                     min_lr=0.0) == pytest.approx(0.0, abs=1e-12)


def test_warmup_longer_than_the_run_only_warms_up():
    assert lr_at(4, lr=LR, schedule="cosine", total_steps=5, warmup_steps=50) == pytest.approx(LR * 5 / 50)


def test_step_decay():
    kw = dict(lr=LR, schedule="step", total_steps=100, step_size=10, gamma=0.5)
    assert lr_at(0, **kw) == LR
    assert lr_at(9, **kw) == LR
    assert lr_at(10, **kw) == pytest.approx(LR * 0.5)
    assert lr_at(19, **kw) == pytest.approx(LR * 0.5)
    assert lr_at(25, **kw) == pytest.approx(LR * 0.25)


def test_step_decay_counts_from_the_end_of_warmup():
    kw = dict(lr=LR, schedule="step", total_steps=100, step_size=10, gamma=0.5, warmup_steps=5)
    assert lr_at(14, **kw) == pytest.approx(LR)
    assert lr_at(15, **kw) == pytest.approx(LR * 0.5)


def test_unknown_schedule():
    with pytest.raises(ValueError):
        lr_at(0, lr=LR, schedule="linear", total_steps=10)


def test_lr_function_reads_the_train_config():
    t = SimpleNamespace(lr=0.2, schedule="cosine", warmup_steps=2, min_lr=0.02, decay_steps=None,
                        step_size=1000, gamma=0.1)
    f = lr_function(t, total_steps=12)
    assert f(0) == pytest.approx(0.1)
    assert f(2) == pytest.approx(0.2)
    assert f(11) == pytest.approx(0.02)


@settings(max_examples=200, deadline=None)
@given(step=st.integers(0, 10_000), total=st.integers(1, 5_000), warmup=st.integers(0, 500),
       schedule=st.sampled_from(["constant", "cosine", "step"]),
       lr=st.floats(1e-6, 10.0), frac=st.floats(0.0, 1.0))
def test_lr_is_finite_and_between_min_lr_and_lr(step, total, warmup, schedule, lr, frac):
    min_lr = lr * frac
    got = lr_at(step, lr=lr, schedule=schedule, total_steps=total, warmup_steps=warmup, min_lr=min_lr,
                step_size=7, gamma=0.5)
    assert math.isfinite(got)
    assert 0.0 <= got <= lr * (1 + 1e-12)
    if schedule == "cosine" and step >= warmup:
        assert got >= min_lr * (1 - 1e-12)
