"""The config schema. Unknown keys are forbidden everywhere; `model` is one of the registered
model specs, chosen by `model.name` (see airlab/registry.py and airlab/specs/)."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airlab import registry
from airlab.backends import table
from airlab.specs.base import refuse_bools
from airlab.train.trackers import TRACKERS


class _Section(BaseModel):
    # floats are finite everywhere (`.inf`, `.nan` and 1e999 are refused); bools are not numbers
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _no_bools = model_validator(mode="before")(classmethod(refuse_bools))


class AugmentConfig(_Section):
    random_crop: int = Field(0, ge=0, le=64, description="pad each side by N pixels (zeros) and crop back at a random "
                                                         "offset; 0: off")
    horizontal_flip: bool = Field(False, description="mirror half of the training images left-right")


# the user's own data, by kind (airlab/data/: one loader file each); data.path names the file or folder
USER_KINDS = ("folder", "npz", "text", "csv", "parquet")
_NOT_IMAGES = ("text", "csv", "parquet", "pycorpus", "tinyshakespeare")  # augment and normalize: images only


class DataConfig(_Section):
    name: str = Field("shapes", description="dataset name, or a kind of your own data: folder, npz, text, csv, "
                                            "parquet (see the README's Datasets and Your own data)")
    path: str | None = Field(None, description="your data (file or folder); for a built-in dataset, the directory "
                                               "holding its files (air-gapped use)")
    batch_size: int = Field(128, ge=1, description="training batch size")
    eval_batch_size: int | None = Field(None, ge=1, description="evaluation batch size (default: 4x batch_size)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of train held out for validation (0: "
                                                                 "train on every example, no validation)")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="your data without a test split: fraction of train "
                                                                  "held out for testing")
    size: int | None = Field(None, ge=1, description="number of training samples of a generated dataset")
    limit: int | None = Field(None, ge=1, description="use only the first N training samples (smoke runs)")
    image_size: tuple[int, int] | None = Field(None, description="folder: resize every image to [H, W]")
    channels: Literal[1, 3] | None = Field(None, description="folder: convert images to 1 (grayscale) or 3 (RGB) "
                                                             "channels (default: 1 when every image is grayscale)")
    tokenizer: Literal["char", "bpe"] = Field("char", description="text: characters, or byte-level BPE trained on "
                                                                 "the training text")
    vocab_size: int = Field(512, ge=260, le=65536, description="text with tokenizer: bpe: the vocabulary size")
    label: str = Field("label", min_length=1, description="csv/parquet: the label column")
    features: list[str] | None = Field(None, description="csv/parquet: the feature columns (default: all but the "
                                                         "label)")
    augment: AugmentConfig | None = Field(None, description="images: random crop and flip while training")
    normalize: bool = Field(False, description="images: subtract the training split's per-channel mean, divide "
                                               "by its std")
    placement: Literal["auto", "device", "stream"] = Field(
        "auto", description="device: every split on the device (the fast path); stream: batches gathered on the "
                            "host and prefetched; auto: the device when the data fits")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from airlab.data import dataset_names

        if v not in dataset_names():
            suggestion = registry.close_matches(v, dataset_names())
            raise ValueError(f"unknown dataset {v!r}" + (f"; {suggestion}" if suggestion else "")
                             + f" (known: {', '.join(dataset_names())})")
        return v

    @field_validator("image_size")
    @classmethod
    def _size(cls, v):
        if v is not None and min(v) < 1:
            raise ValueError(f"Expected two positive integers [H, W]. Received: image_size={list(v)}")
        return v

    @model_validator(mode="after")
    def _kinds(self) -> "DataConfig":
        user = self.name in USER_KINDS
        if user and not self.path:
            raise ValueError(f"data.name: {self.name} reads your own data: give data.path (the "
                             + ("folder" if self.name == "folder" else "file or folder" if self.name == "text"
                                else "file") + ")")
        wrong = []
        if self.name != "folder":
            wrong += [k for k in ("image_size", "channels") if getattr(self, k) is not None]
        if self.name != "text" and self.tokenizer != "char":
            wrong.append("tokenizer")
        if self.name not in ("csv", "parquet"):
            wrong += [k for k in ("features",) if getattr(self, k) is not None]
            if self.label != "label":
                wrong.append("label")
        if not user and self.test_fraction:
            wrong.append("test_fraction")
        if self.name in _NOT_IMAGES:
            wrong += [k for k in ("augment", "normalize") if getattr(self, k)]
        if wrong:
            raise ValueError(f"data.{wrong[0]} does not apply to data.name: {self.name}"
                             + (" (image_size and channels: folder; tokenizer: text; label and features: csv, "
                                "parquet; test_fraction: your own data; augment and normalize: images)"))
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"data.val_fraction + data.test_fraction must be below 1 (they leave nothing to train "
                             f"on). Received: {self.val_fraction} + {self.test_fraction}")
        return self


class EarlyStoppingConfig(_Section):
    metric: str = Field("val/loss", description="metric watched, as written in metrics.jsonl: split/name")
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(_Section):
    epochs: int | None = Field(None, ge=1, description="passes over the training split (or give steps)")
    steps: int | None = Field(None, ge=1, description="optimizer steps (or give epochs)")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    optimizer_impl: Literal["auto", "fused", "foreach", "for_loop"] = Field(
        "auto", description="torch: how the optimizer updates the weights: one fused kernel, multi-tensor (foreach) "
                            "kernels, or a Python loop over the parameters; auto: fused on CPU (measured per "
                            "optimizer.step() of the six shipped configs on 2 AVX-512 cores: x2.6 to x4.0 over "
                            "for_loop, foreach within x1.2 of it; scripts/bench_vs_tuned.py) and on CUDA (PyTorch's "
                            "guidance, not measured here), for_loop elsewhere. "
                            "fused matches for_loop within rounding, not bitwise; resume is bitwise under either. "
                            "TensorFlow ignores it")
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd only")
    nesterov: bool = Field(False, description="sgd only; needs momentum > 0")
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to lr")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the lr reached at the last step")
    decay_steps: int | None = Field(None, ge=1, description="cosine: steps to decay over (default: all steps)")
    step_size: int = Field(1000, ge=1, description="step schedule: multiply lr by gamma every step_size steps")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    grad_clip: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this value")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "auto", description="fp32 | bf16 (autocast) | fp16 (CUDA, with a grad scaler) | auto: bf16 on a GPU that has "
                            "it (stated rule) and, on torch, on a CPU with AVX512-BF16 or AMX (measured by "
                            "scripts/bench_vs_tuned.py on AVX512-BF16 without AMX: x1.3 to x2.1 over fp32 on five "
                            "of the six shipped models, x1.0 on the Transformer, the same validation loss), fp32 "
                            "elsewhere (CPUs that only emulate bf16; TensorFlow on a CPU)")
    compile: bool = Field(False, description="torch.compile the model (off by default: on 2 CPU cores it took 98 s "
                                             "to compile the MLP and ran no faster after, scripts/bench_vs_tuned.py "
                                             "--compile)")
    deterministic: bool = Field(False, description="use deterministic algorithms only")
    log_every: int = Field(50, ge=1, description="steps between training-metric lines")
    eval_every: int | None = Field(None, ge=1, description="steps between evaluations (default: each epoch)")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between checkpoints (default: each epoch)")
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept")
    early_stopping: EarlyStoppingConfig | None = None
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (gradient accumulation)")
    auto_batch_size: bool = Field(False, description="on out-of-memory: halve the micro-batch, keep the batch "
                                                     "by accumulating gradients")
    max_batch_halvings: int = Field(4, ge=1, le=16, description="with auto_batch_size: the most halvings tried")
    on_nonfinite: Literal["error", "skip"] = Field(
        "error", description="a step with a non-finite loss or gradient norm: stop (exit 3) or skip it")
    max_skipped_steps: int = Field(10, ge=0, description="with on_nonfinite: skip, the most steps skipped in a run")
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads for the framework's kernels (default: "
                                                                "the cores this process may use: affinity and cgroup quota)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give train.epochs or train.steps, not both")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("train.nesterov needs optimizer: sgd and momentum > 0")
        return self


class OutputConfig(_Section):
    runs_root: str = Field("runs", description="runs are written to <runs_root>/<name>-<timestamp>/")
    trackers: list[Literal[tuple(TRACKERS)]] = Field(  # type: ignore[valid-type]
        [], description="also show the run in these trackers while it trains: tensorboard (event files in the run "
                        "directory), mlflow (MLFLOW_TRACKING_URI, default sqlite:///<runs_root>/mlflow.db)")
    curves: bool = Field(True, description="a finished run draws its learning curves into curves.png")

    @field_validator("trackers")
    @classmethod
    def _trackers(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a tracker is named twice. Received: trackers={v}")
        return v


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


class _RunConfigBase(_Section):
    name: str = Field("run", min_length=1, max_length=100)
    seed: int = Field(0, ge=0, lt=2**32)
    backend: Literal[table.BACKENDS] = table.BACKENDS[0]  # type: ignore[valid-type]  # the backend table's names
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.fullmatch(v):
            raise ValueError(f"Expected auto, cpu, cuda, cuda:N or mps. Received: device={v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names the run directory)")
        return v


@functools.cache
def run_config_class() -> type[BaseModel]:
    """The full schema, with `model` a discriminated union of every registered spec."""
    specs = tuple(registry.spec_classes())
    model_type = Annotated[Union[specs], Field(discriminator="name")]  # type: ignore[valid-type]

    class RunConfig(_RunConfigBase):
        model: model_type  # type: ignore[valid-type]

    return RunConfig


def section_fields(path: tuple, data: dict) -> list[str] | None:
    """Field names allowed at a key path (for did-you-mean), or None when unknown."""
    cls: type[BaseModel] = run_config_class()
    for key in path:
        if cls is run_config_class() and key == "model":
            name = (data.get("model") or {}).get("name") if isinstance(data.get("model"), dict) else None
            try:
                cls = registry.spec_class(name) if name else None
            except Exception:
                return None
            if cls is None:
                return None
            continue
        field = cls.model_fields.get(str(key))
        if field is None:
            return None
        ann = field.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return None
        cls = sub
    return list(cls.model_fields)
