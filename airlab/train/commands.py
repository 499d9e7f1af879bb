"""What `airlab sample` and `airlab train --dry-run` do with a run or a config, below the CLI.

- `sample(run_dir, n, seed, ...)`: new samples from a trained run's newest checkpoint, each text
  sample drawn from a stream of its own (see `samples.sample_seed`); refuses non-finite weights.
- `dry_run(config)`: validate, resolve and build the model, and summarise it. When the dataset's
  files are not here, the model is built from the dataset's known shapes (or the spec's defaults)
  and nothing is downloaded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from airlab import registry
from airlab.backends import backend_class
from airlab.data import Dataset, Split, catalog
from airlab.errors import CheckpointError, ConfigError, UsageError
from airlab.specs.base import DataInfo
from airlab.tasks import get_task
from airlab.train import checkpoint as ckpt
from airlab.train import samples
from airlab.train.loop import Plan, _check_early_stopping_metric, _load_data, load_run_config, make_plan

MODEL_FILE = "model.safetensors"  # the weights file of both backends' checkpoints
MAX_SEED = 2**32  # the config's `seed` range: 0 <= seed < 2**32
DEFAULT_LENGTH, DEFAULT_TEMPERATURE = 400, 0.8


# --- airlab sample -----------------------------------------------------------------------------


def _check_text_options(run_dir: Path, config, task, prompt, length, temperature, top_k) -> None:
    given = [flag for flag, value in (("--prompt", prompt), ("--length", length), ("--temperature", temperature),
                                      ("--top-k", top_k)) if value is not None]
    if given and task.samples != "text":
        raise UsageError(f"{', '.join(given)}: only for language models; {run_dir} is a {config.model.name} run "
                         f"that writes {task.samples}",
                         hint=f"leave {'it' if len(given) == 1 else 'them'} out, or sample a transformer run")
    if length is not None and (isinstance(length, bool) or int(length) < 1):
        raise UsageError(f"--length: expected a number of new tokens >= 1. Received: {length}")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"--temperature: expected a finite number > 0. Received: {temperature}",
                         hint="lower is more predictable (0.8 is the default); 1 samples the model as trained")
    if top_k is not None and int(top_k) < 1:
        raise UsageError(f"--top-k: expected an integer >= 1. Received: {top_k}")


def sample(run_dir: Path, n: int, seed: int | None = None, *, prompt: str | None = None, length: int | None = None,
           temperature: float | None = None, top_k: int | None = None) -> list[Path]:
    """Write new samples from a trained run's newest checkpoint into its samples/ directory.

    seed: sample i is drawn from `samples.sample_seed(seed, i)`, so a seed reproduces its samples
        and two seeds share none (default: from the clock).
    prompt, length, temperature, top_k: language models only (a UsageError for other runs);
        the prompt must use the dataset's characters.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir, to_train=False)
    task = get_task(registry.get_model(config.model.name).task)
    if task.samples is None:
        raise ConfigError(f"{run_dir}: a {task.name} model ({config.model.name}) does not generate samples",
                          hint="sample from a vae, autoencoder or transformer run")
    _check_text_options(run_dir, config, task, prompt, length, temperature, top_k)
    if seed is not None and not 0 <= seed < MAX_SEED:
        raise UsageError(f"--seed: expected 0 <= seed < 2**32. Received: {seed}")
    found = ckpt.newest_complete(run_dir / "checkpoints")
    if found is None:
        raise CheckpointError(f"{run_dir}: no complete checkpoint to sample from")
    cls = backend_class(config.backend)
    dataset = (_text_from_run(run_dir, config) if task.samples == "text" else None) or _load_data(config)
    text = {}
    if task.samples == "text":
        if prompt is not None:
            samples.encode_prompt(dataset, prompt)  # a UsageError naming unknown characters, before any model
        vocab = len(dataset.vocab or [])
        if top_k is not None and top_k > vocab:
            raise UsageError(f"--top-k: {top_k} is more than the {vocab} tokens of the vocabulary",
                             hint=f"choose 1 <= K <= {vocab}, or leave --top-k out to sample from all of them")
        text = {"prompt": prompt, "length": DEFAULT_LENGTH if length is None else int(length),
                "temperature": DEFAULT_TEMPERATURE if temperature is None else float(temperature),
                "top_k": None if top_k is None else int(top_k)}
    backend = cls(config, dataset, task, training=False)
    backend.load_state(found, weights_only=True)
    if not backend.all_finite():
        raise CheckpointError(f"{found / MODEL_FILE}: non-finite weights; not sampling from them",
                              hint="airlab never checkpoints non-finite weights: the file was changed after it "
                                   "was written; train again or restore it")
    seed = int(time.time()) % 2**31 if seed is None else int(seed)
    return samples.write(backend, dataset, task, run_dir / "samples", n=n, seed=seed,
                         tag=f"{found.name}-seed{seed}", **text)


def _text_from_run(run_dir: Path, config) -> Dataset | None:
    """A text run's vocabulary (or tokenizer) as the run directory keeps it (data.json, vocab or
    tokenizer.json), so sampling needs no data; None for a run written before data.json existed."""
    import json

    from airlab.data.tokenize import load_tokenizer

    try:
        facts = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tokenizer = load_tokenizer(run_dir) if isinstance(facts.get("tokenizer"), dict) else None
    vocab = list(tokenizer.vocab) if tokenizer is not None else facts.get("vocab")
    if not isinstance(vocab, list) or not vocab:
        return None
    empty = Split(np.zeros(0, dtype=np.int32))
    return Dataset(name=config.data.name, kind="text", train=empty, val=empty, vocab=vocab, tokenizer=tokenizer,
                   source=f"{run_dir / 'data.json'}")


# --- airlab train --dry-run --------------------------------------------------------------------


@dataclass
class DryRun:
    """What a dry run found: the summary of the built model, and the data it was built for."""

    config: object
    summary: object  # the backend's ModelSummary
    info: DataInfo  # what the model was built from
    plan: Plan | None  # None when the data was not loaded: steps per epoch unknown
    dataset: Dataset | None  # None when the data was not loaded
    data_note: str | None = None  # why the data was not loaded, and what the model was built from

    @property
    def total_steps(self) -> int | None:
        """Steps in all: from the plan, or from train.steps when the data was not loaded."""
        return self.plan.total_steps if self.plan is not None else self.config.train.steps


@dataclass
class _Placeholder(Dataset):
    """A few zeros of the right shape, standing in for data that is not here: enough for the
    backend to put "splits" on the device and for its summary to run one probing forward pass."""

    known: DataInfo | None = None

    @property
    def info(self) -> DataInfo:
        return self.known


def _placeholder(name: str, info: DataInfo, config) -> _Placeholder:
    if info.vocab_size is not None and not info.input_shape:
        context = int(getattr(config.model, "context_length", 1) or 1)
        ids = Split(np.zeros(context + 3, dtype=np.int32))  # room for two windows of context + 1
        return _Placeholder(name=name, kind="text", train=ids, val=ids, known=info)
    x = np.zeros((2, *info.input_shape), dtype=np.float32)
    split = Split(x, np.zeros(2, dtype=np.int64) if info.num_classes else None)
    return _Placeholder(name=name, kind="image", train=split, val=split, known=info)


def _built_from(info: DataInfo) -> str:
    if info.vocab_size is not None and not info.input_shape:
        return f"its vocabulary size {info.vocab_size}"
    shape = "(" + ", ".join(map(str, info.input_shape)) + ")"
    return f"its input shape {shape}"


def dry_run(config) -> DryRun:
    """Validate, resolve and build the model; summarise it without training.

    When the dataset's files are all here (or it is generated), the data is loaded as for training
    and the plan (steps per epoch) follows from it. Otherwise nothing is read or downloaded: the
    model is built from the dataset's published shapes (or the model's default data) and
    `data_note` says so.
    """
    entry = registry.get_model(config.model.name)
    task = get_task(entry.task)
    _check_early_stopping_metric(config, task)
    cls = backend_class(config.backend)
    d = config.data
    here = catalog.availability(d.name, d.path)
    if here.available:
        dataset = _load_data(config)
        backend = cls(config, dataset, task)
        return DryRun(config, backend.summary(), dataset.info, make_plan(config, dataset, task), dataset)
    info = catalog.known_info(d.name) or type(config.model).default_data
    kind = "text" if info.vocab_size is not None and not info.input_shape else "image"
    try:
        config.model.check_data(info)
    except ValueError as e:
        raise ConfigError(f"model.name: {config.model.name} cannot train on data.name: {d.name} ({kind} "
                          f"data): {e}",
                          hint="pick a dataset of the kind this model reads (see README: Datasets)") from None
    backend = cls(config, _placeholder(d.name, info, config), task)
    note = (f"data: {d.name} not loaded ({here.reason()}): model built from {_built_from(info)}; "
            "steps per epoch unknown")
    return DryRun(config, backend.summary(), info, None, None, note)


__all__ = ["DryRun", "dry_run", "sample"]
