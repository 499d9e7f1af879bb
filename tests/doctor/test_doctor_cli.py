"""`airlab doctor` through the CLI: output, JSON, exit codes (0 / 4), and one real run on this machine."""

from __future__ import annotations

import json
import textwrap

import pytest

from doctor_fakes import cpu_machine
from test_doctor_situations import old_driver, pascal_with_cu128, tf_import_hanging


@pytest.fixture
def fake_facts(monkeypatch):
    """Make `airlab doctor` see the given facts instead of probing the machine."""
    box = {}

    def gather(backends, deep=False, timeout=30.0, **seams):
        box["call"] = {"backends": backends, "deep": deep, "timeout": timeout}
        return box["facts"]

    monkeypatch.setattr("airlab.doctor.core.gather", gather)

    def use(facts):
        box["facts"] = facts
        return box

    return use


def test_cpu_machine_exits_0_and_says_no_gpu(airlab_cli, fake_facts):
    fake_facts(cpu_machine())
    r = airlab_cli("doctor")
    assert r.code == 0, r.err
    assert r.err == ""
    lines = r.out_lines
    assert "# System" in lines
    assert any(line.startswith("skip") and "gpu.present" in line and "no NVIDIA GPU" in line for line in lines)
    assert any("torch.build" in line and "CPU build" in line for line in lines)
    assert lines[-1].startswith("verdict: OK")


def test_failures_exit_4_with_the_failing_ids(airlab_cli, fake_facts):
    fake_facts(pascal_with_cu128())
    r = airlab_cli("doctor", "--backend", "torch")
    assert r.code == 4
    assert any(line.startswith("fail") and "torch.arch_coverage" in line for line in r.out_lines)
    assert any("fix: airlab setup --backend torch" in line and "whl/cu126" in line for line in r.out_lines)
    assert r.err_lines[0] == "error: doctor: 2 checks failed: torch.arch_coverage, torch.compute"
    assert r.err_lines[1].startswith("hint: each failing check names its fix")
    assert "verdict: FAIL" in r.out


def test_json_has_facts_checks_and_verdict(airlab_cli, fake_facts):
    fake_facts(old_driver())
    r = airlab_cli("doctor", "--json", "--backend", "torch")
    assert r.code == 4
    data = json.loads(r.out)
    assert data["verdict"]["status"] == "fail"
    assert "gpu.driver_too_old_for_torch" in data["verdict"]["failed"]
    check = next(c for c in data["checks"] if c["id"] == "gpu.driver_too_old_for_torch")
    assert check["status"] == "fail" and check["section"] == "gpu" and "570.26" in check["fix"]
    assert data["facts"]["nvidia"]["driver_version"] == "470.82.01"
    assert data["backends"] == ["torch"]


def test_backend_and_options_reach_the_probes(airlab_cli, fake_facts):
    box = fake_facts(tf_import_hanging())
    r = airlab_cli("doctor", "--backend", "tf", "--deep", "--timeout", "5")
    assert box["call"] == {"backends": ("tensorflow",), "deep": True, "timeout": 5.0}
    assert r.code == 4 and "tensorflow.import" in r.err
    assert "torch.import" not in r.out


@pytest.mark.parametrize("argv", [["--backend", "jax"], ["--timeout", "0"], ["--bogus"]])
def test_usage_errors_exit_2(airlab_cli, fake_facts, argv):
    fake_facts(cpu_machine())
    r = airlab_cli("doctor", *argv)
    assert r.code == 2 and r.err_lines[0].startswith("error:")


@pytest.mark.parametrize("command", ["doctor", "setup"])
def test_help_ends_with_a_runnable_example(airlab_cli, command):
    r = airlab_cli(command, "--help")
    assert r.code == 0
    assert f"Example: airlab {command}" in r.out


def test_terminal_output_is_rich_tables(fake_facts):
    import io

    from rich.console import Console

    from airlab.cli.doctor import render
    from airlab.doctor.core import run_doctor

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200, color_system=None)
    render(run_doctor(facts=cpu_machine()), console)
    text = buf.getvalue()
    assert "NVIDIA GPU and driver" in text and ("┃" in text or "│" in text)
    assert "verdict: OK" in text


PROBE = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from airlab.cli.main import run
    out = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = run(["doctor", "--json"])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "tensorflow", "keras", "jax"})
    print(json.dumps({"code": code, "heavy": heavy, "seconds": time.monotonic() - t0,
                      "report": json.loads(out.getvalue())}))
""")


def test_real_doctor_on_this_machine(airlab_proc):
    """This CI machine: no GPU, CPU torch. Exit 0, 'no GPU' said plainly, and the doctor process
    itself imports no framework (the probes run in their own processes)."""
    r = airlab_proc(code=PROBE, timeout=120)
    assert r.code == 0, r.err
    got = json.loads(r.out.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert got["code"] == 0, got["report"]["verdict"]
    checks = {c["id"]: c for c in got["report"]["checks"]}
    nv = got["report"]["facts"]["nvidia"]
    if not nv["gpus"]:
        assert checks["gpu.present"]["status"] == "skip" and "no NVIDIA GPU" in checks["gpu.present"]["summary"]
    torch = got["report"]["facts"]["frameworks"]["torch"]
    assert torch["status"] in ("ok", "absent")
    if torch["status"] == "ok":  # the real torch probe ran: a CPU matmul at least
        cpu = next(r for r in torch["data"]["compute"] if r["device"] == "cpu")
        assert cpu["rel_err"] < 1e-4
        if not torch["data"]["cuda"]:
            assert "CPU build" in checks["torch.build"]["summary"]
    tf = got["report"]["facts"]["frameworks"]["tensorflow"]
    assert tf["status"] in ("ok", "absent")
    if tf["status"] == "absent":
        assert checks["tensorflow.import"]["status"] == "skip"
