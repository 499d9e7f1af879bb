"""`airlab convert RUN_DIR --to tensorflow|torch`: a trained run's weights, carried to the other
backend as a new run directory.

The new run holds the resolved config with the new `backend`, `env.json`, the source's
`metrics.jsonl`, one checkpoint at the source's step (the converted weights, a fresh optimizer,
the target backend's RNG, the source's counters and python/numpy RNG in `trainer.json`) and a
`summary.json` with the converted model's metrics on the validation split next to the source's.
`airlab sample NEW_DIR` samples from it; `airlab train --resume NEW_DIR train.steps=M
--allow-config-change` trains on from the converted weights (a fresh optimizer: moments do not
travel).

The target model is rebuilt from the config's spec by its backend and only weights are loaded
into it; nothing is unpickled and no framework file format is read.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy

from airlab import registry
from airlab.errors import CheckpointError, ConfigError, UsageError
from airlab.interop import weights as W

MODEL_FILE = "model.safetensors"


@dataclass
class Conversion:
    run_dir: Path
    source: Path
    checkpoint: Path
    summary: dict


def _source_weights(checkpoint: Path) -> dict[str, np.ndarray]:
    path = checkpoint / MODEL_FILE
    try:
        return safetensors.numpy.load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read the weights: {e}") from None


def convert_weights(weights: dict[str, np.ndarray], source: str, target_backend) -> dict[str, np.ndarray]:
    """`weights` written by the `source` backend -> the arrays `target_backend` (an instance) loads."""
    try:
        return W.convert(weights, source, target_backend)
    except W.ConversionError as e:
        raise CheckpointError(f"cannot convert the {source} weights to {target_backend.name}: {e}",
                              hint="was the checkpoint written by this run's model and config?") from None


def convert_run(run_dir: Path, to: str, out: Path | None = None, argv: list[str] | None = None) -> Conversion:
    from airlab.backends import backend_class
    from airlab.config import to_dict, to_yaml, validate
    from airlab.data import load_dataset
    from airlab.tasks import get_task
    from airlab.train import checkpoint as ckpt
    from airlab.train import rundir
    from airlab.train.loop import load_run_config

    run_dir = Path(run_dir)
    if to not in registry.BACKENDS:
        raise UsageError(f"--to {to}: expected one of {', '.join(registry.BACKENDS)}")
    config = load_run_config(run_dir, to_train=False)
    if config.backend == to:
        others = [b for b in registry.BACKENDS if b != to]
        raise UsageError(f"{run_dir} is already a {to} run", hint=f"convert to the other backend, e.g. --to "
                         f"{others[0]}")
    found = ckpt.newest_complete(run_dir / "checkpoints")
    if found is None:
        raise CheckpointError(f"{run_dir}: no complete checkpoint to convert")
    out = Path(out) if out is not None else run_dir.with_name(f"{run_dir.name}-{to}")
    if out.exists():
        raise UsageError(f"--out {out}: already exists", hint="choose a new directory with --out DIR")

    data = to_dict(config)
    data["backend"] = to
    try:
        target_config = validate(data)
    except ConfigError:
        raise
    task = get_task(registry.get_model(config.model.name).task)
    cls = backend_class(to)  # exit 4 with the install command when the target framework is missing
    d = target_config.data
    dataset = load_dataset(d.name, path=d.path, val_fraction=d.val_fraction, seed=target_config.seed, size=d.size,
                           limit=d.limit, options=d)
    backend = cls(target_config, dataset, task)

    source_weights = _source_weights(found)
    converted = convert_weights(source_weights, config.backend, backend)
    with tempfile.TemporaryDirectory(dir=run_dir.parent) as tmp:
        safetensors.numpy.save_file(converted, str(Path(tmp) / MODEL_FILE))
        backend.load_state(Path(tmp), weights_only=True)  # the target checks every name and shape
    if not backend.all_finite():
        raise CheckpointError(f"{found / MODEL_FILE}: non-finite weights; not converting them")

    trainer_state = ckpt.read_trainer_state(found)
    trainer_state["numerics"] = backend.numerics_facts()  # the target backend's: a resume compares with these
    val = backend.evaluate("val") if len(dataset.val) > 0 else {}
    source_summary = {}
    if (run_dir / "summary.json").is_file():
        try:
            source_summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            source_summary = {}

    out.mkdir(parents=True)
    try:
        (out / "config.yaml").write_text(to_yaml(target_config))
        env = rundir.environment(backend.environment(), list(argv or []))
        env["converted_from"] = {"run_dir": str(run_dir), "backend": config.backend, "checkpoint": str(found)}
        rundir.write_json(out / "env.json", env)
        if (run_dir / "metrics.jsonl").is_file():
            shutil.copyfile(run_dir / "metrics.jsonl", out / "metrics.jsonl")
        step = int(trainer_state.get("step", 0))
        checkpoint = ckpt.save(out / "checkpoints", step, backend.save_state, trainer_state)
        source_digest = rundir.weights_digest(source_weights.items())
        summary = {
            "name": config.name, "model": config.model.name, "task": task.name, "backend": to,
            "device": backend.device, "status": "converted", "steps": step,
            "final": {"val": val} if val else {},
            "params": backend.num_params(),
            "weights_sha256": rundir.weights_digest(backend.named_weights()),
            "checkpoint": str(checkpoint),
            "converted_from": {
                "run_dir": str(run_dir), "backend": config.backend, "checkpoint": str(found),
                "weights_sha256": source_digest,
                "final": {"val": (source_summary.get("final") or {}).get("val")}
                if source_summary.get("steps") == step else {},
                "params": source_summary.get("params"),
            },
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        rundir.write_json(out / "summary.json", summary)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return Conversion(out, run_dir, checkpoint, summary)
