"""Validate YAML against a small nested schema, with file:line in every error.

YAML is composed (not just loaded) so every value keeps its position; unknown
keys, wrong types and failed checks become ``ConfigError``s naming the file,
the line and the dotted field (``patch.source``, ``kernels[2]``). Scenarios,
kernel definitions and image recipes all validate here, so their errors read
alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union, cast

import yaml
from yaml.constructor import SafeConstructor

from .errors import ConfigError

Schema = Mapping[str, "Field"]
Types = Union[type, tuple[type, ...]]
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping", Path: "a path"}


@dataclass(frozen=True)
class Field:
    types: Types                  # Path: a string, resolved against the file's directory
    required: bool = False
    default: Any = None
    schema: Union[Schema, "Variants", None] = None              # for a mapping value
    items: Union[Types, Schema, "Field", None] = None           # for a list value
    values: Optional[Schema] = None               # for a mapping with keys of the user's choice
    check: Optional[Callable[[Any], Optional[str]]] = None      # returns an error text or None
    unique: bool = False          # a list value: no item twice
    as_text: bool = False         # a string that may be written as a bare integer (series: 7)
    doc: str = ""


@dataclass(frozen=True)
class Variants:
    """A mapping whose fields depend on one field's value: ``kind: debian`` takes other
    fields than ``kind: local``. ``common`` fields are known to every variant."""
    key: str
    choices: Mapping[str, Schema]
    common: Schema = field(default_factory=dict)

    def schema(self, choice: str) -> Schema:
        return {self.key: Field(str, required=True), **self.common, **self.choices[choice]}


def matches(pattern: Union[str, re.Pattern], what: str) -> Callable[[str], Optional[str]]:
    """A check: the whole string matches ``pattern``, else "'x' is not <what>"."""
    regex = re.compile(pattern)
    return lambda v: None if regex.fullmatch(v) else f"{v!r} is not {what}"


def one_of(choices: tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, not {v!r}"


def _kinds(types: Types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _is(value: Any, types: Types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _takes_path(types: Types) -> bool:
    return Path in (types if isinstance(types, tuple) else (types,))


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
    def __init__(self, source: str, base: Optional[Path] = None,
                 names: Optional[Mapping[str, str]] = None):
        self.source, self.base = source, base
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

    def _variant(self, node: yaml.MappingNode, variants: Variants, prefix: str
                 ) -> tuple[Schema, str]:
        name = f"{prefix}.{variants.key}" if prefix else variants.key
        known = ", ".join(variants.choices)
        for key_node, value_node in node.value:
            if self.constructor.construct_object(key_node, deep=True) == variants.key:
                choice = self.constructor.construct_object(value_node, deep=True)
                if not isinstance(choice, str) or choice not in variants.choices:
                    raise self.fail(f"must be one of {known}, not {choice!r}", value_node, name)
                return variants.schema(choice), f" for {variants.key} {choice}"
        raise ConfigError(f"required field is missing ({' or '.join(variants.choices)})",
                          source=self.source, line=node.start_mark.line + 1, field=name)

    def mapping(self, node: yaml.Node, schema: Union[Schema, Variants], prefix: str
                ) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail("must be a mapping of fields", node, prefix)
        variant = ""
        if isinstance(schema, Variants):
            schema, variant = self._variant(node, schema, prefix)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.constructor.construct_object(key_node, deep=True)
            name = f"{prefix}.{key}" if prefix else str(key)
            if not isinstance(key, str) or key not in schema:
                raise self.fail(f"unknown field{variant} (known here: {', '.join(schema)})",
                                key_node, name)
            if key in out:
                raise self.fail(f"field given twice (first on line {self.lines[name]})",
                                key_node, name)
            self.lines[name] = key_node.start_mark.line + 1
            out[key] = self.value(value_node, schema[key], name)
        for key, spec in schema.items():
            name = f"{prefix}.{key}" if prefix else key
            if key not in out:
                if spec.required:
                    raise self.fail(f"required field is missing{variant}", node, name)
                # an absent mapping gets its fields' defaults (a variant one: no kind to pick)
                out[key] = (self.mapping(yaml.MappingNode("tag:yaml.org,2002:map", [],
                                                          node.start_mark, node.end_mark),
                                         spec.schema, name)
                            if isinstance(spec.schema, Mapping) and spec.default is None
                            else spec.default)
        return out

    def value(self, node: yaml.Node, spec: Field, name: str) -> Any:
        if spec.schema is not None and isinstance(node, yaml.MappingNode):
            value: Any = self.mapping(node, spec.schema, name)
        elif spec.items is not None and isinstance(node, yaml.SequenceNode):
            value = [self.item(n, spec.items, f"{name}[{i}]") for i, n in enumerate(node.value)]
            if spec.unique:
                for i, item in enumerate(value):
                    if item in value[:i]:
                        raise self.fail(f"{item!r} is listed twice", node.value[i], f"{name}[{i}]")
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
        if spec.as_text and isinstance(node, yaml.ScalarNode) and not isinstance(value, str):
            if isinstance(value, float):
                # 6.10 would silently read as 6.1: only a quoted string says what was meant
                raise self.fail(f"must be a string; quote it: {name}: \"{node.value}\"", node, name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = node.value
        if _takes_path(spec.types) and isinstance(value, str):
            value = self.path(value, node, name)
        if not _is(value, spec.types):
            raise self.fail(f"must be {_kinds(spec.types)}, not {value!r}", node, name)
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise self.fail(problem, node, name)
        return value

    def path(self, text: str, node: yaml.Node, name: str) -> Path:
        """``~`` expanded; a relative path is relative to the file's directory."""
        if not text.strip():
            raise self.fail("must not be empty", node, name)
        p = Path(text).expanduser()
        return p if p.is_absolute() or self.base is None else (self.base / p).absolute()

    def item(self, node: yaml.Node, items: Any, name: str) -> Any:
        if isinstance(items, Field):
            return self.value(node, items, name)
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


def load(path: Path, schema: Union[Schema, Variants], *, empty: str = "the file is empty",
         what: str = "") -> Loaded:
    """Read ``path`` and validate it against ``schema``; defaults filled in."""
    root = compose(path, empty=empty, what=what)
    v = _Validator(str(path), Path(path).parent)
    return Loaded(v.mapping(root, schema, ""), v.lines, str(path))


def load_data(data: Mapping[str, Any], schema: Schema, *, source: str,
              names: Optional[Mapping[str, str]] = None) -> Loaded:
    """Validate plain data (e.g. command-line options) against ``schema``: the same checks,
    defaults and error shape as a file, with each field named as ``names`` says (an option)."""
    root = yaml.compose(yaml.safe_dump(dict(data), sort_keys=False), Loader=yaml.SafeLoader)
    v = _Validator(source, Path.cwd(), names=names or {})
    # a dumped dict composes to a mapping node: never None (which only an empty stream gives)
    return Loaded(v.mapping(cast(yaml.Node, root), schema, ""), {}, source, names or {})
