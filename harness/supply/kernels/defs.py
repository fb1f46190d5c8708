"""Kernel definitions: ``kernels/*.yaml`` -> validated ``KernelDef``s.

A definition names a kernel *line*. One file per kernel; ``name`` must equal
the file's stem (``debian-6.1.yaml`` defines ``debian-6.1``; ``name`` may be
omitted) so that a name always leads to exactly one file. Two kinds:

``kind: debian``
    ``suites`` (list, required), ``series`` (required; "6.1" matches package
    versions 6.1.*, "7" matches 7.*), ``flavour`` (default amd64), ``pin``
    (optional exact package version), ``description``.
``kind: local``
    ``vmlinuz``, ``modules`` (a ``lib/modules/<release>`` directory or a
    directory containing one), ``build`` (a kernel build directory), optional
    ``release``; relative paths resolve against the YAML file's directory.

Files validate through ``yamlconf``: every mistake names the file, the line and
the field, like a scenario's.

Where definitions come from: the built-in directory (the repository's ``kernels/``, or
``$LIVEPATCH_LAB_KERNELS`` in its place), and beside it each directory of
``$LIVEPATCH_LAB_EXTRA_KERNELS`` (``os.pathsep``-separated; the pytest plugin's
``--lab-kernels-dir`` sets it). A name defined twice, in one directory or two, is an error
naming both files.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...core import paths, yamlconf
from ...core.errors import ConfigError
from ...core.yamlconf import Field, matches
from .. import debversion

DEFAULT_KERNELS_DIR = paths.KERNELS_DIR
ENV_KERNELS = "LIVEPATCH_LAB_KERNELS"
ENV_EXTRA_KERNELS = "LIVEPATCH_LAB_EXTRA_KERNELS"

_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]*"


def _debian_version(v: str) -> Optional[str]:
    try:
        debversion.parse(v)
    except ValueError:
        return f"{v!r} is not a Debian version"
    return None


SCHEMA = yamlconf.Variants("kind", common={
    "name": Field(str, check=matches(_NAME, "a kernel name")),
    "description": Field(str, default=""),
}, choices={
    "debian": {
        "suites": Field(list, required=True, unique=True,
                        items=Field(str, check=matches(r"[a-z0-9][a-z0-9./-]*", "a suite name")),
                        check=lambda v: None if v else "must not be empty, e.g. "
                                                       "[bookworm, bookworm-security]"),
        "series": Field(str, required=True, as_text=True,
                        check=matches(r"\d+(\.\d+)*", "a kernel series (6.1, 7)")),
        "flavour": Field(str, default="amd64", check=matches(r"[a-z0-9][a-z0-9-]*", "a flavour")),
        "pin": Field(str, check=_debian_version),
    },
    "local": {
        "vmlinuz": Field(Path, required=True),
        "modules": Field(Path, required=True, doc="lib/modules/<release>, or a tree holding one"),
        "build": Field(Path, required=True, doc="the kernel's build directory (KDIR)"),
        "release": Field(str, check=matches(_NAME, "a kernel release")),
    },
})


@dataclass(frozen=True)
class KernelDef:
    name: str
    kind: str                      # "debian" | "local"
    source: Path                   # the YAML file
    description: str = ""
    suites: tuple[str, ...] = ()
    series: Optional[str] = None
    flavour: str = "amd64"
    pin: Optional[str] = None
    vmlinuz: Optional[Path] = None
    modules: Optional[Path] = None
    build: Optional[Path] = None
    release: Optional[str] = None
    # where each key sits in the file, for errors found after loading
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)
    pin_origin: Optional[str] = field(default=None, compare=False, repr=False)  # "name@pin" spec

    def error(self, message: str, key: Optional[str] = None) -> ConfigError:
        """A ``ConfigError`` pointing at ``key`` in this definition (or at the spec it was pinned by)."""
        if key == "pin" and self.pin_origin:
            return ConfigError(message, source=self.pin_origin, field="pin")
        line = dict(self.lines).get(key) if key else None
        return ConfigError(message, source=str(self.source), field=key, line=line)


def kernels_directory(directory: Optional[Path] = None) -> Path:
    """``directory``, else ``$LIVEPATCH_LAB_KERNELS``, else the repository's ``kernels/``."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(ENV_KERNELS)
    return Path(env).expanduser() if env else DEFAULT_KERNELS_DIR


def definition_directories(directory: Optional[Path] = None) -> list[tuple[Path, Optional[str]]]:
    """Where definitions are read from, each with the variable that named it (for errors):
    ``directory`` alone when given; else the built-in directory (``kernels_directory()``) and
    then each of ``$LIVEPATCH_LAB_EXTRA_KERNELS``, a directory named twice read once."""
    if directory is not None:
        return [(Path(directory), None)]
    found = [(kernels_directory(), ENV_KERNELS if os.environ.get(ENV_KERNELS) else None)]
    found += [(Path(d).expanduser(), ENV_EXTRA_KERNELS)
              for d in os.environ.get(ENV_EXTRA_KERNELS, "").split(os.pathsep) if d]
    seen: set[Path] = set()
    unique = []
    for where, var in found:
        if where.resolve() not in seen:
            seen.add(where.resolve())
            unique.append((where, var))
    return unique


def load_definitions(directory: Optional[Path] = None) -> dict[str, KernelDef]:
    """Every definition of ``definition_directories(directory)``, by name."""
    defs: dict[str, KernelDef] = {}
    for where, var in definition_directories(directory):
        if not where.is_dir():
            raise ConfigError("kernel definitions directory does not exist", source=str(where), field=var)
        for path in sorted([*where.glob("*.yaml"), *where.glob("*.yml")]):
            defn = load_definition(path)
            if defn.name in defs:
                raise ConfigError(f"kernel {defn.name!r} is also defined in {defs[defn.name].source}",
                                  source=str(path), field="name")
            defs[defn.name] = defn
    return defs


def get_definition(spec: str, directory: Optional[Path] = None) -> KernelDef:
    """``"debian-6.1"`` or ``"debian-6.1@6.1.192-2"`` (a pin overriding the file's)."""
    name, at, pin = spec.strip().partition("@")
    defs = load_definitions(directory)
    if name not in defs:
        known = ", ".join(sorted(defs)) or "none"
        raise ConfigError(f"unknown kernel {name!r} (known: {known})", source=spec, field="kernel")
    defn = defs[name]
    if not at:
        return defn
    if defn.kind != "debian":
        raise ConfigError(f"only debian kernels take a version pin; {name} is {defn.kind}",
                          source=spec, field="pin")
    if _debian_version(pin):
        raise ConfigError(f"pin {pin!r} is not a Debian version", source=spec, field="pin")
    return dataclasses.replace(defn, pin=pin, pin_origin=spec)


def load_definition(path: Path) -> KernelDef:
    """Parse and validate one definition file; every mistake is a ``ConfigError`` with its line."""
    path = Path(path)
    loaded = yamlconf.load(path, SCHEMA, empty="empty kernel definition")
    v = loaded.values
    name = v["name"] or path.stem
    if name != path.stem:
        raise loaded.error(f"name {name!r} must match the file name ({path.stem!r})", "name")
    common = dict(name=name, kind=v["kind"], source=path, description=v["description"],
                  lines=tuple(sorted(loaded.lines.items())))
    if v["kind"] == "local":
        return KernelDef(**common, flavour="", vmlinuz=v["vmlinuz"], modules=v["modules"],
                         build=v["build"], release=v["release"])
    return KernelDef(**common, suites=tuple(v["suites"]), series=v["series"], flavour=v["flavour"],
                     pin=v["pin"])
