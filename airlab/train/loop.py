"""The backend-neutral run loop: data order, cadence of logging, evaluation and checkpoints,
early stopping, signals, the run directory and the summary.

Data order is a pure function of (seed, epoch) and the position within an epoch follows from the
step, so a checkpoint needs only the step to put the data back where it was.

Two seams: the process role (airlab.train.process) gates every write of the run, which only the
main process makes, and takes the decisions all processes share (stop on a signal or a closed
output, the non-finite skip, the out-of-memory back-off, early stopping) at the same points in
every process; the sinks (airlab.train.sinks) receive every record: the loop writes none itself.
"""

from __future__ import annotations

import gc
import json
import math
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from airlab import registry
from airlab.backends import backend_class, table
from airlab.backends.common import eval_batch_size
from airlab.config import load as config_load
from airlab.config import to_dict, to_yaml
from airlab.data import load_dataset
from airlab import faults, signals
from airlab.backends.base import NonFiniteStep, OutOfMemoryStep
from airlab.errors import (AirlabError, CheckpointError, ConfigError, DataError, EnvironmentProblem, Interrupted,
                           OutputClosed, ProcessLost, TrainingDiverged, UsageError, environment_cause, first_line)
from airlab.signals import SignalReceived
from airlab.tasks import Task, get_task
from airlab.train import checkpoint as ckpt
from airlab.train import flops, process, rundir, samples, sinks, threads
from airlab.train.order import BatchOrder
from airlab.train.progress import Rate, Reporter
from airlab.train.schedule import lr_function


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    is_main: bool = True  # False in the other processes of a run of several: they print nothing


@dataclass
class Plan:
    """How many steps, and when to log, evaluate and checkpoint."""

    examples_per_epoch: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    context: int | None


def make_plan(config, dataset, task: Task) -> Plan:
    t = config.train
    context = getattr(config.model, "context_length", None)
    n = len(dataset.train)
    examples = task.epoch_size(n, context)
    batch = config.data.batch_size
    steps_per_epoch = max(1, examples // batch)
    if t.steps is not None:
        total = t.steps
    else:
        total = (t.epochs or 1) * steps_per_epoch
    return Plan(
        examples_per_epoch=examples, batch_size=batch, steps_per_epoch=steps_per_epoch, total_steps=total,
        log_every=min(t.log_every, total), eval_every=t.eval_every or steps_per_epoch,
        checkpoint_every=t.checkpoint_every or steps_per_epoch, context=context)


def _share(config, world_size: int, unit: str = "processes") -> int:
    """Examples of every (global) batch each process computes: data.batch_size is the global
    batch, split into equal contiguous shares, so the gradient is the one-process gradient."""
    batch = config.data.batch_size
    if batch % world_size:
        raise ConfigError(f"data.batch_size: {batch} does not divide among {world_size} {unit} (the batch is "
                          f"the global batch, split equally)",
                          hint=f"use a multiple of {world_size}, e.g. data.batch_size={batch - batch % world_size or world_size}")
    share = batch // world_size
    if config.train.grad_accum > share:
        raise ConfigError(f"train.grad_accum: {config.train.grad_accum} micro-batches cannot split each process's "
                          f"share of {share} examples (data.batch_size {batch} over {world_size} {unit})")
    return share


def check_world_size(config, world_size: int, unit: str = "processes") -> None:
    """ConfigError unless `config` can train on `world_size` processes or replicas (its batch divides)."""
    _share(config, world_size, unit)


def _check_early_stopping_metric(config, task: Task) -> None:
    es = config.train.early_stopping
    if es is None:
        return
    allowed = [f"val/{m}" for m in task.metrics]
    if es.metric not in allowed:
        raise ConfigError(f"train.early_stopping.metric: {es.metric!r} is not reported by a {task.name} model "
                          f"(choose one of {', '.join(allowed)})")


def _load_data(config):
    """The dataset, checked against what the model needs (its kind of data: images, text or a
    table; then images of a shape, or a vocabulary)."""
    d = config.data
    spec = config.model
    dataset = load_dataset(d.name, path=d.path, val_fraction=d.val_fraction, seed=config.seed, size=d.size,
                           limit=d.limit, options=d)
    reads = tuple(getattr(spec, "reads", ("image",)))
    if dataset.kind not in reads:
        kinds = " or ".join(f"{k} data" for k in reads)
        raise ConfigError(f"model.name: {spec.name} reads {kinds}, and data.name: {d.name} is {dataset.kind} data",
                          hint=_kinds_hint(reads))
    task = registry.get_model(spec.name).task
    if task == "classification" and dataset.num_classes is not None and dataset.num_classes < 2:
        names = dataset.class_names or []
        raise DataError(f"data.path {d.path}: {dataset.num_classes} class ({', '.join(names)}); a classifier needs at "
                        f"least 2 (one folder or label per class)",
                        hint="add a folder per class, or train an autoencoder or vae on unlabelled images")
    if d.normalize and task in ("reconstruction", "vae"):
        raise ConfigError(f"data.normalize: a {spec.name} reconstructs pixels in [0, 1]; normalising its input "
                          f"would change what it reconstructs", hint="leave data.normalize out for this model")
    try:
        spec.check_data(dataset.info)
    except ValueError as e:
        raise ConfigError(f"model.name: {spec.name} cannot train on data.name: {d.name} ({dataset.kind} "
                          f"data): {e}", hint="pick a dataset of the kind this model reads (see README: Datasets)") from None
    context = getattr(spec, "context_length", None)
    if dataset.kind == "text" and context:
        for name, split in dataset.splits().items():
            need = context + 2  # one window of context + 1 tokens, and somewhere to start it
            if len(split) and len(split) < need:
                raise DataError(f"data.path {d.path or d.name}: the {name} split has {len(split):,} tokens, fewer than "
                                f"the {need} one window of model.context_length {context} needs",
                                hint="use more text, a larger data.val_fraction/test_fraction, or a smaller "
                                     "model.context_length")
    return dataset


def _kinds_hint(reads: tuple[str, ...]) -> str:
    names = {"image": "folder, npz, shapes, mnist, fashion_mnist, cifar10", "text": "text, pycorpus, tinyshakespeare",
             "table": "csv, parquet"}
    return "data this model reads: " + "; ".join(f"{k}: {names[k]}" for k in reads) + " (see README: Your own data)"


def quiet_signals() -> dict:
    """Another process of the run was lost: a launcher stops every process then (torchrun's agent,
    with SIGTERM), and its signal must not hide why this process stopped, which it is about to
    say. Returns the handlers it replaced (for signals.restore)."""
    if threading.current_thread() is threading.main_thread():
        return signals.install(lambda signum, frame: None)
    return {}


class _StopNow(SignalReceived):
    """A second stopping signal while training, raised from the handler: stop at once."""


class _NonFiniteElsewhere(NonFiniteStep):
    """A step refused because another process of the run found it non-finite."""

    def __init__(self, step: int):
        super().__init__(step, float("nan"), None)


class _Signals:
    """While training: a first SIGINT/SIGTERM/SIGHUP finishes the step, saves and exits
    130/143/129; a second one stops at once. Signals the process ignores stay ignored."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signals.install(self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)  # a third one ends the process
            raise _StopNow(signum)
        self.received = signum

    def __exit__(self, exc_type, exc, tb):
        signals.restore(self._old)
        if exc_type is not None and issubclass(exc_type, ProcessLost):
            quiet_signals()  # until the run has ended in this process (Trainer.run puts them back)


RESUME_SKIP_ENV = "AIRLAB_RESUME_SKIP"
# the parts of a checkpoint the backend restores, every backend's RNG parts among them (the table's)
_BACKEND_PARTS = frozenset({"model", "optimizer"}.union(*(row.rng_parts for row in table.ROWS)))
_RESUME_PARTS = _BACKEND_PARTS | {"python_rng", "numpy_rng", "counters"}


def _resume_skip() -> set[str]:
    """Parts of the state a resume leaves out: a seam for the tests that prove each part matters
    (AIRLAB_RESUME_SKIP=optimizer,torch_rng). Never set it for real work."""
    import os

    parts = {p.strip() for p in os.environ.get(RESUME_SKIP_ENV, "").split(",") if p.strip()}
    unknown = parts - _RESUME_PARTS
    if unknown:
        raise UsageError(f"{RESUME_SKIP_ENV}: unknown part(s) {', '.join(sorted(unknown))}",
                         hint=f"known: {', '.join(sorted(_RESUME_PARTS))}")
    return parts


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        path = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, path + ".")
        elif va != vb:
            out.append(path)
    return out


class _Clock:
    """Training time: intervals of steps, each closed by a device sync, without eval or saves."""

    def __init__(self, sync):
        self._sync = sync
        self._t0: float | None = None
        self._acc = 0.0

    @property
    def running(self) -> bool:
        return self._t0 is not None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._t0 is not None:
            self._sync()
            self._acc += time.perf_counter() - self._t0
            self._t0 = None

    def take(self) -> float:
        value, self._acc = self._acc, 0.0
        return value


def load_run_config(run_dir: Path, *, to_train: bool = True):
    """A run's own config. `to_train=False` (sample, convert) skips the check that the model's
    training state fits this machine's memory: a run trained elsewhere can still be read."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)",
                              hint="pass the directory a run printed on its last line")
    return config_load.load_config(path, check_resources=to_train)


# What summary.json's times measure (the summary carries this, so a reader need not guess).
TIMING = {
    "train_time_s": "the training steps only (each interval closed by a device sync), without evaluation, "
                    "checkpoints or start-up; a resumed run's includes the time trained before the resume",
    "train_time_this_process_s": "train_time_s of this process alone (what achieved_flops divides by)",
    "wall_time_s": "this process's run from the trainer's start (after the framework import): loading the "
                   "data, building the model, training, evaluating, checkpoints and samples",
    "process_time_s": "since this process started: wall_time_s plus the interpreter, the imports and the "
                      "config check before it",
}


def _process_started() -> float:
    """When this process started (time.time() scale)."""
    try:
        return psutil.Process().create_time()
    except (psutil.Error, OSError):  # not allowed to read it: the run's own start is the best we know
        return _IMPORTED


_IMPORTED = time.time()


class _Collected:
    """While training, the cyclic garbage collector leaves alone what the set-up left: collected
    once before the steps and frozen (gc.freeze), so a full collection inside the steps scans only
    what the steps made. One full collection of a TensorFlow model's traced graphs takes 0.5-0.7 s
    on this CPU, inside a short run's training time. Unfrozen after, so that a later collection
    frees what the run leaves behind (in a process that trains again)."""

    def __enter__(self):
        gc.collect()
        gc.freeze()
        return self

    def __exit__(self, *exc):
        gc.unfreeze()


class Trainer:
    """One process's part of a run. `role` says which process this is (default: the backend's
    answer, `process.role_for`; a run of one process is `process.Local()`); only the main
    process writes and shows progress."""

    def __init__(self, config, *, run_dir: Path | None = None, resume: Path | None = None,
                 argv: list[str] | None = None, reporter: Reporter | None = None,
                 allow_config_change: bool = False, role: process.Role | None = None):
        self.reporter = reporter or Reporter(rich_bar=False)
        self.argv = list(argv or [])
        self.faults = faults.Faults.from_env()
        self.resume_dir: Path | None = None
        self.resume_from: Path | None = None
        self.config_changes: list[str] = []
        if resume is not None:
            resume = Path(resume)
            if run_dir is not None and Path(run_dir).resolve() != resume.resolve():
                raise UsageError(f"--run-dir {run_dir} with --resume {resume}: a resumed run continues in its own "
                                 "directory", hint="leave out --run-dir when resuming (or give it the run's directory)")
            saved = load_run_config(resume)
            if config is None:
                config = saved
            else:
                diff = _config_diff(to_dict(saved), to_dict(config))
                if diff and not allow_config_change:
                    raise ConfigError(
                        f"--resume {resume}: the config differs from the run's in {', '.join(diff)}",
                        hint="resume without CONFIG to use the run's own config, or pass --allow-config-change")
                self.config_changes = diff
            self.resume_dir = resume
        self.config = config
        self.entry = registry.get_model(config.model.name)
        self.task = get_task(self.entry.task)
        _check_early_stopping_metric(config, self.task)
        if config.train.grad_accum > config.data.batch_size:
            raise ConfigError(f"train.grad_accum: {config.train.grad_accum} micro-batches cannot split a batch of "
                              f"{config.data.batch_size} (data.batch_size)")
        self.backend_cls = backend_class(config.backend)
        self.role = role if role is not None else process.role_for(self.backend_cls, config)
        if not self.role.is_main:  # progress and messages from the main process only
            self.reporter = Reporter(quiet=True)
        try:
            self.share = _share(config, self.role.world_size)  # this process's examples of every batch
        except ConfigError:
            self.role.close(False)
            raise
        self.sinks = sinks.Sinks()  # the run's sinks: built when it starts (the main process's)
        # a new run's directory is claimed (created) when the run starts, under its lock
        self.run_dir: Path | None = self.resume_dir or (Path(run_dir) if run_dir else None)
        self._given_run_dir = self.resume_dir is None and run_dir is not None
        self._dir_existed = False  # an existing empty --run-dir is the user's: never removed
        # refused at once; in a run of several processes the claim refuses it instead (the same
        # error), where every process hears of it (another may already see the main's claim here)
        if (self.role.world_size == 1 and self._given_run_dir and self.run_dir.exists()
                and (not self.run_dir.is_dir() or any(self.run_dir.iterdir()))):
            what = "holds a run" if (self.run_dir / "config.yaml").exists() else "already exists"
            raise UsageError(f"--run-dir {self.run_dir}: {what}",
                             hint=f"choose a new directory, or continue that run with --resume {self.run_dir}")

    # -- setup ---------------------------------------------------------------------------------
    def _seed(self) -> None:
        random.seed(self.config.seed)
        np.random.seed(self.config.seed % 2**32)

    def _prepare(self):
        self._seed()
        self.dataset = _load_data(self.config)
        self.backend = self.backend_cls(self.config, self.dataset, self.task)
        self.backend.faults = self.faults
        self.backend.process = self.role  # shared evaluation and in-step decisions in a run of several
        # (the clock probe may still run: the contention check counts this process's children as its own)
        contended = threads.contention_warning(self.backend.threads, device=str(self.backend.device),
                                               usable=self.backend.thread_plan.cores.usable)
        if contended and self.role.is_main:
            warnings.warn(contended, stacklevel=2)
        self.plan = make_plan(self.config, self.dataset, self.task)
        self.lr_at = lr_function(self.config.train, self.plan.total_steps)
        p = self.plan
        self.order = BatchOrder(self.task, len(self.dataset.train), self.config.seed, p.context, p.batch_size,
                                p.steps_per_epoch, p.total_steps, self.role.rank, self.role.world_size, self.share)
        if hasattr(self.backend, "set_order"):  # the streaming path prefetches; augmentation reads the epoch
            self.backend.set_order(self.order)
        if len(self.dataset.val) == 0 and self.config.train.early_stopping is not None:
            raise ConfigError(f"train.early_stopping watches {self.config.train.early_stopping.metric}, but "
                              f"data.val_fraction: 0 leaves no validation split",
                              hint="set data.val_fraction > 0, or leave train.early_stopping out")

    def _data_line(self) -> str:
        """What the log says of the data: the splits, where they live, and what is not there."""
        ds, b = self.dataset, self.backend
        counts = ", ".join(f"{name} {len(split):,}" for name, split in ds.splits().items())
        unit = " tokens" if ds.kind == "text" else ""
        line = f"data: {ds.name} ({ds.kind}): {counts}{unit}"
        found = ds.extra.get("layout") if ds.name == "npz" else None
        if found:  # what the file held, as it was read
            line += f" ({found} {ds.extra.get('dtype', '')} in the file)".replace("  ", " ").replace(" )", ")")
        skipped = {k: v for k, v in (ds.extra.get("skipped") or {}).items() if v}
        if skipped:
            line += " (skipped: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in skipped.items()) + ")"
        placement = getattr(b, "placement", "device")
        reason = getattr(b, "placement_reason", "")
        line += ("; fast path (every split on the device)" if placement == "device"
                 else "; streaming (batches gathered on the host and prefetched)") + (f": {reason}" if reason else "")
        if len(ds.val) == 0:
            line += ("; no validation split (data.val_fraction: 0): nothing is validated, the last checkpoint is "
                     "the result" + ("; the test split is scored at the end" if ds.test is not None else ""))
        return line

    def _data_facts(self) -> dict:
        """What env.json and data.json keep of the data."""
        ds, b = self.dataset, self.backend
        facts = {"name": self.config.data.name, "kind": ds.kind, "source": ds.source,
                 "counts": {name: len(split) for name, split in ds.splits().items()},
                 "validation": "val split" if len(ds.val) else "none (data.val_fraction: 0)",
                 "placement": getattr(b, "placement", "device"),
                 "placement_reason": getattr(b, "placement_reason", ""),
                 "bytes": ds.nbytes, "cache": ds.cache,
                 "dtype": str(ds.train.x.dtype), "sample_shape": list(ds.train.sample_shape)}
        if ds.kind != "text":
            facts.update(num_classes=ds.num_classes, class_names=ds.class_names)
        if ds.mean is not None:
            facts.update(mean=ds.mean, std=ds.std)
        if ds.meta:
            facts["meta"] = ds.meta
        return facts

    def _write_data(self) -> None:
        """Main process, a new run: data.json (class names, vocabulary, a table's standardisation)
        and the tokenizer, so `airlab sample` and whoever reads the run need not load the data."""
        ds = self.dataset
        facts = self._data_facts()
        if ds.kind == "text":
            if ds.tokenizer is not None:
                facts["tokenizer"] = {"kind": ds.tokenizer.kind, "files": ds.tokenizer.save(self.run_dir)}
            if ds.tokenizer is None or ds.tokenizer.kind == "char":  # characters: readable here too
                facts["vocab"] = list(ds.vocab or [])
            facts["vocab_size"] = len(ds.vocab or [])
        rundir.write_json(self.run_dir / "data.json", facts)

    def _fresh_state(self) -> dict:
        return {"step": 0, "best": None, "best_step": None, "evals_since_best": 0, "train_time": 0.0,
                "samples_seen": 0, "stopped_early": False, "es_best": None, "skipped_steps": 0,
                "grad_accum": self.config.train.grad_accum, "micro_batches_tried": []}

    def _trainer_state(self, state: dict) -> dict:
        py_state = random.getstate()
        np_state = np.random.get_state()
        return {
            **state,
            "epoch": state["step"] // self.plan.steps_per_epoch,
            # the training metrics summed since the last log line: the resumed run's first line equals
            # the uninterrupted run's even when log_every does not divide checkpoint_every
            "train_metrics": self.backend.train_metrics_state(),
            # what bitwise-exact resume depends on (threads, versions, device, precision)
            "numerics": self.backend.numerics_facts(),
            "rng": {
                "python": [py_state[0], list(py_state[1]), py_state[2]],
                "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            },
        }

    @staticmethod
    def _restore_rng(saved: dict, skip: set[str] = frozenset()) -> None:
        if "python_rng" not in skip:
            py = saved["rng"]["python"]
            random.setstate((py[0], tuple(py[1]), py[2]))
        if "numpy_rng" not in skip:
            npst = saved["rng"]["numpy"]
            np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, state: dict) -> Path:
        """A checkpoint of this step, written by the main process; every process then knows its path."""
        if not self.backend.all_finite():
            raise TrainingDiverged(
                f"non-finite weights at step {state['step']}; not checkpointing them",
                hint=f"last good checkpoint: {self._last_ckpt or 'none'}; lower train.lr or set train.grad_clip")
        trainer_state = self._trainer_state(state)
        if self.role.world_size > 1:  # every process's own generators and sums, in rank order
            ranks = self.role.gather(self.backend.process_state())
            trainer_state.update(world_size=self.role.world_size, processes=ranks)
        self._last_ckpt = Path(self.role.on_main(self._write_checkpoint, state, trainer_state))
        return self._last_ckpt

    def _write_checkpoint(self, state: dict, trainer_state: dict) -> str:
        root = self.run_dir / "checkpoints"
        step = state["step"]
        try:
            path = ckpt.save(root, step, self.backend.save_state, trainer_state,
                             on_file=lambda n: self.faults.during_save(step, n))
        except Exception as e:  # OSError, or a framework writer's own error around one (torch, safetensors)
            cause = environment_cause(e)
            if cause is None:
                raise
            first = first_line(e)
            disk = rundir.disk_diagnosis(root)
            raise EnvironmentProblem(
                f"could not save checkpoint step-{step} in {root}: {cause} ({first})" + (f"; {disk}" if disk else ""),
                hint=f"free disk space, raise the file size limit or fix permissions; the previous checkpoint "
                     f"({self._last_ckpt or 'none'}) is intact: {self._resume_command}") from None
        self._last_ckpt = path
        ckpt.prune(root, self.config.train.keep_checkpoints, protect={path})
        self._set_status("running", state)
        return str(path)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self._lock: rundir.RunLock | None = None
        self._discard = False
        ok = False
        handlers = {sig: signal.getsignal(sig) for sig in signals.HANDLED}
        try:
            self.run_dir = Path(self.role.on_main(self._claim))  # every process agrees on the path
            result = self._run_locked()
            ok = True
            return result
        except ProcessLost:
            quiet_signals()
            raise
        finally:
            if self._lock is not None:
                self._lock.release()
            if self._discard:  # a new run refused before it trained: it leaves no directory behind
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if getattr(self, "backend", None) is not None:
                self.backend.close()
            self.role.close(ok)
            if not ok and self.role.world_size > 1 and threading.current_thread() is threading.main_thread():
                # as they were (a ProcessLost quieted them); the CLI quiets them again until it has
                # printed the error (airlab/cli/train.py)
                signals.restore({sig: h for sig, h in handlers.items() if h is not None})

    def _claim(self) -> str:
        """Main process: claim a new run's directory (or take the resumed run's) and lock it for
        the run: the lock belongs to the run, and the main process holds it."""
        if self.resume_dir is None:
            self._dir_existed = self._given_run_dir and self.run_dir.is_dir()
            self.run_dir = (rundir.claim_given_run_dir(self.run_dir) if self._given_run_dir
                            else rundir.claim_run_dir(self.config.output.runs_root, self.config.name))
        self._lock = rundir.RunLock(self.run_dir).acquire()
        return str(self.run_dir)

    def _run_locked(self) -> RunResult:
        cfg = self.config
        self._last_ckpt: Path | None = None
        self._status: dict = {}
        self._phase = "start"
        state = self._fresh_state()
        if self.resume_dir is not None:
            self.resume_from = ckpt.newest_complete(self.resume_dir / "checkpoints")
            if self.resume_from is None:
                raise CheckpointError(f"{self.resume_dir}: no complete checkpoint to resume from",
                                      hint="start a new run; checkpoints are written every train.checkpoint_every steps")
        wall0 = time.time()
        try:
            self.role.on_main(self._write_start, state)
            self.faults.at("start")
            # the main process's sinks (none in the others): the metrics file, the terminal, trackers;
            # built (no I/O yet) before the data loads, so a tracker that is not installed is said at once
            self.sinks = sinks.Sinks.build(sinks.names_for(cfg) if self.role.is_main else (),
                                           sinks.Context(run_dir=self.run_dir, config=cfg, reporter=self.reporter))
            self._clock_probe = self._start_clock_probe()  # measures while the data loads
            self._prepare()
            self.faults.at("built")
            try:
                devices = self.role.gather(self.backend.device)  # every process's device, in rank order
                if self.resume_from is not None:
                    self._restore(state)
                else:
                    self.role.on_main(self._write_environment, devices)
                self._start_step = state["step"]
                # what this process trains: its achieved FLOP/s counts only that (a resumed run's
                # counters start from the checkpoint's)
                self._start_samples, self._start_train_time = state["samples_seen"], state["train_time"]
                self.sinks.open()
                if self.role.is_main:
                    self.reporter.message(self._data_line())
                self._phase = "train"
                with _Signals() as signals_, _Collected():
                    self._loop(state, signals_)
                self._phase = "finish"
                self.faults.at("finish")
                result = self._finish(state, wall0)
            finally:
                self.reporter.end()
                self.sinks.close()
        except BaseException as e:
            err = self._as_airlab_error(e, state)
            # the config or the data was refused before anything ran (the model cannot read this data,
            # files missing): nothing of this run is worth keeping
            self._discard = (self.resume_from is None and self._phase == "start" and not self._dir_existed
                             and isinstance(err, (ConfigError, DataError)) and self.role.is_main)
            self._end_status(err, state)
            if err is not None and err is not e:
                raise err from None
            raise
        self._set_status(result.summary["status"], state, exit_code=0)
        return result

    def _write_start(self, state: dict) -> None:
        """Main process: a new run's config.yaml, and status.json says the run is running."""
        if self.resume_from is None:
            (self.run_dir / "config.yaml").write_text(to_yaml(self.config))
        self._set_status("running", state, started=rundir.now_iso())

    def _write_environment(self, devices: list[str]) -> None:
        """Main process: a new run's env.json (with the world size and every process's device)."""
        env = rundir.environment(self.backend.environment(), self.argv)
        env["world_size"] = self.role.world_size
        env["devices"] = devices
        env["data"] = {**self._data_facts(), "unverified": list(self.dataset.unverified)}
        rundir.write_json(self.run_dir / "env.json", env)
        self._write_data()

    def _restore(self, state: dict) -> None:
        """Put the backend, RNGs and counters back as the checkpoint has them."""
        cfg = self.config
        skip = _resume_skip()
        backend_skip = skip & _BACKEND_PARTS
        if backend_skip:
            self.backend.load_state(self.resume_from, skip=frozenset(backend_skip))
        else:
            self.backend.load_state(self.resume_from)
        saved = ckpt.read_trainer_state(self.resume_from)
        where = self.resume_from / ckpt.TRAINER
        if saved["step"] > self.plan.total_steps:
            raise CheckpointError(
                f"{where}: the checkpoint is at step {saved['step']:,}, beyond the {self.plan.total_steps:,} "
                f"steps this config trains", hint="resume with a larger train.steps or train.epochs and "
                "--allow-config-change, or start a new run")
        try:
            self._restore_rng(saved, skip)
            if "counters" not in skip:
                state.update({k: saved[k] for k in state if k in saved})
                if saved.get("train_metrics"):  # absent in checkpoints of earlier airlab versions
                    self.backend.restore_train_metrics(saved["train_metrics"])
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
            raise CheckpointError(f"{where}: cannot restore the trainer state ({type(e).__name__}: {e})",
                                  hint="the checkpoint is damaged: remove it to resume from the one before") from None
        if not 1 <= state["grad_accum"] <= self.share:
            raise CheckpointError(f"{where}: grad_accum {state['grad_accum']} cannot split a batch of "
                                  f"{cfg.data.batch_size}")
        self.backend.grad_accum = state["grad_accum"]
        self._restore_process(saved, skip)
        self._last_ckpt = self.resume_from
        self.role.on_main(self._write_resume, saved, state["step"])

    def _restore_process(self, saved: dict, skip: set[str]) -> None:
        """A run of several processes: each takes its own part of the checkpoint (its generators
        and training-metric sums). Under another world size the parts do not map onto the
        processes: the data position, the weights, the optimizer and the shared generator carry
        over; each process's own generator starts from (seed, rank), and the training metrics of
        the first log line count only the steps since the resume."""
        world, saved_world = self.role.world_size, int(saved.get("world_size") or 1)
        parts = saved.get("processes") or []
        if world == saved_world and world > 1 and len(parts) == world:
            if not {"counters", "torch_rng", "tf_rng"} & skip:
                self.backend.restore_process_state(parts[self.role.rank])
        elif world != saved_world:
            self.backend.restore_train_metrics({"count": 0, "sums": {}})
            if self.role.is_main:
                warnings.warn(f"resuming a run of {saved_world} process(es) with {world}: the data position, weights "
                              "and optimizer carry over; each process's own random generator and the training "
                              "metrics since the last log line start afresh", stacklevel=2)

    def _write_resume(self, saved: dict, step: int) -> None:
        """Main process: env.json records the resume; the sinks forget what came after the
        checkpoint (the metrics file keeps the records up to its step; the terminal says what is
        resumed, and how the config changed); a changed config is kept beside the new one."""
        self._record_resume(saved, step)
        self.sinks.resume(sinks.Resume(step=step, checkpoint=self.resume_from, run_dir=self.run_dir,
                                       config_changes=tuple(self.config_changes)))
        if self.config_changes:  # allowed: keep the old config beside the new one
            old = self.run_dir / "config.yaml"
            rundir.atomic_write(self.run_dir / f"config.before-step-{step}.yaml", old.read_bytes())
            rundir.atomic_write(old, to_yaml(self.config))

    def _record_resume(self, saved: dict, step: int) -> None:
        """env.json keeps one entry per resume (argv, time, the numerics facts in force); when
        those differ from the checkpoint's, the run warns that it will not be bitwise equal to an
        uninterrupted one."""
        now = self.backend.numerics_facts()
        changed = threads.compare_facts(saved.get("numerics") or {}, now)
        if changed:
            advice = (" (set train.threads to the checkpoint's count to keep it exact)"
                      if any(c.startswith("threads ") for c in changed) else "")
            warnings.warn(f"resuming at step {step} under other numerics than the checkpoint's ({'; '.join(changed)}): "
                          f"the result will not be bitwise equal to an uninterrupted run{advice}", stacklevel=2)
        path = self.run_dir / "env.json"
        try:
            env = json.loads(path.read_text(encoding="utf-8"))
            env = env if isinstance(env, dict) else {}
        except (OSError, ValueError):
            env = {}
        resumes = env.get("resumes") if isinstance(env.get("resumes"), list) else []
        env["resumes"] = [*resumes, {"at_step": step, "time": rundir.now_iso(), "argv": self.argv,
                                     "numerics": now, "changed": changed}]
        rundir.write_json(path, env)

    @property
    def _per_device(self) -> int:
        """Examples of every batch one device computes: this process's share over its replicas."""
        return self.share // max(1, int(self.backend.local_replicas))

    @property
    def _resume_command(self) -> str:
        """How to continue this run, with as many processes and replicas (its checkpoint resumes
        bitwise so): `--nproc N` where `airlab train --nproc N` started it; under another launcher
        (torchrun on several hosts, TF_CONFIG) the same launch again with --resume."""
        import os

        plain = f"airlab train --resume {self.run_dir}"
        launched = os.environ.get(process.LAUNCHED_ENV, "")
        replicas = int(getattr(getattr(self, "backend", None), "local_replicas", 1) or 1)
        if launched.isdigit() and int(launched) > 1:
            return f"{plain} --nproc {launched}"
        if self.role.world_size > 1:
            return f"{plain} in each of the {self.role.world_size} processes, started as this run was"
        return f"{plain} --nproc {replicas}" if replicas > 1 else plain

    # -- status.json -------------------------------------------------------------------------------
    def _set_status(self, status: str, state: dict, **fields) -> None:
        self._status.update(fields)
        self._status.update(step=state["step"], last_checkpoint=str(self._last_ckpt) if self._last_ckpt else None)
        if self.role.is_main:
            rundir.write_status(self.run_dir, status, **self._status)

    def _end_status(self, err: AirlabError | None, state: dict) -> None:
        """Record how the run ended; best effort (the disk may be the reason it ended)."""
        if not self._status:
            return  # ended before it started (no checkpoint to resume): the old status stands
        if isinstance(err, (Interrupted, OutputClosed)):
            status = "interrupted"
        elif isinstance(err, TrainingDiverged):
            status = "diverged"
        else:
            status = "failed"
        code = err.exit_code if err is not None else 1
        message = err.message if err is not None else "unexpected error (a bug in airlab)"
        try:
            self._set_status(status, state, exit_code=code, error=message.splitlines()[0] if message else None)
        except OSError:
            pass

    def _as_airlab_error(self, e: BaseException, state: dict) -> AirlabError | None:
        """The error the user sees for whatever ended the run; None for a bug (exit 1)."""
        resume = self._resume_command
        if isinstance(e, ProcessLost) and e.hint is None:
            e.hint = (f"the newest checkpoint is {self._last_ckpt or 'none'}; " +
                      (f"continue with: {resume}" if self._last_ckpt else "start the run again"))
        if isinstance(e, AirlabError):
            return e
        if isinstance(e, (SignalReceived, KeyboardInterrupt)):
            signum = getattr(e, "signum", signal.SIGINT)
            name = signal.Signals(signum).name
            if isinstance(e, _StopNow):
                return Interrupted(
                    signum, f"{name} received again: stopped at once after step {state['step']}; "
                            f"the newest checkpoint is {self._last_ckpt or 'none (nothing saved)'}",
                    hint=f"continue with: {resume}" if self._last_ckpt else
                    "no checkpoint was saved yet: start the run again")
            if self._phase == "finish":
                return Interrupted(
                    signum, f"{name} received after the last step ({state['step']}), during the final evaluation: "
                            f"the trained weights are saved in {self._last_ckpt}; summary.json was not written",
                    hint=f"finish it with: {resume} (it trains nothing again)")
            return Interrupted(
                signum, f"{name} received while the run was starting: stopped before training"
                        + (f"; the newest checkpoint is {self._last_ckpt}" if self._last_ckpt else ""),
                hint=f"continue with: {resume}" if self._last_ckpt else
                f"nothing was trained: start the run again (this one is left in {self.run_dir})")
        if isinstance(e, Exception):
            cause = environment_cause(e)
            if cause is not None:
                first = first_line(e)
                disk = rundir.disk_diagnosis(self.run_dir)
                return EnvironmentProblem(
                    f"a write failed in {self.run_dir} at step {state['step']}: {cause} ({first})"
                    + (f"; {disk}" if disk else ""),
                    hint="free disk space, raise the file size limit or fix permissions; "
                         + (f"the checkpoint {self._last_ckpt} is intact: {resume}" if self._last_ckpt
                            else "nothing was saved yet: start the run again"))
        return None

    def _record(self, state, split: str, metrics: dict, *, lr: float | None = None,
                sps: float | None = None) -> None:
        """Hand a record to every sink (the metrics file, the terminal, trackers)."""
        step, per_epoch = state["step"], self.plan.steps_per_epoch
        self.sinks.write(sinks.Record(step=step, split=split, metrics=metrics, epoch=step / per_epoch,
                                      epoch_index=max(step - 1, 0) // per_epoch, wall=time.time(), lr=lr,
                                      # rounded as metrics.jsonl keeps it: every sink shows the same figure
                                      samples_per_s=None if sps is None else round(sps, 2)))

    def _evaluate(self, state, split: str) -> dict:
        metrics = self._per_character(split, self.backend.evaluate(split))
        self._record(state, split, metrics)
        return metrics

    def _per_character(self, split: str, metrics: dict) -> dict:
        """A language model on BPE tokens: its loss is per token, and `bpc` becomes bits per
        character of the split's text (loss x tokens / characters / ln 2), comparable with a
        character model's; perplexity stays per token."""
        ds = self.dataset
        tok = getattr(ds, "tokenizer", None)
        if tok is None or tok.kind == "char" or "loss" not in metrics:
            return metrics
        chars = ds.extra.get("split_characters")  # [train, test, val], as the text is cut
        if isinstance(chars, (list, tuple)) and len(chars) == 3:
            chars = dict(zip(("train", "test", "val"), chars))
        chars = chars.get(split) if isinstance(chars, dict) else None
        tokens = (ds.extra.get("split_tokens") or {}).get(split)
        if chars and tokens and ds.extra.get("limit") is None:
            metrics["bpc"] = metrics["loss"] * tokens / chars / math.log(2)
        return metrics

    @property
    def _loss_units(self) -> str:
        tok = getattr(self.dataset, "tokenizer", None)
        if tok is not None and tok.kind != "char":
            return f"cross-entropy per {tok.kind.upper()} token (nats); bpc: bits per character of the text"
        return self.task.units

    def _track_best(self, state, val: dict) -> bool:
        """Update the best metric; return True when early stopping says stop."""
        task, es = self.task, self.config.train.early_stopping
        name = task.best_metric.split("/", 1)[1]
        value = val.get(name)
        if value is not None and math.isfinite(value):
            better = state["best"] is None or (value > state["best"] if task.best_mode == "max" else value < state["best"])
            if better:
                state["best"], state["best_step"] = value, state["step"]
        if es is None:
            return False
        watched = val.get(es.metric.split("/", 1)[1])
        ref = state.get("es_best")
        improved = ref is None or (watched < ref - es.min_delta if es.mode == "min" else watched > ref + es.min_delta)
        if improved:
            state["es_best"], state["evals_since_best"] = watched, 0
            return False
        state["evals_since_best"] += 1
        return state["evals_since_best"] >= es.patience

    def _shared_step_failure(self, failed: Exception | None, step: int) -> Exception | None:
        """How step `step` ended for every process: out of memory on any process runs it again
        on all of them (before anything else), a non-finite step on any process is refused by
        all of them; None when it was taken everywhere. On one process: its own outcome."""
        oom, bad = self.role.max([isinstance(failed, OutOfMemoryStep), isinstance(failed, NonFiniteStep)])
        if oom:
            if isinstance(failed, OutOfMemoryStep):
                return failed
            micro = -(-self._per_device // self.backend.grad_accum)  # of one device's share
            return OutOfMemoryStep(step, micro, "on another process")
        if bad:
            return failed if isinstance(failed, NonFiniteStep) else _NonFiniteElsewhere(step)
        return None

    def _non_finite(self, state: dict, bad: NonFiniteStep) -> None:
        """A step with a non-finite loss or gradient norm was refused: stop (exit 3), or skip it
        while the budget of `train.max_skipped_steps` lasts."""
        t = self.config.train
        elsewhere = isinstance(bad, _NonFiniteElsewhere) or getattr(bad, "elsewhere", False)
        values = ("a non-finite loss or gradient on another process" if elsewhere else
                  f"loss={bad.loss}" + (f", grad_norm={bad.grad_norm}" if bad.grad_norm is not None else ""))
        if t.on_nonfinite == "skip" and state["skipped_steps"] < t.max_skipped_steps:
            state["skipped_steps"] += 1
            self.reporter.message(f"skipped step {bad.step}: {values} "
                                  f"({state['skipped_steps']}/{t.max_skipped_steps} of the skip budget)")
            return
        budget = (f" after skipping {state['skipped_steps']} step(s), the whole budget"
                  if t.on_nonfinite == "skip" else "")
        raise TrainingDiverged(
            f"training diverged at step {bad.step}: {values}{budget}; the step was not taken",
            hint=f"last good checkpoint: {self._last_ckpt or 'none'}; lower train.lr, set train.grad_clip, use "
                 "precision fp32, or set train.on_nonfinite: skip")

    def _out_of_memory(self, state: dict, oom: OutOfMemoryStep) -> None:
        """Halve the micro-batch (doubling the accumulation, so the batch stays the same) and let
        the step run again; the backend left weights, gradients and RNG as they were."""
        t, batch = self.config.train, self.config.data.batch_size
        tried = state["micro_batches_tried"] or [oom.micro_batch]
        halvings = len(tried) - 1
        if not t.auto_batch_size or oom.micro_batch <= 1 or halvings >= t.max_batch_halvings:
            sizes = ", ".join(str(b) for b in tried)
            raise EnvironmentProblem(
                f"out of memory at step {oom.step} with micro-batch {oom.micro_batch} (batch {batch}; tried {sizes})",
                hint="lower data.batch_size, raise train.grad_accum, use precision bf16, or set "
                     "train.auto_batch_size: true" if not t.auto_batch_size else
                     "even small micro-batches do not fit: use a smaller model or precision bf16")
        self.backend.grad_accum *= 2
        state["grad_accum"] = self.backend.grad_accum
        micro = -(-self._per_device // self.backend.grad_accum)  # of each device's share of the batch
        state["micro_batches_tried"] = [*tried, micro]
        self.reporter.message(f"out of memory at step {oom.step} with micro-batch {oom.micro_batch}: retrying "
                              f"with micro-batch {micro} x {self.backend.grad_accum} accumulated (batch {batch})")

    def _loop(self, state: dict, signals: _Signals) -> None:
        plan, cfg, backend = self.plan, self.config, self.backend
        has_val = len(self.dataset.val) > 0
        self.reporter.begin(plan.total_steps, state["step"], f"{cfg.name} [{cfg.model.name}/{cfg.backend}]",
                            rate=self._rate())
        self._last_val = None
        clock = _Clock(backend.synchronize)
        seen_interval = 0
        clock.start()
        while state["step"] < plan.total_steps:
            step = state["step"]
            index = self.order.global_batch(step)  # the global batch: a pure function of (seed, epoch)
            mine = self.order.share_of(index)
            lr = self.lr_at(step)
            failed = None
            try:
                backend.train_step(mine, lr, step=step + 1)
            except (NonFiniteStep, OutOfMemoryStep) as e:
                failed = e
            failed = self._shared_step_failure(failed, step + 1)
            if isinstance(failed, OutOfMemoryStep):
                self._out_of_memory(state, failed)  # raises unless the micro-batch can shrink
                continue  # the same step again, in smaller micro-batches
            if isinstance(failed, NonFiniteStep):
                self._non_finite(state, failed)  # raises unless the config allows skipping
            else:
                state["samples_seen"] += len(index)
                seen_interval += len(index)
            state["step"] = done = step + 1
            self.faults.after_step(done)
            self.reporter.step(done)
            last = done == plan.total_steps
            if done % plan.log_every == 0 or last:
                metrics = self.role.mean(backend.pop_train_metrics())  # over every process's share
                clock.stop()
                elapsed = clock.take()
                state["train_time"] += elapsed
                sps = seen_interval / max(elapsed, 1e-9)
                bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
                if self.role.any(bool(bad)):
                    what = ", ".join(f"{k}={v}" for k, v in bad.items()) or "non-finite on another process"
                    raise TrainingDiverged(
                        f"training diverged by step {done}: train {what}",
                        hint=f"last good checkpoint: {self._last_ckpt or 'none'}; lower train.lr, set "
                             "train.grad_clip or use precision fp32")
                self._record(state, "train", metrics, lr=lr, sps=sps)
                seen_interval = 0
            stop = False
            evaluate = has_val and (done % plan.eval_every == 0 or last)
            save = done % plan.checkpoint_every == 0 or last
            if (evaluate or save) and clock.running:
                clock.stop()  # evaluation and saving are not training time
            if evaluate:
                self._last_val = self._evaluate(state, "val")
                stop = self.role.any(self._track_best(state, self._last_val))  # all stop, or none
                if stop:
                    state["stopped_early"] = True
                    self.reporter.message(f"early stopping at step {done}: "
                                          f"{cfg.train.early_stopping.metric} has not improved in "
                                          f"{cfg.train.early_stopping.patience} evaluations")
            # read the flag once, only now: a signal that lands during the evaluation above still
            # finds this step saved; one that lands later is handled after the next step. A signal
            # or a closed output in any process stops every process after this step
            received, closed = self.role.max([signals.received or 0, self.reporter.closed])
            received, closed = int(received) or None, bool(closed)
            if (received or closed) and clock.running:
                clock.stop()
            if save or stop or received or closed:
                self._save(state)
            if received:  # before `closed`: a terminal that hangs up sends SIGHUP and closes the output
                name = signal.Signals(received).name
                raise Interrupted(received, f"{name} received: stopped after step {done} and saved "
                                  f"{self._last_ckpt}", hint=f"continue with: {self._resume_command}")
            if closed:
                raise OutputClosed(f"the output pipe closed: stopped after step {done} and saved {self._last_ckpt}",
                                   hint=f"continue with: {self._resume_command}")
            if stop:
                break
            if not clock.running:
                clock.start()

    # -- throughput and how close to the limit (airlab.train.flops) ------------------------------
    def _start_clock_probe(self) -> flops.ClockProbe | None:
        """The main process of a run that may train on the CPU: the clock `airlab bench` would
        measure for the CPU peak, measured in a child process while the data loads."""
        if not self.role.is_main or self.config.device not in ("auto", "cpu"):
            return None
        from airlab.bench.peaks import read_cpu_info

        n = threads.plan_threads(self.config.train.threads).threads * self.role.world_size
        return flops.ClockProbe(min(read_cpu_info().cores, n)).start()

    def _peak(self, wait: float | None) -> flops.Peak | None:
        """The peak of the devices this run trains on (None while the clock probe runs and `wait`
        is 0); the main process's figure, computed once."""
        cached = getattr(self, "_peak_found", None)
        if cached is not None:
            return cached
        b = self.backend
        kind = str(b.device).split(":", 1)[0]
        if not self.role.is_main:
            return flops.Peak(None, reason="the main process of the run reports it")
        if kind == "cpu":
            probe = getattr(self, "_clock_probe", None)
            if probe is None:
                return flops.Peak(None, reason="the CPU clock was not measured in this process")
            done, clock = probe.result(wait)
            if not done:
                return None if not wait else flops.Peak(None, reason="the CPU clock probe did not finish")
            # a run of several processes on the CPU shares this host's cores (each its own threads)
            peak = flops.cpu_peak(b.precision, int(b.threads) * self.role.world_size, clock)
        elif kind == "cuda":
            devices = self.role.world_size * max(1, int(getattr(b, "local_replicas", 1) or 1))
            name = (b.environment().get("gpu") or {}).get("name")
            peak = flops.gpu_peak(name, b.precision, devices, tf32=bool(b.numerics_facts().get("tf32")))
        else:
            peak = flops.Peak(None, reason=f"no peak is known for device {b.device}")
        self._peak_found = peak
        return peak

    def _rate(self) -> Rate:
        """What the progress line says of throughput: tokens/s for a language model, and model
        FLOP/s with MFU (in long runs)."""
        per_sample = self.plan.context if self.task.name == "lm" and self.plan.context else 1
        peak = lambda: getattr(self._peak(0), "flops", None)  # noqa: E731  (never waits)
        return Rate(unit="tokens" if per_sample > 1 else "samples", per_sample=per_sample,
                    flops_per_sample=flops.model_flops(self.config.model, self.dataset.info), peak=peak)

    def _throughput(self, state: dict) -> dict:
        """The summary's throughput and FLOP figures; achieved FLOP/s over this process's training."""
        train_time = state["train_time"]
        sps = state["samples_seen"] / train_time if train_time > 0 else None
        context = self.plan.context if self.task.name == "lm" else None
        per_sample = flops.model_flops(self.config.model, self.dataset.info)
        figures = flops.figures(per_sample, state["samples_seen"] - self._start_samples,
                                train_time - self._start_train_time, self._peak(flops.CLOCK_WAIT_S))
        return {"samples_per_s": round(sps, 2) if sps is not None else None,
                # a language model's sample is a window of `context` tokens, every one predicted
                "tokens_per_s": round(sps * context, 1) if sps is not None and context else None,
                "model_flops_per_sample": per_sample, **figures}

    def _write_samples(self, state: dict) -> list[str]:
        """Main process: samples of the final weights into samples/: generated images or text,
        reconstructions, a classifier's predictions named by the class names."""
        files = samples.write(self.backend, self.dataset, self.task, self.run_dir / "samples",
                              n=16 if self.task.samples != "text" else 2, seed=self.config.seed,
                              tag=f"step-{state['step']}")
        return [str(p) for p in files]

    def _write_views(self) -> dict:
        """Main process, once the run is complete: confusion.json (a classifier's confusion matrix
        on the test split) and curves.png (the learning curves of metrics.jsonl). A view that cannot
        be drawn is named in a message; the run stays complete."""
        views = {}
        if self.task.samples == "predictions":
            table = samples.confusion(self.backend, self.dataset, batch=eval_batch_size(self.config.data))
            if table is not None:
                rundir.write_json(self.run_dir / "confusion.json", table)
                views["confusion"] = str(self.run_dir / "confusion.json")
        if self.config.output.curves:
            try:
                from airlab.results import curves

                views["curves"] = str(curves.draw_run(self.run_dir, self.run_dir / "curves.png"))
            except (ImportError, ValueError) as e:  # no matplotlib, nothing to draw
                self.reporter.message(f"curves.png not drawn: {e}")
        return views

    def _finish(self, state: dict, wall0: float) -> RunResult:
        final = {}
        if len(self.dataset.val) > 0:
            final["val"] = (self._last_val if self._last_val is not None
                            else self._per_character("val", self.backend.evaluate("val")))
        if self.dataset.test is not None and len(self.dataset.test) > 0:
            final["test"] = self._evaluate(state, "test")
        sample_files = self.role.on_main(self._write_samples, state)
        views = self.role.on_main(self._write_views) or {}
        train_time = state["train_time"]
        digest = rundir.weights_digest(self.backend.named_weights())
        summary = {
            "name": self.config.name,
            "model": self.config.model.name,
            "task": self.task.name,
            "backend": self.config.backend,
            "device": self.backend.device,
            "status": "early_stopped" if state["stopped_early"] else "completed",
            "steps": state["step"],
            "epochs": round(state["step"] / self.plan.steps_per_epoch, 3),
            "samples_seen": state["samples_seen"],
            "world_size": self.role.world_size,
            "skipped_steps": state["skipped_steps"],
            "grad_accum": state["grad_accum"],
            "micro_batches_tried": state["micro_batches_tried"],
            "final": final,
            "best": {"metric": self.task.best_metric, "mode": self.task.best_mode, "value": state["best"],
                     "step": state["best_step"]},
            "loss_units": self._loss_units,
            "train_time_s": round(train_time, 3),
            "train_time_this_process_s": round(train_time - self._start_train_time, 3),
            "wall_time_s": round(time.time() - wall0, 3),
            "process_time_s": round(time.time() - _process_started(), 3),
            "timing": TIMING,
            "resumed_at_step": self._start_step if self.resume_from is not None else None,
            "steps_this_process": state["step"] - self._start_step,
            **self._throughput(state),
            "params": self.backend.num_params(),
            "weights_sha256": digest,
            "checkpoint": str(self._last_ckpt) if self._last_ckpt else None,
            # data files used without a published digest to check them against (raw IDX files)
            "data_unverified": list(self.dataset.unverified),
            "data": {k: v for k, v in self._data_facts().items() if k in ("name", "kind", "validation", "placement")},
            "samples": sample_files,
            **views,
        }
        self.faults.at("summary")
        self.role.on_main(rundir.write_json, self.run_dir / "summary.json", summary)
        self.sinks.finish(summary)  # the trackers take the summary, curves and samples (main process only)
        return RunResult(self.run_dir, summary, is_main=self.role.is_main)


def train(config, **kwargs) -> RunResult:
    return Trainer(config, **kwargs).run()


__all__ = ["RunResult", "Trainer", "check_world_size", "make_plan", "train"]
