"""`airlab train CONFIG [KEY=VALUE ...]`: train a model from a YAML config."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import human_bytes, invocation, out
from airlab.errors import ProcessLost, Reported, UsageError


def _print_dry_run(result) -> None:
    from rich.table import Table

    from airlab.config import to_yaml

    cfg, plan, summary, dataset = result.config, result.plan, result.summary, result.dataset
    out.print("# resolved config", highlight=False)
    out.print(to_yaml(cfg), end="", highlight=False, markup=False)
    table = Table(title=f"{cfg.model.name} on {summary.device} ({summary.precision})")
    for col in ("layer", "type", "output shape", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for row in summary.layers:
        table.add_row(row.name, row.kind, row.output_shape, f"{row.params:,}")
    out.print(table)
    out.print(f"parameters: {summary.params:,} ({human_bytes(summary.param_bytes)}); "
              f"estimated training memory at batch {cfg.data.batch_size}: {human_bytes(summary.est_train_bytes)}",
              highlight=False)
    if dataset is None:  # the files are not here: built from the dataset's shapes, nothing downloaded
        steps = result.total_steps
        out.print(result.data_note + (f", {steps:,} steps in all" if steps is not None else ""),
                  highlight=False, markup=False)
    else:
        out.print(f"data: {dataset.name} train {len(dataset.train):,} / val {len(dataset.val):,}"
                  + (f" / test {len(dataset.test):,}" if dataset.test is not None else "")
                  + f"; {plan.steps_per_epoch:,} steps per epoch, {plan.total_steps:,} steps in all", highlight=False)
    out.print("dry run: nothing trained", highlight=False)


def _restarted() -> bool:
    """Whether torchrun's elastic agent restarted this process's group (--max-restarts)."""
    import os

    return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip() not in ("", "0")


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """`argv` without the options named (and their values): what each launched process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in options:
            skip = True
            continue
        if any(arg.startswith(o + "=") for o in options):
            continue
        out.append(arg)
    return out


def _launch(cfg, nproc: int, max_restarts: int, run_dir: Path | None) -> int | None:
    """Start the run of `nproc` processes on the config's backend (its table row's launcher);
    None when the backend runs them in this process (TensorFlow's replicas)."""
    from airlab.backends import table
    from airlab.train.loop import check_world_size

    target = table.get(cfg.backend).launcher
    unit = getattr(table.load(target.partition(":")[0]), "UNIT", "processes")  # or replicas
    check_world_size(cfg, nproc, unit)  # refused here, once, before any process starts
    if max_restarts and run_dir is None:
        raise UsageError("--max-restarts needs --run-dir: a restarted group resumes the run it names",
                         hint="add --run-dir runs/NAME (a new directory)")
    argv = _without(list(invocation()), ("--nproc", "--max-restarts"))
    launch = table.load(table.get(cfg.backend).launcher)
    return launch(nproc, argv, max_restarts=max_restarts) if max_restarts else launch(nproc, argv)


def train(
    config: Path = typer.Argument(None, help="YAML config file (optional with --resume)"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. train.epochs=2 model.latent_dim=8"),
    backend: str = typer.Option(None, "--backend", help="torch or tensorflow (overrides the config)"),
    run_dir: Path = typer.Option(None, "--run-dir", help="write the run here instead of runs/<name>-<time>/"),
    resume: Path = typer.Option(None, "--resume", help="continue a run from its newest complete checkpoint"),
    allow_config_change: bool = typer.Option(False, "--allow-config-change",
                                             help="with --resume: accept a CONFIG that differs from the run's"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate, build and summarize the model; train nothing"),
    nproc: int = typer.Option(None, "--nproc", min=1,
                              help="train on N local processes (PyTorch: torchrun's launcher, DDP; TensorFlow: "
                                   "N replicas of MirroredStrategy); data.batch_size stays the global batch"),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0,
                                     help="with --nproc on PyTorch: restarts of the whole group after a process "
                                          "fails; each restart resumes --run-dir from its newest checkpoint"),
) -> None:
    """Train a model. The last line printed names the run directory.

    Example: airlab train configs/quickstart.yaml train.epochs=1
    """
    from airlab.config import load_config
    from airlab.train import loop
    from airlab.train.progress import Reporter

    overrides = list(overrides or [])
    if resume is not None and config is not None and "=" in str(config) and not config.exists():
        # `airlab train --resume RUN key=value`: no CONFIG, only overrides
        overrides.insert(0, str(config))
        config = None
    if backend is not None:  # an override labelled as the user typed it, for its error messages
        overrides.append((f"backend={backend}", f"--backend {backend}"))
    if resume is None and run_dir is not None and _restarted() and (run_dir / "config.yaml").is_file():
        # the elastic agent restarted the group after a failure (--max-restarts): continue the run
        resume, run_dir = run_dir, None
    if config is None and resume is None:
        raise UsageError("train needs a CONFIG file (or --resume RUN_DIR)",
                         hint="example: airlab train configs/quickstart.yaml")
    if config is not None and "=" in config.name and not config.exists():
        raise UsageError(f"{config}: expected the CONFIG file first, then KEY=VALUE overrides")
    if config is not None:
        cfg = load_config(config, overrides)
    elif overrides:
        # resume with overrides: start from the run's own config
        from airlab.config import apply_overrides, to_dict, validate

        data, locs = to_dict(loop.load_run_config(resume)), {}
        apply_overrides(data, locs, overrides)
        cfg = validate(data, locs)
    else:
        cfg = None
    if dry_run:
        if cfg is None:
            cfg = loop.load_run_config(resume)
        from airlab.train.commands import dry_run as do_dry_run

        _print_dry_run(do_dry_run(cfg))
        return
    if nproc is not None:
        code = _launch(cfg if cfg is not None else loop.load_run_config(resume), nproc, max_restarts, run_dir)
        if code:  # the processes said what went wrong (and the launcher which one was killed)
            raise Reported(code)
        if code is not None:
            return
    trainer = loop.Trainer(cfg, run_dir=run_dir, resume=resume, argv=["airlab", *invocation()],
                           reporter=Reporter(out), allow_config_change=allow_config_change)
    try:
        result = trainer.run()
    except ProcessLost:
        loop.quiet_signals()  # the launcher's SIGTERM must not hide the error printed next
        raise
    if not result.is_main:  # the other processes of a run of several print nothing
        return
    s = result.summary
    final = s["final"]
    parts = [f"{split} " + " ".join(f"{k} {v:.4g}" for k, v in m.items()) for split, m in final.items()]
    if s.get("resumed_at_step") is not None:  # the whole run's steps, and what this process did
        what = (f"done: {s['steps']} steps in all; this process resumed at step {s['resumed_at_step']} and ran "
                f"{s['steps_this_process']} of them in {s['wall_time_s']:.1f} s")
    else:
        what = f"done: {s['steps']} steps in {s['wall_time_s']:.1f} s"
    out.print(f"{what} ({_throughput(s)}); " + "; ".join(parts), highlight=False)
    for p in s["samples"]:
        out.print(f"samples: {p}", highlight=False)
    out.print(f"run directory: {result.run_dir}", highlight=False)


def _throughput(s: dict) -> str:
    """The last line's throughput: samples/s over the whole run, tokens/s for a language model,
    and the achieved FLOP/s and MFU where summary.json has them (mfu_reason says why not)."""
    from airlab.results.runs import percent
    from airlab.train.flops import fmt_flops

    out = f"training {s['samples_per_s'] or 0:,.0f} samples/s"
    if s.get("tokens_per_s"):
        out += f", {s['tokens_per_s']:,.0f} tokens/s"
    out += " over the whole run"
    if s.get("achieved_flops"):
        out += f", {fmt_flops(s['achieved_flops'])}"
        mfu = percent(s.get("mfu"))
        if mfu:
            out += f", MFU {mfu} of {fmt_flops(s['peak_flops'])}"
    return out
