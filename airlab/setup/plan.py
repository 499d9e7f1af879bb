"""The setup planner: a pure function from a machine's facts to the framework wheels that fit it.

    plan_setup(Machine(driver="535.104.05", gpus=("8.0",), python="3.11", os="linux"), ["torch"])

PyTorch: the newest release and variant in the compat table, for the running Python, that loads
on this driver (CUDA minor-version compatibility: any 12.x build on >= 525.60.13, 13.x on >= 580)
and whose arch list covers every GPU with native code, or, where a GPU is covered only by PTX,
whose toolkit the driver fully supports. Below the toolkit's full-support minimum the plan warns
and names the driver that lifts it. TensorFlow: `tensorflow[and-cuda]` when the GPU and driver
qualify, the CPU build otherwise. Each choice carries one line of reason, and the rule that applied.

No I/O here: gathering the facts and running pip live in airlab.setup (machine_facts, execute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

from airlab.doctor.compat import (Compat, cc_str, coverage, load, parse_cc, parse_version, python_in_range,
                                  toolkit_variant, version_at_least)

OSES = ("linux", "wsl", "windows", "darwin")


@dataclass(frozen=True)
class Machine:
    """What the plan depends on. `gpus` are NVIDIA compute capabilities ('8.6'); `installed` maps
    distribution names (lower case, dashes) to versions ('torch' -> '2.13.0+cpu')."""

    driver: str | None = None
    gpus: tuple[str, ...] = ()
    python: str = "3.11"
    os: str = "linux"
    arch: str = "x86_64"
    installed: Mapping[str, str] = field(default_factory=dict)
    rocm: str | None = None
    unknown_gpus: int = 0  # GPUs seen (e.g. in /proc) whose compute capability is unknown
    assumed: tuple[str, ...] = ()  # which facts were given by --assume-* rather than detected

    @property
    def column(self) -> str:
        """Driver-table column: WSL2 and Windows report the Windows driver version."""
        return "windows" if self.os in ("windows", "wsl") else "linux"

    def describe(self) -> str:
        gpus = ", ".join(f"CC {g}" for g in self.gpus) if self.gpus else "no NVIDIA GPU"
        driver = f"driver {self.driver}" if self.driver else "no NVIDIA driver"
        return f"{self.os}/{self.arch}, Python {self.python}, {gpus}, {driver}"


@dataclass
class Choice:
    backend: str                 # torch | tensorflow
    action: str                  # install | keep | none
    variant: str                 # cpu | cu128 | rocm6.3 | default | and-cuda | none
    requirements: list[str]      # pip requirement strings
    index_url: str | None
    rule: str                    # the rule that decided: native | ptx | cpu-no-gpu | cpu-fallback | ...
    reason: str                  # one line
    warnings: list[str] = field(default_factory=list)
    uninstall: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # candidates passed over, one line each

    def pip_args(self) -> list[str]:
        """Arguments after `pip install` (display and execution share them)."""
        args = list(self.requirements)
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args

    def display_command(self) -> str:
        import shlex

        return "pip install " + " ".join(shlex.quote(a) for a in self.pip_args())


@dataclass
class Plan:
    machine: Machine
    choices: list[Choice]

    @property
    def actionable(self) -> list[Choice]:
        return [c for c in self.choices if c.action == "install"]

    def to_dict(self) -> dict:
        m = asdict(self.machine)
        m["installed"] = dict(self.machine.installed)
        return {"machine": m, "choices": [asdict(c) for c in self.choices]}


# --- PyTorch ------------------------------------------------------------------------------------


def _local_tag(version: str | None) -> str | None:
    if not version or "+" not in version:
        return None
    return version.split("+", 1)[1]


def _torch_extras(installed: Mapping[str, str]) -> list[str]:
    """torchvision / torchaudio are built per variant: reinstall them beside torch when present."""
    return [p for p in ("torchvision", "torchaudio") if p in installed]


def _torch_choice(variant: str, release: str | None, compat: Compat, machine: Machine, rule: str, reason: str,
                  warnings: list[str], rejected: list[str], index: bool = True) -> Choice:
    newest = compat.torch_releases()[0]
    pin = "torch" if release in (None, newest) else f"torch=={release}.*"
    reqs = [pin] + _torch_extras(machine.installed)
    installed = machine.installed.get("torch")
    action, uninstall = "install", []
    if installed:
        same_variant = _local_tag(installed) == variant or (variant == "default" and _local_tag(installed) is None)
        same_release = release in (None, newest) or parse_version(installed)[:2] == parse_version(release)[:2]
        if same_variant and same_release:
            action = "keep"
            reason = f"torch {installed} is already installed and fits: " + reason
        else:
            uninstall = ["torch"] + _torch_extras(machine.installed)
            warnings = warnings + [f"replaces the installed torch {installed}"]
    url = compat.torch_index_url(variant) if index else None
    return Choice("torch", action, variant, reqs, url, rule, reason, warnings, uninstall, rejected)


def plan_torch(machine: Machine, compat: Compat | None = None) -> Choice:
    compat = compat or load()
    gpus = [parse_cc(g) for g in machine.gpus]
    if machine.os == "darwin":
        return _torch_choice("default", None, compat, machine, "macos-default",
                             "macOS: PyPI's torch wheel (Metal/MPS on Apple silicon; no CUDA on macOS)", [], [],
                             index=False)
    if not gpus and not machine.unknown_gpus:
        if machine.rocm:
            return _plan_rocm(machine, compat)
        where = "assumed" if "gpu" in machine.assumed else "detected"
        return _torch_choice("cpu", None, compat, machine, "cpu-no-gpu",
                             f"no NVIDIA GPU {where}: the CPU wheel (PyPI's Linux default is a multi-GB CUDA build)",
                             [], [])
    driver, column = machine.driver, machine.column
    rejected: list[str] = []
    needs: list[tuple[str, str, str]] = []  # (variant, release, driver that would load it with coverage)
    for release in compat.torch_releases():
        row = compat.torch_release(release)
        low, spec = compat.torch_python_range(release)
        py = parse_version(machine.python)[:2]
        if python_in_range(machine.python, spec) is False or (spec is None and low and py < low[:2]):
            listed = spec or f">= {'.'.join(map(str, low))}, inferred"
            rejected.append(f"torch {release}: not built for Python {machine.python} ({listed})")
            continue
        for toolkit in sorted(row["cuda"], key=parse_version, reverse=True):
            variant = toolkit_variant(toolkit)
            arch = compat.torch_arch_list(variant, machine.arch)
            if arch is None:
                rejected.append(f"torch {release} {variant}: arch list unknown to airlab")
                continue
            entries, verified = arch
            covers = [(cc, *coverage(cc, entries)) for cc in gpus]
            missing = [cc_str(cc) for cc, kind, _ in covers if kind == "none"]
            if missing:
                rejected.append(f"torch {release} {variant}: no code for CC {', '.join(missing)}")
                continue
            ptx = [cc for cc, kind, _ in covers if kind == "ptx"]
            rule_load, full = compat.loadability(toolkit, driver, column)
            minor = compat.minor_compat_min(toolkit.split(".")[0], column)
            lifts = full if ptx else (minor or full)
            needs.append((variant, release, lifts))
            if rule_load == "no":
                rejected.append(f"torch {release} {variant}: driver {driver} is below {minor} "
                                f"(CUDA {toolkit.split('.')[0]} minor-version compatibility)")
                continue
            if ptx and rule_load == "minor":
                rejected.append(f"torch {release} {variant}: CC {', '.join(cc_str(c) for c in ptx)} only by PTX, "
                                f"which needs driver >= {full} (full CUDA {toolkit} support)")
                continue
            coverage_text = "; ".join(
                f"CC {cc_str(cc)} {'natively' if kind == 'native' else 'by PTX JIT'} ({entry})" for cc, kind, entry in covers)
            warnings = []
            if machine.unknown_gpus:
                warnings.append(f"{machine.unknown_gpus} GPU(s) of unknown compute capability (no NVML): "
                                f"coverage not checked; `airlab doctor` checks it after install")
            if rule_load == "full":
                load_text = f"driver {driver} fully supports CUDA {toolkit} (>= {full})"
            elif rule_load == "minor":
                load_text = (f"driver {driver} loads it by CUDA {toolkit.split('.')[0]} minor-version "
                             f"compatibility (>= {minor})")
                warnings.append(f"driver {driver} is below {full}, CUDA {toolkit}'s full-support minimum: "
                                f"{variant} loads by minor-version compatibility only (no PTX JIT); "
                                f"driver >= {full} lifts this")
            else:
                load_text = "driver unknown"
                warnings.append(f"driver unknown: {variant} needs >= {lifts} on {column}")
            if not verified:
                warnings.append(f"{variant}'s arch list is UNVERIFIED in airlab's table; "
                                f"`airlab doctor` checks torch.cuda.get_arch_list() after install")
            rule = "ptx" if ptx else "native"
            newest = compat.torch_releases()[0]
            which = f"torch {release}" if release != newest else f"newest torch (>= {release})"
            reason = f"{variant}: {which}; {load_text}; {coverage_text or 'compute capability unknown'}"
            return _torch_choice(variant, release, compat, machine, rule, reason, warnings, rejected)
    # nothing loads and covers: CPU, naming the driver that would allow a CUDA build
    if needs:
        newest = needs[0]
        cheapest = min(needs, key=lambda n: parse_version(n[2]) or (0,))
        allow = f"driver >= {cheapest[2]} would allow {cheapest[0]} (torch {cheapest[1]})"
        if newest[2] != cheapest[2]:
            allow += f"; >= {newest[2]} the newest, {newest[0]} (torch {newest[1]})"
        warning = (f"no CUDA build in airlab's table both loads on driver {driver} and covers "
                   f"CC {', '.join(machine.gpus)}; {allow}")
        reason = f"CPU wheel: driver {driver} is too old for every CUDA build that covers CC {', '.join(machine.gpus)}"
    else:
        warning = (f"no PyTorch CUDA build in airlab's table has code for CC {', '.join(machine.gpus)}"
                   f" on {machine.arch}")
        reason = f"CPU wheel: no CUDA build covers CC {', '.join(machine.gpus)}"
    return _torch_choice("cpu", None, compat, machine, "cpu-fallback", reason, [warning], rejected)


def _plan_rocm(machine: Machine, compat: Compat) -> Choice:
    for release in compat.torch_releases():
        rocm = compat.torch_release(release)["rocm"]
        if not rocm:
            continue
        have = parse_version(machine.rocm)
        fitting = [v for v in rocm if parse_version(v)[:2] <= have[:2]] or rocm
        v = sorted(fitting, key=parse_version)[-1]
        variant = f"rocm{v}"
        return _torch_choice(variant, release, compat, machine, "rocm",
                             f"{variant}: the newest ROCm variant in airlab's table (torch {release}) "
                             f"for ROCm {machine.rocm}",
                             ["ROCm variants of releases after the table's are UNVERIFIED; see pytorch.org"], [])
    return _torch_choice("cpu", None, compat, machine, "cpu-fallback", "CPU wheel: no ROCm variant known", [], [])


# --- TensorFlow ---------------------------------------------------------------------------------


def plan_tensorflow(machine: Machine, compat: Compat | None = None) -> Choice:
    compat = compat or load()
    rules = compat.tf_rules
    rows = [r for r in compat.tf_configs() if python_in_range(machine.python, r[1])]
    if not rows:
        return Choice("tensorflow", "none", "none", [], None, "no-python",
                      f"no TensorFlow release in airlab's table supports Python {machine.python}", [])
    version, py, cudnn, cuda = rows[0]
    line = ".".join(version.split(".")[:2])
    gpus = [parse_cc(g) for g in machine.gpus]
    warnings: list[str] = []
    gpu_ok, why = False, ""
    if machine.os == "windows":
        why = (f"native Windows: TensorFlow's GPU support ended with {rules['windows_native_gpu_max']}; "
               f"for the GPU use WSL2 (Windows build >= {rules['wsl2_min_windows_build']})")
    elif machine.os == "darwin":
        why = "macOS: TensorFlow has no CUDA build"
    elif not gpus and not machine.unknown_gpus:
        why = f"no NVIDIA GPU {'assumed' if 'gpu' in machine.assumed else 'detected'}"
    else:
        need = rules["driver_min"]["wsl" if machine.os == "wsl" else "linux"]
        oldest = min(parse_cc(a.rstrip("+")) for a in rules["documented_archs"])
        full = compat.driver_min(cuda, machine.column)
        too_old = [cc_str(c) for c in gpus if c < oldest]
        # TensorFlow's CUDA cannot compile native code for GPUs newer than it knows: PTX JIT there
        max_cc = compat.toolkit_max_cc(cuda)
        ptx = [c for c in gpus if max_cc is not None and c > max_cc]
        if machine.driver is None:
            why = "no NVIDIA driver known"
        elif not version_at_least(machine.driver, need):
            why = f"driver {machine.driver} is below {need}, TensorFlow's CUDA 12 minimum"
            warnings.append(f"driver >= {need} would allow tensorflow[and-cuda]")
        elif too_old:
            why = f"CC {', '.join(too_old)} is below TensorFlow's oldest documented arch ({cc_str(oldest)})"
        elif ptx and full and not version_at_least(machine.driver, full):
            why = (f"CC {', '.join(cc_str(c) for c in ptx)} runs TensorFlow {line} only by PTX JIT, which needs "
                   f"driver >= {full} (full CUDA {cuda} support)")
            warnings.append(f"driver >= {full} would allow tensorflow[and-cuda]")
        else:
            gpu_ok = True
            how = (f"; CC {', '.join(cc_str(c) for c in ptx)} by PTX JIT (CUDA {cuda} compiles "
                   f"native code up to CC {cc_str(max_cc)})" if ptx else "")
            why = (f"GPU CC {', '.join(machine.gpus) or 'unknown'} and driver {machine.driver} >= {need} qualify: TensorFlow "
                   f"{line} (tested with CUDA {cuda}, cuDNN {cudnn}) with pip's CUDA libraries{how}")
    installed_tf = machine.installed.get("tensorflow")
    installed_cpu = machine.installed.get("tensorflow-cpu")
    uninstall: list[str] = []
    if gpu_ok:
        req, variant = f"tensorflow[and-cuda]=={line}.*", "and-cuda"
        fits = (installed_tf and parse_version(installed_tf)[:2] == parse_version(line)[:2]
                and any(k.startswith("nvidia-cudnn-cu") for k in machine.installed))
        if installed_cpu:
            uninstall.append("tensorflow-cpu")
        rule = "and-cuda"
    else:
        cpu_pkg = "tensorflow-cpu" if (machine.arch == "x86_64" and machine.os in ("linux", "wsl", "windows")) \
            else "tensorflow"
        req, variant = f"{cpu_pkg}=={line}.*", "cpu"
        have = installed_cpu if cpu_pkg == "tensorflow-cpu" else installed_tf
        fits = bool(have and parse_version(have)[:2] == parse_version(line)[:2])
        if cpu_pkg == "tensorflow-cpu" and installed_tf:
            uninstall.append("tensorflow")  # both provide the `tensorflow` module
        why = f"CPU build: {why}"
        rule = "cpu"
    if fits and not uninstall:
        return Choice("tensorflow", "keep", variant, [req], None, rule,
                      f"TensorFlow {installed_tf or installed_cpu} is already installed and fits: {why}", warnings)
    if installed_tf or installed_cpu:
        warnings.append(f"replaces the installed TensorFlow {installed_tf or installed_cpu}")
        uninstall = sorted(set(uninstall) | {k for k in ("tensorflow", "tensorflow-cpu") if k in machine.installed})
    return Choice("tensorflow", "install", variant, [req], None, rule, why, warnings, uninstall)


def plan_setup(machine: Machine, backends: list[str] | tuple[str, ...] = ("torch",), compat: Compat | None = None) -> Plan:
    from airlab.backends import table

    compat = compat or load()
    choices = []
    for b in backends:
        if b not in table.BACKENDS:
            raise ValueError(f"unknown backend {b!r}")
        choices.append(table.load(table.get(b).setup_planner)(machine, compat))
    return Plan(machine, choices)
