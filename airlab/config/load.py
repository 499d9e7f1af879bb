"""Load a run config: read YAML safely, resolve `extends:`, apply KEY=VALUE overrides, validate.

Every problem is reported at once, each with its key path and where it came from
(`file:line:col`, or the override that set it).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from airlab.config import yaml_io
from airlab.config.schema import run_config_class, section_fields
from airlab.errors import ConfigError
from airlab.registry import close_matches

MAX_EXTENDS_DEPTH = 10


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _merge(base: dict, child: dict, base_locs: dict, child_locs: dict, prefix: tuple = ()) -> None:
    """Deep-merge child into base (in place); lists and scalars replace; a new model name
    replaces the whole model section."""
    for key, value in child.items():
        path = (*prefix, key)
        replace_model = (
            path == ("model",)
            and isinstance(value, dict)
            and isinstance(base.get("model"), dict)
            and value.get("name") not in (None, base["model"].get("name"))
        )
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not replace_model:
            _merge(base[key], value, base_locs, child_locs, path)
        else:
            base[key] = copy.deepcopy(value)
            for p in [p for p in base_locs if p[: len(path)] == path]:
                del base_locs[p]
        base_locs.update({p: loc for p, loc in child_locs.items() if p[: len(path)] == path})


def _read_with_extends(path: Path, found: yaml_io.Problems, chain: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    path = path.resolve() if chain else path
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{path}: `extends` nests deeper than {MAX_EXTENDS_DEPTH} files")
    if path.resolve() in [p.resolve() for p in chain]:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: `extends` forms a cycle: {cycle}")
    data, locs = yaml_io.read(path, found)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{locs.get((), path)}: a config must be a mapping of sections (name, model, data, train, ...)")
    parents = data.pop("extends", None)
    if parents is None:
        return data, locs
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{locs[('extends',)]}: extends: expected a file name or a list of file names")
    merged: dict = {}
    merged_locs: dict = {}
    for parent in parents:
        parent_path = (path.parent / parent)
        if not parent_path.exists():
            raise ConfigError(f"{locs[('extends',)]}: extends: file not found: {parent_path}")
        pdata, plocs = _read_with_extends(parent_path, found, (*chain, path))
        _merge(merged, pdata, merged_locs, plocs)
    _merge(merged, data, merged_locs, locs)
    return merged, merged_locs


def apply_overrides(data: dict, locs: dict, overrides: list[str]) -> None:
    """Apply `a.b.c=value` overrides in place; values parse as YAML."""
    problems = []
    # a new model.name resets the model section, so apply it before the model keys given with it
    overrides = sorted(overrides, key=lambda o: o.partition("=")[0].strip() != "model.name")
    for item in overrides:
        source = f"override {item!r}"
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"{source}: expected KEY=VALUE with a dotted key, e.g. train.lr=3e-4")
            continue
        try:
            value = yaml_io.parse_value(raw, source) if raw.strip() else None
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        path = tuple(key.split("."))
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
                locs.setdefault(path[: i + 1], source)
            if not isinstance(child, dict):
                problems.append(f"{source}: {_dotted(path[: i + 1])} is not a section")
                break
            node = child
        else:
            if path == ("model", "name") and isinstance(data.get("model"), dict) and data["model"].get("name") != value:
                # another model: the old model's keys mean nothing to it
                data["model"] = {}
                node = data["model"]
                for p in [p for p in locs if p[:1] == ("model",)]:
                    del locs[p]
            node[path[-1]] = value
            for p in [p for p in locs if p[: len(path)] == path]:
                del locs[p]
            locs[path] = source
    if problems:
        raise ConfigError(problems)


def _describe(error: dict, data: dict, locs: dict) -> str:
    loc = tuple(error["loc"])
    # a discriminated union puts the tag in the path: ("model", "mlp", "dropout")
    if len(loc) >= 2 and loc[0] == "model" and isinstance(data.get("model"), dict) and loc[1] == data["model"].get("name"):
        loc = (loc[0], *loc[2:])
    kind = error["type"]
    where = locs.get(loc)
    parent = loc
    while where is None and parent:
        parent = parent[:-1]
        where = locs.get(parent)
    where = where or "config"
    dotted = _dotted(loc)
    if kind == "extra_forbidden":
        allowed = section_fields(loc[:-1], data) or []
        suggestion = close_matches(str(loc[-1]), allowed)
        msg = f"unknown key {str(loc[-1])!r}" + (f"; {suggestion}" if suggestion else "")
        if allowed and not suggestion:
            msg += f" (allowed: {', '.join(allowed)})"
        return f"{where}: {dotted}: {msg}"
    if kind == "missing":
        return f"{where}: {dotted}: required key missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        from airlab.registry import model_names

        where = locs.get(("model", "name"), where)
        name = (data.get("model") or {}).get("name") if isinstance(data.get("model"), dict) else None
        if name is None:
            return f"{where}: model.name: required (one of {', '.join(model_names())})"
        suggestion = close_matches(str(name), model_names())
        return (f"{where}: model.name: unknown model {name!r}" + (f"; {suggestion}" if suggestion else "")
                + f" (known: {', '.join(model_names())})")
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in error and kind not in ("model_type", "dict_type") and "Received" not in msg:
        msg += f". Received: {dotted.split('.')[-1]}={error['input']!r}"
    return f"{where}: {dotted}: {msg}"


def validate(data: dict, locs: dict | None = None, found: yaml_io.Problems | None = None) -> BaseModel:
    """Validate against the schema. `found` are problems already seen while reading (refused
    YAML content); they are reported with the schema's, and schema errors beneath them dropped."""
    locs = locs or {}
    found = list(found or [])
    bad_paths = [path for path, _ in found]
    problems = [msg for _, msg in found]
    try:
        config = run_config_class().model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            if any(loc[: len(p)] == p or p[: len(loc)] == loc for p in bad_paths):
                continue
            problems.append(_describe(err, data, locs))
        config = None
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)),
                          hint="fix the keys above; `airlab validate CONFIG` checks a config without training")
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> BaseModel:
    """Read, extend, override and validate a config file; report every problem at once."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    found: yaml_io.Problems = []
    data, locs = _read_with_extends(path, found)
    apply_overrides(data, locs, list(overrides or []))
    return validate(data, locs, found)


def to_dict(config: BaseModel) -> dict[str, Any]:
    return config.model_dump(mode="json")


def to_yaml(config: BaseModel) -> str:
    return yaml_io.dump(to_dict(config))
