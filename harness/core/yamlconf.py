"""Validate YAML against a small nested schema, with file:line in every error.

YAML is composed (not just loaded) so every value keeps its position; unknown
keys, wrong types and failed checks become ``ConfigError``s naming the file,
the line and the dotted field (``patch.source``, ``kernels[2]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import yaml
from yaml.constructor import SafeConstructor

from .errors import ConfigError

Schema = Mapping[str, "Field"]
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


@dataclass(frozen=True)
class Field:
    types: Union[type, tuple[type, ...]]
    required: bool = False
    default: Any = None
    schema: Optional[Schema] = None               # for a mapping value
    items: Union[type, tuple[type, ...], Schema, None] = None   # for a list value
    values: Optional[Schema] = None               # for a mapping with keys of the user's choice
    check: Optional[Callable[[Any], Optional[str]]] = None      # returns an error text or None
    doc: str = ""


def _kinds(types: Union[type, tuple[type, ...]]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _is(value: Any, types: Union[type, tuple[type, ...]]) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


@dataclass
class Loaded:
    values: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)   # dotted field -> line
    source: str = ""
    names: Optional[Mapping[str, str]] = None             # plain data: field -> option

    def error(self, message: str, field_name: str) -> ConfigError:
        if self.names is not None:
            return ConfigError(message, source=self.source, field=self.names.get(field_name, field_name))
        return ConfigError(message, source=self.source, line=self.lines.get(field_name),
                           field=field_name)


class _Validator:
    def __init__(self, source: str, names: Optional[Mapping[str, str]] = None):
        self.source = source
        self.lines: dict[str, int] = {}
        self.constructor = SafeConstructor()
        # Plain data (command-line options) has no lines; its fields are named as the user
        # spelled them (``timeline.patched`` -> ``--duration``).
        self.names = names

    def fail(self, message: str, node: yaml.Node, name: str) -> ConfigError:
        if self.names is not None:
            return ConfigError(message, source=self.source, field=self.names.get(name, name) or None)
        return ConfigError(message, source=self.source, line=node.start_mark.line + 1,
                           field=name or None)

    def mapping(self, node: yaml.Node, schema: Schema, prefix: str) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail("must be a mapping of fields", node, prefix)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.constructor.construct_object(key_node, deep=True)
            name = f"{prefix}.{key}" if prefix else str(key)
            if not isinstance(key, str) or key not in schema:
                raise self.fail(f"unknown field (known here: {', '.join(schema)})", key_node, name)
            if key in out:
                raise self.fail("field given twice", key_node, name)
            self.lines[name] = key_node.start_mark.line + 1
            out[key] = self.value(value_node, schema[key], name)
        for key, spec in schema.items():
            name = f"{prefix}.{key}" if prefix else key
            if key not in out:
                if spec.required:
                    raise self.fail("required field is missing", node, name)
                out[key] = (self.mapping(yaml.MappingNode("tag:yaml.org,2002:map", [],
                                                          node.start_mark, node.end_mark),
                                         spec.schema, name)
                            if spec.schema is not None and spec.default is None else spec.default)
        return out

    def value(self, node: yaml.Node, spec: Field, name: str) -> Any:
        if spec.schema is not None and isinstance(node, yaml.MappingNode):
            value: Any = self.mapping(node, spec.schema, name)
        elif spec.items is not None and isinstance(node, yaml.SequenceNode):
            value = [self.item(n, spec.items, f"{name}[{i}]") for i, n in enumerate(node.value)]
        elif spec.values is not None and isinstance(node, yaml.MappingNode):
            value = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise self.fail(f"keys must be names, not {key!r}", key_node, name)
                if key in value:
                    raise self.fail("given twice", key_node, f"{name}.{key}")
                self.lines[f"{name}.{key}"] = key_node.start_mark.line + 1
                value[key] = self.mapping(value_node, spec.values, f"{name}.{key}")
        else:
            value = self.constructor.construct_object(node, deep=True)
        if not _is(value, spec.types):
            raise self.fail(f"must be {_kinds(spec.types)}, not {value!r}", node, name)
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise self.fail(problem, node, name)
        return value

    def item(self, node: yaml.Node, items: Any, name: str) -> Any:
        if isinstance(items, Mapping):
            return self.mapping(node, items, name)
        value = self.constructor.construct_object(node, deep=True)
        if not _is(value, items):
            raise self.fail(f"must be {_kinds(items)}, not {value!r}", node, name)
        return value


def compose(path: Path, *, empty: str = "the file is empty", what: str = "") -> yaml.Node:
    """Read and compose ``path``: the root node, positions kept. Unreadable, malformed
    or empty files are ``ConfigError``s naming the file (and the line, for bad YAML)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read{' ' + what if what else ''}: {exc.strerror or exc}",
                          source=source) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", source=source,
                          line=mark.line + 1 if mark else None) from None
    if root is None:
        raise ConfigError(empty, source=source)
    return root


def load(path: Path, schema: Schema) -> Loaded:
    """Read ``path`` and validate it against ``schema``; defaults filled in."""
    root = compose(path)
    v = _Validator(str(path))
    return Loaded(v.mapping(root, schema, ""), v.lines, str(path))


def load_data(data: Mapping[str, Any], schema: Schema, *, source: str,
              names: Optional[Mapping[str, str]] = None) -> Loaded:
    """Validate plain data (e.g. command-line options) against ``schema``: the same checks,
    defaults and error shape as a file, with each field named as ``names`` says (an option)."""
    root = yaml.compose(yaml.safe_dump(dict(data)), Loader=yaml.SafeLoader)
    v = _Validator(source, names or {})
    return Loaded(v.mapping(root, schema, ""), {}, source, names or {})
