"""`airlab validate CONFIG [KEY=VALUE ...]`: check a config without importing any framework."""

from __future__ import annotations

from pathlib import Path

import typer

from airlab.cli.common import out, print_json


def validate(
    config: Path = typer.Argument(..., help="YAML config file"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. train.lr=3e-4"),
    show: bool = typer.Option(False, "--print", help="print the resolved config"),
    json_out: bool = typer.Option(False, "--json", help="print the resolved config as JSON"),
) -> None:
    """Check a config (schema, extends, overrides) and report every problem at once.

    Example: airlab validate configs/vae.yaml train.epochs=2
    """
    from airlab import registry
    from airlab.config import load_config, resources, to_dict, to_yaml

    cfg = load_config(config, overrides or [])
    if json_out:
        print_json(to_dict(cfg))
        return
    if show:
        out.print(to_yaml(cfg), end="", highlight=False, markup=False)
    # counted at the dataset's shapes where known without reading it, else at the spec's defaults
    est = resources.estimate(cfg)
    size = (f"{resources.count(est.params)} params at {est.info.input_shape or 'default'} input" if est
            else "params counted when built for its data")
    out.print(f"{config}: ok — model {cfg.model.name} ({registry.get_model(cfg.model.name).task}, {size}), "
              f"data {cfg.data.name}, backend {cfg.backend}, device {cfg.device}", highlight=False)
