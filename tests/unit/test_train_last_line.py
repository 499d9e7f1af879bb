"""`airlab train`'s last line says the throughput summary.json holds: samples/s, tokens/s for a
language model, and the achieved FLOP/s with the MFU where they are known."""

from airlab.cli.train import _throughput


def test_a_classifier_with_a_known_peak_shows_flops_and_mfu():
    s = {"samples_per_s": 15858.2, "tokens_per_s": None, "achieved_flops": 1.027e11, "mfu": 0.2173,
         "peak_flops": 4.725e11}
    assert _throughput(s) == "training 15,858 samples/s over the whole run, 103 GFLOP/s, MFU 21.7% of 472 GFLOP/s"


def test_a_language_model_shows_tokens_per_second():
    s = {"samples_per_s": 250.0, "tokens_per_s": 16000.0, "achieved_flops": 2.0e9, "mfu": None, "peak_flops": None}
    assert _throughput(s) == "training 250 samples/s, 16,000 tokens/s over the whole run, 2 GFLOP/s"


def test_without_figures_only_samples_per_second():
    s = {"samples_per_s": None, "achieved_flops": None, "mfu": None, "peak_flops": None}
    assert _throughput(s) == "training 0 samples/s over the whole run"
