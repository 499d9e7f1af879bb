"""Safe YAML with positions: every value's file:line:column is kept for error messages.

Built on `yaml.SafeLoader` (no Python tags can construct objects). Duplicate keys are refused.
`1e-3` reads as a float (YAML 1.1 would read it as a string).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from airlab.errors import ConfigError

Locations = dict[tuple, str]


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.1 wants a dot in floats; researchers write `lr: 1e-3`. Accept YAML 1.2 floats too.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _where(source: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


_REFUSED = object()  # stands for refused content while walking; never returned
Problems = list[tuple[tuple, str]]  # (key path, located message)


def parse(text: str, source: str, found: Problems | None = None) -> tuple[Any, Locations]:
    """Parse YAML text; return the data and a map from key path to 'source:line:col'.

    Invalid syntax raises ConfigError at once. Refused content (duplicate keys, tags) is left
    out of the data and reported: appended to `found` when given, so the caller can report it
    together with schema problems, else raised here.
    """
    problems: Problems = []
    locations: Locations = {}
    try:
        loader = _Loader(text)
    except yaml.YAMLError as e:  # e.g. a control character the YAML reader refuses
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise ConfigError(f"{_where(source, mark)}: invalid YAML: {e.problem or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: invalid YAML: {e}") from None

        def walk(n: yaml.Node, path: tuple) -> Any:
            locations[path] = _where(source, n.start_mark)
            if not isinstance(n, yaml.ScalarNode) and n.tag not in _PLAIN_TAGS:
                problems.append((path, f"{_where(source, n.start_mark)}: tag {n.tag!r} is not allowed (only plain YAML)"))
                return _REFUSED
            if isinstance(n, yaml.MappingNode):
                try:
                    loader.flatten_mapping(n)
                except yaml.MarkedYAMLError as e:
                    problems.append((path, f"{_where(source, e.problem_mark)}: {e.problem}"))
                    return {}
                out: dict = {}
                for key_node, value_node in n.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        problems.append((path, f"{_where(source, key_node.start_mark)}: keys must be plain names"))
                        continue
                    key = construct(key_node, path)
                    if not isinstance(key, str):
                        key = str(key)
                    if key in out:
                        dotted = ".".join(str(p) for p in (*path, key))
                        problems.append(((*path, key),
                                         f"{_where(source, key_node.start_mark)}: {dotted}: duplicate key "
                                         f"(first at line {locations[(*path, key)].rsplit(':', 2)[-2]})"))
                        continue
                    locations[(*path, key)] = _where(source, key_node.start_mark)
                    value = walk(value_node, (*path, key))
                    if value is not _REFUSED:
                        out[key] = value
                    # the key's own position is the most useful place to point at
                    locations[(*path, key)] = _where(source, key_node.start_mark)
                return out
            if isinstance(n, yaml.SequenceNode):
                items = [walk(item, (*path, i)) for i, item in enumerate(n.value)]
                return [item for item in items if item is not _REFUSED]
            return construct(n, path)

        def construct(n: yaml.Node, path: tuple) -> Any:
            try:
                return loader.construct_object(n, deep=True)
            except yaml.constructor.ConstructorError as e:
                problems.append((path, f"{_where(source, n.start_mark)}: {e.problem} (only plain YAML is allowed)"))
                return _REFUSED

        if node is None:  # an empty file: point at its start
            locations[()] = f"{source}:1:1"
            data = {}
        else:
            data = walk(node, ())
            if data is _REFUSED:
                data = {}
    finally:
        loader.dispose()
    if found is not None:
        found.extend(problems)
    elif problems:
        raise ConfigError([msg for _, msg in problems])
    return data, locations


def read(path: Path, found: Problems | None = None) -> tuple[Any, Locations]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from None
    return parse(text, str(path), found)


def parse_value(text: str, source: str) -> Any:
    """Parse an override's value as YAML (`1e-3` -> float, `[64, 64]` -> list, `null` -> None)."""
    data, _ = parse(text, source)
    return data


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
