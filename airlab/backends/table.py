"""Every backend, described once. Everything that depends on which backends exist reads this
table: the config schema, the registry's builders, the run loop's RNG parts, the converter, the
bench, the doctor and setup. Framework-free: nothing here imports a framework, and every
reference is a "module:attribute" string imported on first use.

Adding a backend is one folder (`airlab/backends/<name>/`, with the same module names as its
siblings: backend.py, models/<model>.py, bench.py), one row here, and one converter to the
canonical weight layout (airlab/interop/layout_<name>.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendRow:
    name: str  # the config's `backend:` value
    display: str  # for people: "PyTorch"
    module: str  # the framework's import name; its presence means the backend can run
    distributions: tuple[str, ...]  # pip distributions that provide it (installed-package checks)
    extra: str  # airlab's pip extra: pip install "airlab[<extra>]"
    install_more: str  # a second install hint for people (other builds)
    implementation: str  # "module:Class" of the Backend (airlab.backends.base.Backend)
    rng_parts: tuple[str, ...]  # the parts of its RNG state a resume restores (AIRLAB_RESUME_SKIP names)
    devices: tuple[str, ...]  # device kinds it can run on: "cpu", "cuda", "mps"
    aliases: tuple[str, ...]  # other names people type for it on the command line ("tf")
    setup_planner: str  # "module:function" (Machine, Compat) -> Choice: the wheel `airlab setup` picks
    doctor: str  # the module of its `airlab doctor` section: its checks (airlab.doctor.checks.registry)
    probe: str  # the script, in airlab/doctor/probes/, that learns the facts those checks judge
    launcher: str  # "module:function" (nproc, argv, max_restarts=0) -> exit code, or None to go on in
    #                this process: how `airlab train --nproc N` starts a run of N (torchrun's agent;
    #                tf.distribute's replicas in one process)

    @property
    def package(self) -> str:
        """airlab's package for this backend: models/, bench.py, weights.py live here."""
        return f"airlab.backends.{self.name}"

    @property
    def bench(self) -> str:
        return f"{self.package}.bench"

    @property
    def weights(self) -> str:
        """The converter between this backend's weight layout and the canonical one
        (airlab/interop/weights.py); framework-free, so it lives outside the backend's package,
        whose import loads the framework."""
        return f"airlab.interop.layout_{self.name}"

    def builder(self, model: str) -> str:
        return f"{self.package}.models.{model}:build"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


ROWS: tuple[BackendRow, ...] = (
    BackendRow(
        name="torch", display="PyTorch", module="torch", distributions=("torch",), extra="torch",
        install_more="CPU-only torch: pip install torch --index-url https://download.pytorch.org/whl/cpu",
        implementation="airlab.backends.torch.backend:TorchBackend",
        rng_parts=("torch_rng", "scaler"), devices=("cpu", "cuda", "mps"), aliases=("pytorch",),
        setup_planner="airlab.setup.plan:plan_torch", doctor="airlab.doctor.checks.torch",
        probe="torch_probe.py", launcher="airlab.backends.torch.launch:launch"),
    BackendRow(
        name="tensorflow", display="TensorFlow", module="tensorflow",
        distributions=("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"), extra="tf",
        install_more='NVIDIA GPU: pip install "tensorflow[and-cuda]"',
        implementation="airlab.backends.tensorflow.backend:TensorFlowBackend",
        rng_parts=("tf_rng", "scaler"), devices=("cpu", "cuda"), aliases=("tf",),
        setup_planner="airlab.setup.plan:plan_tensorflow", doctor="airlab.doctor.checks.tensorflow",
        probe="tf_probe.py", launcher="airlab.backends.tensorflow.launch:launch"),
)

BACKENDS: tuple[str, ...] = tuple(row.name for row in ROWS)
_BY_NAME = {row.name: row for row in ROWS}


def canonical(name: str) -> str | None:
    """The backend a name or alias means ("tf" -> "tensorflow"), or None."""
    name = name.strip().lower()
    for row in ROWS:
        if name == row.name or name in row.aliases:
            return row.name
    return None


def get(name: str) -> BackendRow:
    """The row of a backend by its config name; KeyError for an unknown one."""
    return _BY_NAME[name]


def load(target: str) -> Any:
    """Import a "module:attribute" (or a bare module) named in the table."""
    module, _, attr = target.partition(":")
    imported = importlib.import_module(module)
    return getattr(imported, attr) if attr else imported
