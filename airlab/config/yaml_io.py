"""Safe YAML with positions: every value's file:line:column is kept for error messages.

Built on `yaml.SafeLoader` (no Python tags can construct objects). Duplicate keys are refused.
`1e-3` reads as a float (YAML 1.1 would read it as a string).

Hostile input is bounded: only regular files of at most MAX_BYTES are read (never a device, FIFO
or directory, and never more than MAX_BYTES + 1 bytes); nesting is at most MAX_DEPTH levels (in
the composer too, before Python's recursion limit); aliases are expanded while walking, and the
walk stops at MAX_NODES values (a "billion laughs" file is refused in milliseconds); integers
have at most MAX_INT_DIGITS digits. Each is a ConfigError located at file:line:col.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from airlab.errors import ConfigError

Locations = dict[tuple, str]


MAX_BYTES = 4 * 1024 * 1024  # a config is a few KB; larger files are refused before parsing
MAX_DEPTH = 64  # nesting levels of mappings and lists (a config needs 3 or 4)
MAX_NODES = 20_000  # values in a document once aliases are expanded (a config has about 100)
MAX_INT_DIGITS = 100  # digits of an integer (Python itself refuses to read more than 4,300)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_INT_TAG = "tag:yaml.org,2002:int"


class _TooBig(Exception):
    """Stops composing or walking a document at once: (message, mark)."""

    def __init__(self, message: str, mark: yaml.Mark | None, path: tuple = ()):
        super().__init__(message)
        self.message, self.mark, self.path = message, mark, path


def _too_deep() -> str:
    return f"nesting deeper than {MAX_DEPTH} levels (a config needs a few); refused"


def _too_many() -> str:
    return (f"more than {MAX_NODES:,} values once aliases are expanded (a config has about a hundred; "
            "an alias bomb?); refused")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer counts nesting and nodes, so a deep or huge document stops with
    a located error instead of a RecursionError or minutes of work."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if not self.check_event(yaml.AliasEvent):
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise _TooBig(_too_many(), self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(_too_deep(), self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters, more than a config may hold "
                          f"({MAX_BYTES // 2**20} MiB); refused")
    try:
        loader = _Loader(text)
    except yaml.YAMLError as e:  # e.g. a control character the YAML reader refuses
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    visited = 0

    def walk(n: yaml.Node, path: tuple, depth: int = 0) -> Any:
        # aliases are expanded here: count every value reached, and how deep, to stop a bomb early
        nonlocal visited
        visited += 1
        if visited > MAX_NODES:  # name the top-level key being expanded: the node is in an anchor
            raise _TooBig(_too_many(), n.start_mark, path[:1])
        if depth >= MAX_DEPTH:  # also ends an alias that refers to its own anchor
            raise _TooBig(_too_deep(), n.start_mark)
        locations[path] = _where(source, n.start_mark)
        if not isinstance(n, yaml.ScalarNode) and n.tag not in _PLAIN_TAGS:
            problems.append((path, f"{_where(source, n.start_mark)}: tag {n.tag!r} is not allowed (only plain YAML)"))
            return _REFUSED
        if isinstance(n, yaml.MappingNode):
            return walk_mapping(n, path, depth)
        if isinstance(n, yaml.SequenceNode):
            items = [walk(item, (*path, i), depth + 1) for i, item in enumerate(n.value)]
            return [item for item in items if item is not _REFUSED]
        return construct(n, path)

    def walk_mapping(n: yaml.MappingNode, path: tuple, depth: int) -> Any:
        # merge keys (`<<: *base`) as YAML defines them: the mapping's own keys win over merged
        # ones, an earlier merged mapping over a later one; only the mapping's own keys may clash
        merged: list[yaml.Node] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in n.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in sources:
                if not isinstance(sub, yaml.MappingNode):
                    problems.append((path, f"{_where(source, sub.start_mark)}: expected a mapping to merge "
                                           f"with `<<`, found a {sub.id}"))
                    return {}
                merged.append(sub)
        out: dict = {}
        here = locations[path]
        for sub in reversed(merged):
            value = walk(sub, path, depth + 1)
            if isinstance(value, dict):
                for key, item in value.items():
                    out.pop(key, None)
                    out[key] = item
        locations[path] = here
        own_keys: set = set()
        for key_node, value_node in own:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append((path, f"{_where(source, key_node.start_mark)}: keys must be plain names"))
                continue
            if key_node.tag == _VALUE_TAG:  # the `=` key: a plain string, as PyYAML reads it
                key_node = yaml.ScalarNode("tag:yaml.org,2002:str", key_node.value,
                                           key_node.start_mark, key_node.end_mark)
            key = construct(key_node, path, is_key=True)
            if key is _REFUSED:
                continue
            if not isinstance(key, str):
                key = str(key)
            if key in own_keys:
                dotted = ".".join(str(p) for p in (*path, key))
                problems.append(((*path, key),
                                 f"{_where(source, key_node.start_mark)}: {dotted}: duplicate key "
                                 f"(first at line {locations[(*path, key)].rsplit(':', 2)[-2]})"))
                continue
            own_keys.add(key)
            if key in out:  # a merged value this key overrides: forget where its parts were
                out.pop(key)
                for p in [p for p in locations if p[: len(path) + 1] == (*path, key)]:
                    del locations[p]
            locations[(*path, key)] = _where(source, key_node.start_mark)
            value = walk(value_node, (*path, key), depth + 1)
            if value is not _REFUSED:
                out[key] = value
            # the key's own position is the most useful place to point at
            locations[(*path, key)] = _where(source, key_node.start_mark)
        return out

    def construct(n: yaml.Node, path: tuple, is_key: bool = False) -> Any:
        if n.tag == _INT_TAG:
            digits = sum(c.isalnum() for c in n.value.lower().lstrip("+-").removeprefix("0x")
                         .removeprefix("0b").removeprefix("0o"))
            if digits > MAX_INT_DIGITS:
                what = "a key" if is_key else ".".join(str(p) for p in path) or "(top level)"
                problems.append((path, f"{_where(source, n.start_mark)}: {what}: an integer of {digits:,} "
                                       f"digits (at most {MAX_INT_DIGITS}); refused"))
                return _REFUSED
        try:
            return loader.construct_object(n, deep=True)
        except yaml.constructor.ConstructorError as e:
            problems.append((path, f"{_where(source, n.start_mark)}: {e.problem} (only plain YAML is allowed)"))
        except (ValueError, OverflowError) as e:  # e.g. a date 2024-13-01
            problems.append((path, f"{_where(source, n.start_mark)}: cannot read {n.value!r}: {e}"))
        return _REFUSED

    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise ConfigError(f"{_where(source, mark)}: invalid YAML: {e.problem or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: invalid YAML: {e}") from None
        if node is None:  # an empty file: point at its start
            locations[()] = f"{source}:1:1"
            data = {}
        else:
            data = walk(node, ())
            if data is _REFUSED:
                data = {}
    except _TooBig as e:
        if e.path and e.path in locations:
            raise ConfigError(f"{locations[e.path]}: {e.path[0]}: {e.message}") from None
        raise ConfigError(f"{_where(source, e.mark)}: {e.message}") from None
    except RecursionError:  # a guard behind MAX_DEPTH: never a traceback
        raise ConfigError(f"{source}: {_too_deep()}") from None
    finally:
        loader.dispose()
    if found is not None:
        found.extend(problems)
    elif problems:
        raise ConfigError([msg for _, msg in problems])
    return data, locations


def read_text(path: Path) -> str:
    """A config file's text: a regular file of at most MAX_BYTES, UTF-8. Anything else (a
    device such as /dev/zero, a FIFO, a directory, a larger file) is refused before reading it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)  # a FIFO never blocks
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", hint="check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML config file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise ConfigError(f"{path}: cannot read config: {getattr(e, 'strerror', None) or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{path}: is a directory, expected a YAML config file")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); a config is a YAML file")
        with open(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 2**20} MiB, far more than a config holds; refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from None


def read(path: Path, found: Problems | None = None) -> tuple[Any, Locations]:
    return parse(read_text(path), str(path), found)


def parse_value(text: str, source: str) -> Any:
    """Parse an override's value as YAML (`1e-3` -> float, `[64, 64]` -> list, `null` -> None)."""
    data, _ = parse(text, source)
    return data


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
