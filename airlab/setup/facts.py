"""The planner's inputs, gathered from this machine or assumed (--assume-driver, --assume-gpu)."""

from __future__ import annotations

import platform
import re

from airlab.doctor.compat import cc_str, parse_cc
from airlab.errors import UsageError
from airlab.setup.plan import Machine

# distributions whose versions the doctor and the planner look at
WATCHED = ("torch", "torchvision", "torchaudio", "tensorflow", "tensorflow-cpu", "tf-keras", "keras", "pyyaml",
           "nvidia-ml-py", "pynvml", "numpy", "jax", "airlab")


def installed_packages(extra_prefix: str = "nvidia-") -> dict[str, str]:
    """{normalized name: version} for the watched distributions and pip's nvidia-* CUDA libraries."""
    from importlib import metadata

    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-").replace(".", "-")
        if name in WATCHED or name.startswith(extra_prefix):
            out.setdefault(name, dist.version)
    return dict(sorted(out.items()))


def parse_assume_driver(text: str | None) -> str | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d{3,}(\.\d+){0,2}", text.strip()):
        raise UsageError(f"--assume-driver: expected an NVIDIA driver version like 535.104.05. Received: {text!r}")
    return text.strip()


def parse_assume_gpu(text: str | None) -> tuple[str, ...] | None:
    """'8.0' / '8.0,8.6' / 'sm_90' / 'none' -> ('8.0',) / ('8.0', '8.6') / ('9.0',) / ()."""
    if text is None:
        return None
    if text.strip().lower() in ("none", "cpu", ""):
        return ()
    out = []
    for part in text.split(","):
        cc = parse_cc(part.strip())
        if cc is None:
            raise UsageError(f"--assume-gpu: expected compute capabilities like 8.0 or 8.6,9.0, or 'none'. "
                             f"Received: {text!r}")
        out.append(cc_str(cc))
    return tuple(out)


def detect_os(system: dict) -> str:
    name = system.get("os", platform.system())
    if name == "Darwin":
        return "darwin"
    if name == "Windows":
        return "windows"
    if system.get("wsl"):
        return "wsl"
    return "linux"


def detect_rocm() -> str | None:
    from pathlib import Path

    try:
        text = Path("/opt/rocm/.info/version").read_text().strip()
    except OSError:
        return None
    m = re.match(r"(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m and Path("/dev/kfd").exists() else None


def machine_facts(assume_driver: str | None = None, assume_gpu: tuple[str, ...] | None = None,
                  system: dict | None = None, nvidia: dict | None = None,
                  installed: dict[str, str] | None = None) -> Machine:
    """This machine as the planner sees it; --assume-* values replace what was detected, and then
    the installed packages are ignored (the plan is for another machine, e.g. a cluster image)."""
    from airlab.doctor.nvidia import probe_nvidia
    from airlab.doctor.system import probe_system

    system = probe_system() if system is None else system
    assumed = tuple(n for n, v in (("driver", assume_driver), ("gpu", assume_gpu)) if v is not None)
    if nvidia is None and (assume_driver is None or assume_gpu is None):
        nvidia = probe_nvidia()
    nvidia = nvidia or {}
    driver = assume_driver if assume_driver is not None else nvidia.get("driver_version")
    if assume_gpu is not None:
        gpus = assume_gpu
    else:
        gpus = tuple(g["cc"] for g in nvidia.get("gpus", []) if g.get("cc"))
    # facts from /proc name the GPUs but not their compute capability
    unknown = 0 if assume_gpu is not None else sum(1 for g in nvidia.get("gpus", []) if not g.get("cc"))
    return Machine(
        driver=driver, gpus=gpus, python=system["python"]["version"], os=detect_os(system),
        arch={"AMD64": "x86_64", "arm64": "aarch64"}.get(system.get("machine"), system.get("machine") or "x86_64"),
        unknown_gpus=unknown, installed={} if assumed else (installed_packages() if installed is None else installed),
        rocm=None if assumed else detect_rocm(), assumed=assumed)
