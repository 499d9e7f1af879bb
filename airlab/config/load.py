"""Load a run config: read YAML safely, resolve `extends:`, apply KEY=VALUE overrides, validate.

Every problem is reported at once, each with its key path and where it came from
(`file:line:col`, or the override that set it).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable, Union

from pydantic import BaseModel, ValidationError

from airlab.config import yaml_io
from airlab.config.schema import run_config_class, section_fields
from airlab.errors import ConfigError
from airlab.registry import close_matches
from airlab.specs.base import BooleanInput

MAX_EXTENDS_DEPTH = 10
MAX_EXTENDS_FILES = 32  # files read for one config, all `extends:` branches together
MAX_PROBLEMS = 50  # problems listed in one error; the rest are counted

# An override: "KEY=VALUE" as typed, or ("KEY=VALUE", label) where the label says where it came
# from in error messages (e.g. "--backend tf"); a plain string is labelled "override 'KEY=VALUE'".
Override = Union[str, tuple[str, str]]

_KEY_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def _read_with_extends(path: Path, found: yaml_io.Problems, chain: tuple[Path, ...] = (),
                       files: list[Path] | None = None) -> tuple[dict, dict]:
    path = path.resolve() if chain else path
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{path}: `extends` nests deeper than {MAX_EXTENDS_DEPTH} files")
    files = [] if files is None else files
    files.append(path)
    if len(files) > MAX_EXTENDS_FILES:
        raise ConfigError(f"{path}: `extends` reads more than {MAX_EXTENDS_FILES} files for one config; refused")
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
        pdata, plocs = _read_with_extends(parent_path, found, (*chain, path), files)
        _merge(merged, pdata, merged_locs, plocs)
    _merge(merged, data, merged_locs, locs)
    return merged, merged_locs


def _labelled(item: Override) -> tuple[str, str]:
    if isinstance(item, tuple):
        return item
    if len(item) > 120:  # a label, not a copy of a hostile value
        return item, f"override {item[:60]!r}... ({len(item):,} characters)"
    return item, f"override {item!r}"


def apply_overrides(data: dict, locs: dict, overrides: Iterable[Override]) -> dict[tuple, str]:
    """Apply `a.b.c=value` overrides in place; values parse as YAML (with the limits of a config
    file). Each override is "KEY=VALUE" or ("KEY=VALUE", label), the label naming it in errors.

    `train.steps` and `train.epochs` replace each other: an override that sets one (not to null)
    clears the other unless an override sets that one too (then both stay, and are refused).
    Returns {key path: label} of the keys the overrides set.
    """
    problems = []
    given: dict[tuple, str] = {}
    items = [_labelled(o) for o in overrides]
    # a new model.name resets the model section, so apply it before the model keys given with it
    items.sort(key=lambda o: o[0].partition("=")[0].strip() != "model.name")
    for item, source in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not all(_KEY_PART.fullmatch(part) for part in key.split(".")):
            problems.append(f"{source}: expected KEY=VALUE with a dotted key of names, e.g. train.lr=3e-4")
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
            given[path] = source
    if problems:
        raise ConfigError(problems)
    _steps_or_epochs(data, locs, given)
    return given


def _steps_or_epochs(data: dict, locs: dict, given: dict[tuple, str]) -> None:
    """An override of train.steps replaces the config's train.epochs, and the other way round
    (`airlab train --resume RUN train.steps=N --allow-config-change` on an epoch-based run)."""
    train = data.get("train")
    if not isinstance(train, dict):
        return
    for key, other in (("steps", "epochs"), ("epochs", "steps")):
        if (("train", key) in given and train.get(key) is not None and ("train", other) not in given
                and train.get(other) is not None):
            train[other] = None
            locs[("train", other)] = given[("train", key)]


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


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
    if isinstance(error.get("input"), BooleanInput):
        msg = "Expected a number, not true/false"
    if "input" in error and kind not in ("model_type", "dict_type") and "Received" not in msg:
        # betas[1]=nan, not 1=nan
        head, indices = list(loc), []
        while head and isinstance(head[-1], int):
            indices.insert(0, head.pop())
        name = (str(head[-1]) if head else dotted) + "".join(f"[{i}]" for i in indices)
        msg += f". Received: {name}={_short_repr(error['input'])}"
    return f"{where}: {dotted}: {msg}"


def _model_source(locs: dict) -> str:
    """Where the model's size was decided: an override of a model key if there is one, else the
    model section."""
    overridden = [where for path, where in locs.items()
                  if path[:1] == ("model",) and len(path) > 1 and not re.match(r".+:\d+:\d+$", where)]
    return overridden[-1] if overridden else locs.get(("model",), "config")


def validate(data: dict, locs: dict | None = None, found: yaml_io.Problems | None = None,
             *, check_resources: bool = True) -> BaseModel:
    """Validate against the schema. `found` are problems already seen while reading (refused
    YAML content); they are reported with the schema's, and schema errors beneath them dropped.

    With `check_resources`, a model whose parameters, gradients and optimizer state alone need
    more than this machine's memory is refused too, with the estimate (see config.resources)."""
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
        problems = list(dict.fromkeys(problems))
        if len(problems) > MAX_PROBLEMS:  # a hostile list of 20,000 bad values: say so, briefly
            problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS:,} more problems"]
        raise ConfigError(problems,
                          hint="fix the keys above; `airlab validate CONFIG` checks a config without training")
    if check_resources:
        from airlab.config import resources

        too_big = resources.check(config)
        if too_big:
            raise ConfigError(f"{_model_source(locs)}: model: {too_big}",
                              hint="make the model smaller (model.* sizes), or train it on a machine with more memory")
    return config


def _model_and_data(data: dict) -> tuple:
    from airlab.config.schema import DataConfig

    model, section = data.get("model"), data.get("data")
    default = DataConfig.model_fields["name"].default
    return (model.get("name") if isinstance(model, dict) else None,
            section.get("name", default) if isinstance(section, dict) else default)


def _name_from_overrides(data: dict, locs: dict, given: dict[tuple, str], before: tuple) -> None:
    """A run of another model or dataset is named for them: when an override changes model.name
    or data.name and none sets `name`, the name becomes <model>-<data> (`vae-shapes`)."""
    model_name, data_name = _model_and_data(data)
    changed = [given[p] for p, old, new in ((("model", "name"), before[0], model_name),
                                            (("data", "name"), before[1], data_name)) if p in given and old != new]
    if not changed or ("name",) in given:
        return
    if all(isinstance(n, str) and _KEY_PART.fullmatch(n) for n in (model_name, data_name)):
        data["name"] = f"{model_name}-{data_name}"
        locs[("name",)] = changed[-1]


def load_config(path: str | Path, overrides: Iterable[Override] | None = None, *,
                check_resources: bool = True) -> BaseModel:
    """Read, extend, override and validate a config file; report every problem at once.

    Overrides are "KEY=VALUE" strings or ("KEY=VALUE", label) pairs (see apply_overrides). When
    they change model.name or data.name but not `name`, the run is named <model>-<data>."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    found: yaml_io.Problems = []
    data, locs = _read_with_extends(path, found)
    before = _model_and_data(data)
    given = apply_overrides(data, locs, list(overrides or []))
    _name_from_overrides(data, locs, given, before)
    return validate(data, locs, found, check_resources=check_resources)


def to_dict(config: BaseModel) -> dict[str, Any]:
    return config.model_dump(mode="json")


def to_yaml(config: BaseModel) -> str:
    return yaml_io.dump(to_dict(config))
