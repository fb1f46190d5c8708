"""What the plugin's parts share: the lab's settings from pytest's options, marker names."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest


def _opt(config: pytest.Config, name: str) -> Optional[str]:
    return config.getoption(f"--lab-{name.replace('_', '-')}") or config.getini(f"lab_{name}") or None


def settings_for(config: pytest.Config):
    """The lab's ``Settings`` from options > ini > environment > defaults."""
    from ..core.settings import Settings
    uris = list(_opt(config, "libvirt_uri") or [])
    extra: dict[str, Any] = {}   # a URI, URIs or a switch
    if len(uris) == 1:
        extra["libvirt_uri"] = uris[0]
    elif uris:
        extra["libvirt_uris"] = uris
    if config.getoption("--lab-no-snapshots", default=False):
        extra["snapshots"] = False
    return Settings.from_env(cache_dir=_opt(config, "cache_dir"), accel=_opt(config, "accel"),
                             backend=_opt(config, "backend"), **extra)


def kernel_dirs(config: pytest.Config) -> tuple[list[Path], str]:
    """The directories of kernel definitions to add to the built-in ones, and what named them:
    ``--lab-kernels-dir`` (relative to where pytest started), else the ini's ``lab_kernels_dir``
    (relative to the ini file)."""
    given = config.getoption("--lab-kernels-dir", default=None)
    if given:
        return [config.invocation_params.dir / d for d in given], "--lab-kernels-dir"
    return list(config.getini("lab_kernels_dir")), "lab_kernels_dir (ini)"


def defined_kernels(file: pytest.File) -> list[str]:
    """Every defined kernel's name; a bad definition, or a name defined twice, is the file's
    collection error."""
    from ..supply.kernels import defs as kerneldefs
    return sorted(load_or_collect_error(file, lambda _path: kerneldefs.load_definitions()))


def kernel_marker(kernel: str) -> str:
    """``debian-6.12`` -> ``debian_6_12`` (a marker name ``-m`` can select)."""
    return "".join(c if c.isalnum() else "_" for c in kernel.split("@")[0])


def register_marker(config: pytest.Config, name: str, doc: str) -> None:
    """Declare a marker once per session (not once per item), so ``--strict-markers`` accepts it."""
    if not any(line.split(":")[0] == name for line in config.getini("markers")):
        config.addinivalue_line("markers", doc)


def kernel_line_marker(config: pytest.Config, kernel: str) -> str:
    """The kernel line's marker name (``-m debian_6_12`` picks one line: marker names must
    be identifiers), registered once per line."""
    line = kernel_marker(kernel)
    register_marker(config, line, f"{line}: lab items on kernel {kernel.split('@')[0]}")
    return line


def chosen_kernels(config: pytest.Config) -> list[str]:
    """The kernels named by ``--lab-kernel`` or the ``lab_kernels`` ini option (none: all)."""
    return list(config.getoption("--lab-kernel") or config.getini("lab_kernels") or [])


def mark_for_kernel(item: pytest.Item, kernel: str) -> pytest.Item:
    """The markers every lab item carries: ``vm``, ``kernel(name)`` and its line's marker."""
    item.add_marker(pytest.mark.vm)
    item.add_marker(pytest.mark.kernel(kernel))
    item.add_marker(getattr(pytest.mark, kernel_line_marker(item.config, kernel)))
    return item


def load_or_collect_error(file: pytest.File, load):
    """``load(path)``, a bad file being a collection error that quotes the loader's message
    (file, line, field) and nothing else."""
    from ..core.errors import ConfigError
    try:
        return load(file.path)
    except ConfigError as exc:
        raise file.CollectError(str(exc)) from None
