"""`airlab bench` from the CLI: a tiny real run on the CPU, the JSON schema, --save and --compare."""

from __future__ import annotations

import json
import textwrap

import pytest
from bench_fakes import FakeBench, tiny_plan  # noqa: F401 (fixtures)
from pydantic import ValidationError

from airlab.bench import report as report_mod
from airlab.bench.report import Report

VERDICTS = {"ok", "low", "suspicious", "n/a"}
CPU_ARGS = ("bench", "--backend", "torch", "--device", "cpu")


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    """Two saved results of the fake two-GPU machine; in the second, cuda:1 is 30 % slower."""
    from bench_fakes import FAKE_CLOCK, FAKE_CPU, TINY, FakeNvml, fake_trainer

    from airlab.bench.runner import Options, run_bench
    from airlab.bench.telemetry import Telemetry

    paths = []
    root = tmp_path_factory.mktemp("saved")
    for i, bench in enumerate([FakeBench(), FakeBench(slow={"cuda:1": 0.7})]):
        report = run_bench(Options(plan=TINY, backend="torch"), bench_loader=lambda name, b=bench: b,
                           clock_probe=lambda t: dict(FAKE_CLOCK), cpu_info=lambda: FAKE_CPU, trainer=fake_trainer,
                           telemetry_factory=lambda gpus: Telemetry(gpus, nvml_module=FakeNvml()))
        path = root / f"run{i}.json"
        report_mod.save(report, path)
        paths.append(path)
    return paths


def test_a_tiny_bench_runs_and_prints_full_json(airlab_cli, tiny_plan, tmp_path):
    saved = tmp_path / "out" / "bench.json"
    r = airlab_cli(*CPU_ARGS, "--json", "--save", saved)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert json.loads(saved.read_text()) == data
    report = Report.model_validate(data)
    ids = {f.id for f in report.figures}
    assert {"matmul/torch/cpu/fp32", "matmul/torch/cpu/bf16", "memory/torch/cpu/cpu",
            "training/torch/cpu/mlp"} <= ids
    for f in report.figures:
        assert f.verdict in VERDICTS and f.verdict_reason
        assert f.value > 0 and f.stats["repeats"] >= 1 and f.stats["median_s"] > 0
        assert "cpu" in f.telemetry and "other_load_cores" in f.telemetry["cpu"]
    mm = next(f for f in report.figures if f.id == "matmul/torch/cpu/fp32")
    assert mm.peak and mm.peak_source.startswith("estimate:") and mm.fraction_of_peak == pytest.approx(mm.value / mm.peak)
    assert mm.work["flops"] == 2 * mm.work["m"] * mm.work["n"] * mm.work["k"]
    train = next(f for f in report.figures if f.id == "training/torch/cpu/mlp")
    assert train.unit == "samples/s" and train.work["batch_size"] == 64 and train.work["params"] > 0
    # full metadata
    assert data["schema"] == "airlab.bench/1"
    assert data["backends"]["torch"]["version"]
    assert data["host"]["cpu"]["isa"] and data["host"]["cpu"]["clock_mhz"]
    assert "median" in data["method"]["statistic"]
    assert "read + bytes written" in data["method"]["conventions"]["copy"]
    assert data["devices"][0]["id"] == "cpu"
    assert "bench: " in r.err  # progress on stderr, JSON alone on stdout


def test_a_tiny_bench_prints_a_table(airlab_cli, tiny_plan):
    r = airlab_cli(*CPU_ARGS, "--verify")
    assert r.code == 0, r.err
    for text in ("matmul fp32", "matmul bf16", "memory copy", "train mlp", "% of peak", "verdict",
                 "estimated peak fp32", "bytes read + bytes written", "--verify", "bench / plain", "wall time"):
        assert text in r.out, text


def test_the_json_is_strict_and_has_a_schema(saved_pair):
    data = json.loads(saved_pair[0].read_text())
    json.dumps(data, allow_nan=False)  # no NaN or inf in the file
    again = Report.model_validate(data).to_json()
    assert again == data
    schema = report_mod.json_schema()
    assert {"schema", "figures", "devices", "method", "host"} <= set(schema["required"])
    bad = dict(data, figures=[dict(data["figures"][0], verdict="great")])
    with pytest.raises(ValidationError, match="verdict"):
        Report.model_validate(bad)


def test_compare_two_saved_files_without_running(airlab_cli, saved_pair):
    a, b = saved_pair
    r = airlab_cli("bench", "--compare", a, "--compare", b)
    assert r.code == 0, r.err
    assert "change" in r.out and "slower" in r.out and "same" in r.out
    assert "-30.0 %" in r.out
    r = airlab_cli("bench", "--compare", a, "--compare", b, "--json")
    assert r.code == 0, r.err
    rows = {row["id"]: row for row in json.loads(r.out)["comparison"]["rows"]}
    slow = rows["matmul/torch/cuda:1/bf16"]
    assert slow["status"] == "slower" and slow["change"] == pytest.approx(-0.3)
    assert rows["matmul/torch/cuda:0/bf16"]["status"] == "same"


def test_compare_a_run_against_a_saved_file(airlab_cli, tiny_plan, tmp_path):
    first = tmp_path / "first.json"
    assert airlab_cli(*CPU_ARGS, "--save", first).code == 0
    r = airlab_cli(*CPU_ARGS, "--compare", first)
    assert r.code == 0, r.err
    assert "change:" in r.out and "matmul fp32" in r.out.split("change:")[1]
    r = airlab_cli(*CPU_ARGS, "--compare", first, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert {row["id"] for row in data["comparison"]["rows"]} >= {"matmul/torch/cpu/fp32", "training/torch/cpu/mlp"}


def test_compare_refuses_what_is_not_a_bench_result(airlab_cli, tmp_path, saved_pair):
    missing = tmp_path / "missing.json"
    r = airlab_cli("bench", "--compare", missing, "--compare", saved_pair[0])
    assert r.code == 2 and "no such file" in r.err
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "airlab.bench/1",\n  "figures": [}\n')
    r = airlab_cli("bench", "--compare", broken, "--compare", saved_pair[0])
    assert r.code == 2 and "broken.json:2:" in r.err and "not JSON" in r.err
    other = tmp_path / "other.json"
    other.write_text('{"name": "something else"}')
    r = airlab_cli("bench", "--compare", saved_pair[0], "--compare", other)
    assert r.code == 2 and "not an airlab bench result" in r.err
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"schema": "airlab.bench/1", "figures": []}')
    r = airlab_cli("bench", "--compare", saved_pair[0], "--compare", malformed)
    assert r.code == 2 and "malformed bench result" in r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--full"], "exclude each other"),
    (["--device", "gpu0"], "--device"),
    (["--backend", "jax"], "--backend"),
    (["--compare", "a", "--compare", "b", "--compare", "c"], "one FILE"),
])
def test_usage_errors_exit_2(airlab_cli, argv, message):
    r = airlab_cli("bench", *argv)
    assert r.code == 2 and message in r.err


def test_save_to_an_unwritable_path_exits_2(airlab_cli, tiny_plan, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = airlab_cli(*CPU_ARGS, "--save", blocker / "bench.json")
    assert r.code == 2 and "--save" in r.err and "cannot write" in r.err


def test_help_ends_with_an_example(airlab_cli):
    r = airlab_cli("bench", "--help")
    assert r.code == 0
    assert "Example: airlab bench --quick" in r.out  # the docstring's last line, as for every command


PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from airlab.cli.main import run
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = run(json.loads(sys.argv[1]))
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "tensorflow", "keras", "jax"})
    print(json.dumps({"code": code, "heavy": heavy}))
""")


def test_help_and_comparing_files_import_no_framework(airlab_proc, saved_pair):
    for argv in (["bench", "--help"], ["bench", "--compare", str(saved_pair[0]), "--compare", str(saved_pair[1])]):
        r = airlab_proc(json.dumps(argv), code=PROBE)
        got = json.loads(r.out.strip().splitlines()[-1])
        assert got == {"code": 0, "heavy": []}, argv


def test_the_bench_package_imports_no_framework(airlab_proc):
    code = ("import sys, airlab.bench.runner, airlab.bench.report, airlab.bench.training, airlab.cli.bench; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tensorflow', 'keras', 'jax'}))")
    r = airlab_proc(code=code)
    assert r.code == 0 and r.out.strip() == "[]", r.err
