"""FLOP and byte arithmetic, and the verdicts judged from them."""

from __future__ import annotations

import math

import pytest

from airlab.bench import arithmetic as ar
from airlab.bench.verdict import judge, stragglers


def test_matmul_flops_are_two_per_multiply_add():
    assert ar.matmul_flops(1, 1, 1) == 2
    assert ar.matmul_flops(2, 3, 4) == 48
    assert ar.matmul_flops(8192, 8192, 8192) == 2 * 8192**3
    with pytest.raises(ValueError, match="k"):
        ar.matmul_flops(4, 4, 0)


def test_matmul_bytes_and_intensity():
    assert ar.matmul_bytes(2, 3, 4, "fp32") == (2 * 4 + 4 * 3 + 2 * 3) * 4
    assert ar.matmul_bytes(2, 3, 4, "bf16") == (8 + 12 + 6) * 2
    assert ar.matmul_bytes(16, 16, 16, "fp8") == (256 + 256) * 1 + 256 * 2  # fp8 in, bf16 out
    n = 4096
    assert ar.arithmetic_intensity(n, n, n, "bf16") == pytest.approx(2 * n**3 / (3 * n * n * 2))


def test_copy_bytes_follow_the_stated_conventions():
    assert ar.copy_bytes(100, "cpu") == 200  # read + written
    assert ar.copy_bytes(100, "d2d") == 200
    for kind in ("h2d-pinned", "h2d-pageable", "d2h-pinned", "d2h-pageable"):
        assert ar.copy_bytes(100, kind) == 100  # across the link, one way
    with pytest.raises(ValueError):
        ar.copy_bytes(100, "nvlink")
    assert "bytes read + bytes written" in ar.CONVENTIONS["copy"]


def test_allreduce_bus_bandwidth_is_nccl_tests_convention():
    assert ar.allreduce_bus_bandwidth(1000, 1.0, 1) == 0.0
    assert ar.allreduce_bus_bandwidth(1000, 1.0, 2) == 1000.0
    assert ar.allreduce_bus_bandwidth(1000, 0.5, 8) == pytest.approx(2000 * 1.75)
    with pytest.raises(ValueError):
        ar.allreduce_bus_bandwidth(1000, 0.0, 2)


def test_rate():
    assert ar.rate(10.0, 2.0) == 5.0
    assert ar.rate(1.0, 0.0) == math.inf


@pytest.mark.parametrize("value, peak, expected, label", [
    (80, 100, 0.8, "ok"),
    (100, 100, 0.8, "ok"),  # exactly at peak is possible in principle
    (100.5, 100, 0.8, "suspicious"),  # above 100 % of peak
    (250, 100, None, "suspicious"),
    (64, 100, 0.8, "ok"),  # at the low threshold (0.8 x 0.8)
    (63, 100, 0.8, "low"),
    (10, 100, None, "ok"),  # no typical fraction: only > 100 % is judged
    (10, None, 0.8, "n/a"),
    (0, 100, 0.8, "suspicious"),
    (float("nan"), 100, 0.8, "suspicious"),
    (float("inf"), None, None, "suspicious"),
])
def test_verdicts(value, peak, expected, label):
    v = judge(value, peak, expected)
    assert v.label == label
    if label in ("ok", "low") or (label == "suspicious" and peak and math.isfinite(value) and value > 0):
        assert v.fraction == pytest.approx(value / peak)
    assert v.reason


def test_suspicious_reason_names_the_fraction():
    v = judge(1.2e15, 989e12, 0.8)
    assert v.label == "suspicious" and "121%" in v.reason and "impossible" in v.reason


def test_stragglers_are_named_below_the_median():
    values = {"cuda:0": 800.0, "cuda:1": 790.0, "cuda:2": 560.0, "cuda:3": 805.0}
    found = stragglers(values, tolerance=0.10)
    assert [d for d, _ in found] == ["cuda:2"]
    assert found[0][1] == pytest.approx(1 - 560 / 795)
    assert stragglers({"cuda:0": 800.0}) == []
    assert stragglers({"cuda:0": 800.0, "cuda:1": 760.0}) == []  # within 10 %
