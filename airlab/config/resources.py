"""Is a model absurd for this machine? An analytic estimate, without importing any framework.

The parameter count comes from the spec (`num_params`, plain integer arithmetic) at the shapes
of the configured dataset where they are known without reading it, else at the spec's
`default_data`. Training memory is the fp32 lower bound every backend needs whatever the batch:
weights + gradients + optimizer state (adam/adamw: 2 moments; sgd with momentum: 1; plain sgd:
none), 4 bytes each. It is compared with the machine's total RAM (psutil): a model whose bare
training state does not fit there cannot train on this machine, on its CPU or on a GPU beside it.
Activations are left out, so a model that passes may still need a smaller batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from airlab.specs.base import DataInfo

BYTES_PER_VALUE = 4  # fp32: mixed precision keeps fp32 master weights and optimizer state too


@dataclass(frozen=True)
class Estimate:
    params: int
    info: DataInfo  # the shapes the count is for
    data_note: str  # "cifar10's input (3, 32, 32)" or "the default input (1, 28, 28)"
    state_copies: int  # weights, gradients and optimizer moments
    optimizer_note: str  # "adam's 2 moments"

    @property
    def train_bytes(self) -> int:
        return self.params * BYTES_PER_VALUE * self.state_copies


def _optimizer_moments(train) -> tuple[int, str]:
    if train.optimizer in ("adam", "adamw"):
        return 2, f"{train.optimizer}'s 2 moments"
    if train.momentum > 0:
        return 1, "sgd's momentum buffer"
    return 0, "no optimizer state (plain sgd)"


def estimate(config) -> Estimate | None:
    """The parameter count and training-state size of a validated config's model; None when the
    spec cannot be counted for any shape known here (its data decides at build time)."""
    try:
        from airlab.data.catalog import known_info
    except ImportError:  # pragma: no cover - a tree without the dataset catalog
        known_info = lambda name: None  # noqa: E731

    spec = config.model
    candidates: list[tuple[DataInfo, str]] = []
    info = known_info(config.data.name)
    if info is not None:
        candidates.append((info, f"{config.data.name}'s input {info.input_shape or '(tokens)'}"))
    default = type(spec).default_data
    candidates.append((default, f"the default input {default.input_shape or '(tokens)'}"))
    moments, note = _optimizer_moments(config.train)
    for info, data_note in candidates:
        try:
            params = int(spec.num_params(info))
        except (ValueError, OverflowError, ZeroDivisionError):
            continue
        return Estimate(params, info, data_note, 2 + moments, note)
    return None


def machine_memory() -> tuple[int, str] | None:
    """(bytes, what they are) of the memory a model is compared with; None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().total), "total RAM"
    except Exception:  # no psutil, or a platform it cannot read: skip the check
        return None


def count(n: int) -> str:
    """An integer for people: 1,234,567 up to a trillion, then 7.95e+14 (any size, no overflow)."""
    if n < 10**12:
        return f"{n:,}"
    exp = max(0, int((n.bit_length() - 1) * 0.30102999566398120) - 1)
    while n >= 10 ** (exp + 1):
        exp += 1
    mantissa = n * 100 // 10**exp  # 3 significant digits, integer arithmetic
    return f"{mantissa // 100}.{mantissa % 100:02d}e+{exp}"


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(n: int) -> str:
    """Bytes for people, for any size (12.7 PiB; beyond EiB: 1.23e+30 bytes)."""
    if n >= 1024 ** len(_UNITS):
        return f"{count(n)} bytes"
    i = 0
    while i + 1 < len(_UNITS) and n >= 1024 ** (i + 1):
        i += 1
    return f"{n} B" if i == 0 else f"{n / 1024 ** i:.1f} {_UNITS[i]}"


def check(config) -> str | None:
    """A one-line reason the model is absurd for this machine (without location), or None."""
    est = estimate(config)
    memory = machine_memory()
    if est is None or memory is None:
        return None
    total, what = memory
    if est.train_bytes <= total:
        return None
    return (f"{count(est.params)} parameters at {est.data_note} need about {human_bytes(est.train_bytes)} "
            f"to train (fp32 weights, gradients and {est.optimizer_note}, before activations), more than "
            f"this machine's {human_bytes(total)} of memory ({what})")
