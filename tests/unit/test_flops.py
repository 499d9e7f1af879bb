"""Model FLOPs counted once per spec (airlab.specs.base: the convention) against an independent
count, and the MFU arithmetic (airlab.train.flops).

The independent count is torch.utils.flop_counter.FlopCounterMode on one forward and backward
pass of the real torch model built through the registry. It counts the same operations (matmuls,
convolutions, attention) and, like the convention, no gradient for what needs none (the data a
first layer reads, a recurrence's zero initial state): autograd computes none. The counts agree
exactly, so the tests ask for equality. The counter needs kernels it knows: oneDNN's fused LSTM
and the fused CPU attention kernel are turned off while counting (both compute the same products;
with them the counter sees 0 FLOPs in the LSTM and in attention).
"""

from __future__ import annotations

import importlib
import warnings

import pytest

from airlab import registry
from airlab.bench import peaks
from airlab.specs.base import DataInfo
from airlab.train import flops

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

IMAGE = DataInfo((1, 28, 28), num_classes=10)
TEXT = DataInfo((), vocab_size=65)
BATCH = 2


def _spec(name: str, fields: dict):
    return registry.spec_class(name)(name=name, **fields)


def _torch_model(spec, info):
    module, _, attr = registry.get_model(spec.name).builders["torch"].partition(":")
    return getattr(importlib.import_module(module), attr)(spec, info)


def _counted(model, x) -> int:
    """FLOPs of one forward and backward pass, as FlopCounterMode counts them."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's note on TF32 for Intel GPUs, as its flag is set
        with torch.backends.mkldnn.flags(enabled=False), sdpa_kernel(SDPBackend.MATH), \
                FlopCounterMode(display=False) as counter:
            out = model(x)
            out = out if isinstance(out, tuple) else (out,)
            sum(o.float().sum() for o in out).backward()
    return counter.get_total_flops()


def _cases():
    for name in ("mlp", "cnn", "rnn", "autoencoder", "vae"):
        spec_class = registry.spec_class(name)
        for i, fields in enumerate([{}, spec_class.smoke, *spec_class.test_variants]):
            yield pytest.param(name, fields, id=f"{name}-{i}")


@pytest.mark.parametrize("name,fields", list(_cases()))
def test_image_model_flops_match_the_counter(name, fields, torch_one_thread):
    spec = _spec(name, fields)
    info = IMAGE if name != "rnn" or fields else DataInfo((1, 8, 8), num_classes=10)  # the default LSTM: 8 steps
    counted = _counted(_torch_model(spec, info), torch.rand(BATCH, *info.input_shape))
    assert spec.train_flops_per_sample(info) * BATCH == counted


@pytest.mark.parametrize("fields", [{"n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16},
                                    {"n_layer": 1, "n_embd": 32, "n_head": 2, "context_length": 8, "bias": True,
                                     "mlp_ratio": 2, "dropout": 0.1}])
def test_transformer_flops_are_palm_6n_plus_attention_and_match_the_counter(fields, torch_one_thread):
    spec = _spec("transformer", fields)
    model = _torch_model(spec, TEXT)
    L, C, T, V = spec.n_layer, spec.n_embd, spec.context_length, TEXT.vocab_size
    # N: every Linear's weight (the head's too, though tied to the embedding), counted from the model
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert spec.matmul_weights(TEXT) == n == L * (4 + 2 * spec.mlp_ratio) * C * C + C * V
    assert spec.train_flops_per_token(TEXT) == 6 * n + 12 * L * C * T
    assert spec.train_flops_per_sample(TEXT) == T * (6 * n + 12 * L * C * T)
    counted = _counted(model, torch.randint(0, V, (BATCH, T)))
    assert spec.train_flops_per_sample(TEXT) * BATCH == counted


def test_shipped_defaults_count():
    """The defaults on MNIST's shape, by hand: a regression guard on the formulas."""
    mlp = 784 * 512 + 512 * 512 + 512 * 10
    assert _spec("mlp", {}).train_flops_per_sample(IMAGE) == 2 * (2 * 784 * 512 + 3 * (mlp - 784 * 512))
    conv1, conv2, fc1, fc2 = 9 * 32 * 26 * 26, 9 * 32 * 64 * 24 * 24, 9216 * 128, 128 * 10
    assert _spec("cnn", {}).train_flops_per_sample(IMAGE) == 2 * (2 * conv1 + 3 * (conv2 + fc1 + fc2))
    inputs, recurrent = 28 * 4 * 128 * 28, 4 * 128 * 128  # 28 rows of 28 pixels; per step
    assert _spec("rnn", {}).train_flops_per_sample(IMAGE) == 2 * (2 * (inputs + recurrent) + 3 * (27 * recurrent + 1280))


# --- MFU -------------------------------------------------------------------------------------

def test_mfu_is_achieved_over_peak():
    peak = flops.Peak(1e12, "test peak")
    out = flops.figures(1_000_000, samples=5000, seconds=2.0, peak=peak)
    assert out["achieved_flops"] == pytest.approx(2.5e9)
    assert out["mfu"] == pytest.approx(0.0025)
    assert (out["peak_flops"], out["peak_source"], out["mfu_reason"]) == (1e12, "test peak", None)


def test_no_peak_gives_no_mfu_and_says_why():
    out = flops.figures(1_000_000, samples=5000, seconds=2.0, peak=flops.Peak(None, reason="no peak for mps"))
    assert out["achieved_flops"] == pytest.approx(2.5e9)
    assert out["mfu"] is None and out["peak_flops"] is None and out["mfu_reason"] == "no peak for mps"


def test_no_count_or_no_steps_gives_no_figures_and_says_why():
    peak = flops.Peak(1e12, "p")
    none = flops.figures(None, samples=10, seconds=1.0, peak=peak)
    assert none["achieved_flops"] is None and none["mfu"] is None and "not counted" in none["mfu_reason"]
    idle = flops.figures(100, samples=0, seconds=0.0, peak=peak)  # resumed at the last step: nothing trained
    assert idle["achieved_flops"] is None and idle["mfu"] is None and "no training steps" in idle["mfu_reason"]


def _cpu(flags: str, reported_mhz=None) -> peaks.CpuInfo:
    return peaks.CpuInfo(model_name="test", vendor="GenuineIntel", family=6, model=143, flags=frozenset(flags.split()),
                         logical=8, physical=4, usable=8, reported_mhz=reported_mhz)


MEASURED = {"single_core_mhz": 3000.0, "all_core_mhz": 2500.0, "threads": 2, "method": "test", "source": "measured",
            "note": None}


def test_cpu_peak_is_the_benchs_cores_x_clock_x_flops_per_cycle():
    info = _cpu("sse2 avx avx2 fma avx512f avx512_bf16")
    fp32 = flops.cpu_peak("fp32", 2, MEASURED, info=info)
    assert fp32.flops == 2 * 2500e6 * 64 and fp32.reason is None
    assert fp32.source.startswith("cpu fp32: estimate: 2 cores x 2,500 MHz (measured) x 64 FLOPs/cycle")
    assert flops.cpu_peak("bf16", 2, MEASURED, info=info).flops == 2 * 2500e6 * 128  # AVX512_BF16: twice fp32
    assert flops.cpu_peak("fp32", 16, MEASURED, info=info).flops == 4 * 2500e6 * 64  # threads past the cores add nothing


def test_cpu_peak_unknown_says_why():
    no_clock = flops.cpu_peak("fp32", 2, None, info=_cpu("sse2 avx avx2 fma"))
    assert no_clock.flops is None and "clock is not known" in no_clock.reason
    arm = flops.cpu_peak("fp32", 2, MEASURED, info=_cpu("fp asimd"))
    assert arm.flops is None and "ISA is not known" in arm.reason


def test_gpu_peak_from_the_table():
    h100 = flops.gpu_peak("NVIDIA H100 80GB HBM3", "bf16", devices=2)
    entry = peaks.match_gpu("NVIDIA H100 80GB HBM3")
    assert h100.flops == 2 * entry["bf16"] * 1e12 and h100.source.endswith("bf16 x 2 GPUs")
    unknown = flops.gpu_peak("NVIDIA GeForce RTX 4060 Laptop GPU", "bf16")
    assert unknown.flops is None and "not in gpu_peaks.json" in unknown.reason


def test_flops_formatting():
    assert flops.fmt_flops(12.34e9) == "12.3 GFLOP/s" and flops.fmt_flops(1.5e12) == "1.5 TFLOP/s"
