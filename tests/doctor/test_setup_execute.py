"""`airlab setup` executing plans against a fake pip (a script that records its argv), never a shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from airlab.errors import EXIT_ENVIRONMENT, EnvironmentProblem
from airlab.setup import Installer, commands_for, find_installer, run_plan
from airlab.setup.execute import default_runner
from airlab.setup.plan import Machine, plan_setup

FAKE_PIP = """
import json, os, sys
with open(os.environ["FAKE_PIP_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
fail_on = os.environ.get("FAKE_PIP_FAIL_ON")
sys.exit(7 if fail_on and fail_on in sys.argv[1:] else 0)
"""


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    log = tmp_path / "pip.log"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))

    class Fake:
        installer = Installer("pip", (sys.executable, str(script)), sys.executable)

        @staticmethod
        def calls() -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return Fake


def gpu_plan(**installed):
    return plan_setup(Machine(driver="570.124.06", gpus=("8.0",), installed=installed), ["torch", "tensorflow"])


def test_plan_runs_as_argument_lists_in_order(fake_pip):
    plan = gpu_plan(torch="2.13.0+cpu", **{"tensorflow-cpu": "2.21.0"})
    done = run_plan(plan, fake_pip.installer)
    assert fake_pip.calls() == [
        ["uninstall", "-y", "torch"],
        ["install", "torch", "--index-url", "https://download.pytorch.org/whl/cu128"],
        ["uninstall", "-y", "tensorflow-cpu"],
        ["install", "tensorflow[and-cuda]==2.21.*"],
    ]
    assert done == commands_for(plan, fake_pip.installer)


def test_a_failing_pip_stops_the_plan_with_exit_4(fake_pip, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_FAIL_ON", "torch")
    with pytest.raises(EnvironmentProblem) as e:
        run_plan(gpu_plan(), fake_pip.installer)
    assert e.value.exit_code == EXIT_ENVIRONMENT
    assert "failed (exit 7)" in e.value.message and "--index-url" in e.value.message
    assert len(fake_pip.calls()) == 1  # tensorflow was not attempted


def test_nothing_to_do_runs_nothing(fake_pip):
    plan = plan_setup(Machine(installed={"torch": "2.13.0+cpu", "tensorflow-cpu": "2.21.0"}), ["torch", "tensorflow"])
    assert run_plan(plan, fake_pip.installer) == []
    assert fake_pip.calls() == []


def test_uv_when_present_else_pip():
    uv = find_installer(python="/py", which=lambda n: "/bin/uv" if n == "uv" else None)
    assert uv.kind == "uv"
    assert uv.install(["torch"]) == ["/bin/uv", "pip", "install", "--python", "/py", "torch"]
    assert uv.uninstall(["torch"]) == ["/bin/uv", "pip", "uninstall", "--python", "/py", "torch"]
    pip = find_installer(python="/py", which=lambda n: None)
    assert pip.install(["torch", "--index-url", "u"]) == ["/py", "-m", "pip", "install", "torch", "--index-url", "u"]


def test_the_runner_never_uses_a_shell(monkeypatch):
    seen = {}

    def fake_run(argv, **kwargs):
        seen["argv"], seen["kwargs"] = argv, kwargs
        return type("P", (), {"returncode": 0})()

    monkeypatch.setattr("airlab.setup.execute.subprocess.run", fake_run)
    assert default_runner(["pip", "install", "torch; rm -rf ~"]) == 0
    assert seen["argv"] == ["pip", "install", "torch; rm -rf ~"]
    assert not seen["kwargs"].get("shell")


def test_no_shell_anywhere_in_setup_or_doctor():
    root = Path(__file__).resolve().parents[2] / "airlab"
    for path in [*(root / "setup").rglob("*.py"), *(root / "doctor").rglob("*.py"), root / "cli" / "setup.py"]:
        text = path.read_text()
        for bad in ("shell=True", "os.system(", "os.popen(", "getoutput(", "getstatusoutput("):
            assert bad not in text, f"{path}: {bad}"


# --- through the CLI ----------------------------------------------------------------------------


@pytest.fixture
def cli_fakes(fake_pip, monkeypatch):
    """The CLI with the fake pip and a doctor that reports the given checks."""
    from airlab.doctor.checks import Check
    from airlab.doctor.core import Report

    state = {"checks": [Check("torch.import", "ok", "torch 2.10.0+cu128 imports")]}
    monkeypatch.setattr("airlab.setup.find_installer", lambda: fake_pip.installer)

    def run_doctor(backends, explicit=False, **kw):
        state["doctor"] = {"backends": backends, "explicit": explicit}
        return Report({}, state["checks"], tuple(backends))

    monkeypatch.setattr("airlab.doctor.core.run_doctor", run_doctor)
    state["pip"] = fake_pip
    return state


def test_cli_yes_installs_for_an_assumed_machine_then_checks(airlab_cli, cli_fakes):
    r = airlab_cli("setup", "--yes", "--assume-driver", "535.104.05", "--assume-gpu", "8.0")
    assert r.code == 0, r.err
    assert cli_fakes["pip"].calls() == [["install", "torch", "--index-url", "https://download.pytorch.org/whl/cu128"]]
    assert cli_fakes["doctor"] == {"backends": ("torch",), "explicit": True}
    assert "reason: cu128" in r.out and "warning: driver 535.104.05 is below 570.26" in r.out
    assert "after install:" in r.out


def test_cli_failing_framework_check_after_install_exits_4(airlab_cli, cli_fakes):
    from airlab.doctor.checks import Check

    cli_fakes["checks"] = [Check("torch.arch_coverage", "fail", "no code for CC 6.0", "x")]
    r = airlab_cli("setup", "--yes", "--assume-driver", "570.124.06", "--assume-gpu", "6.0")
    assert r.code == 4
    assert "torch.arch_coverage" in r.err_lines[0]


def test_cli_without_yes_on_a_non_terminal_installs_nothing(airlab_cli, cli_fakes):
    r = airlab_cli("setup", "--assume-driver", "570.124.06", "--assume-gpu", "9.0")
    assert r.code == 2
    assert "--yes" in r.err
    assert cli_fakes["pip"].calls() == []


def test_cli_confirmation_declined_installs_nothing(airlab_cli, cli_fakes, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("typer.confirm", lambda *a, **k: False)
    r = airlab_cli("setup", "--assume-driver", "570.124.06", "--assume-gpu", "9.0")
    assert r.code == 0 and "cancelled" in r.out
    assert cli_fakes["pip"].calls() == []


def test_cli_confirmation_accepted_installs(airlab_cli, cli_fakes, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("typer.confirm", lambda *a, **k: True)
    r = airlab_cli("setup", "--backend", "torch,tensorflow", "--assume-driver", "580.65.06", "--assume-gpu", "9.0")
    assert r.code == 0, r.err
    assert cli_fakes["pip"].calls() == [["install", "torch", "--index-url", "https://download.pytorch.org/whl/cu130"],
                                        ["install", "tensorflow[and-cuda]==2.21.*"]]


def test_cli_dry_run_json(airlab_cli, cli_fakes):
    r = airlab_cli("setup", "--dry-run", "--json", "--assume-driver", "535.104.05", "--assume-gpu", "8.0,9.0")
    assert r.code == 0
    data = json.loads(r.out)
    assert data["dry_run"] is True and data["machine"]["gpus"] == ["8.0", "9.0"]
    assert data["machine"]["assumed"] == ["driver", "gpu"]
    assert data["choices"][0]["variant"] == "cu128"
    assert data["commands"][0][-2:] == ["--index-url", "https://download.pytorch.org/whl/cu128"]
    assert cli_fakes["pip"].calls() == []


def test_cli_dry_run_here_plans_cpu_wheels(airlab_cli, cli_fakes):
    r = airlab_cli("setup", "--dry-run", "--backend", "torch")
    assert r.code == 0
    if "no NVIDIA GPU" in r.out:  # this CI machine
        assert "[cpu; rule cpu-no-gpu]" in r.out
        assert "whl/cpu" in r.out
    assert r.out_lines[-1] == "dry run: nothing installed"
    assert cli_fakes["pip"].calls() == []


@pytest.mark.parametrize("argv, message", [
    (["--assume-gpu", "banana"], "--assume-gpu"),
    (["--assume-driver", "latest"], "--assume-driver"),
    (["--backend", "jax"], "--backend"),
    (["--json"], "--json needs --dry-run or --yes"),
])
def test_cli_usage_errors(airlab_cli, cli_fakes, argv, message):
    r = airlab_cli("setup", *argv)
    assert r.code == 2 and message in r.err_lines[0]
    assert cli_fakes["pip"].calls() == []


def test_assume_none_plans_cpu(airlab_cli, cli_fakes):
    r = airlab_cli("setup", "--dry-run", "--assume-gpu", "none", "--assume-driver", "570.124.06")
    assert r.code == 0 and "no NVIDIA GPU assumed" in r.out and "whl/cpu" in r.out


def test_cli_yes_json_keeps_stdout_pure_json(airlab_cli, cli_fakes, monkeypatch):
    import subprocess as sp

    real_run = sp.run

    def run(argv, **kwargs):  # the real fake pip, but its output must not reach stdout
        assert kwargs.get("capture_output")
        p = real_run(argv, capture_output=True, text=True)
        return sp.CompletedProcess(argv, p.returncode, "pip says hello\n", "")

    monkeypatch.setattr("airlab.setup.execute.subprocess.run", run)
    r = airlab_cli("setup", "--yes", "--json", "--assume-driver", "570.124.06", "--assume-gpu", "8.0")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["doctor"]["verdict"]["status"] == "ok"
    assert "pip says hello" in r.err
    assert len(cli_fakes["pip"].calls()) == 1
