"""The pytest plugin: options (with ini twins), the ``vm`` marker, lab fixtures.

Kept light: heavy modules (paramiko, kernels, images) are imported inside the
fixtures that need them, so merely having the plugin installed costs nothing.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator, Optional

import pytest

from .settings import ACCELS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("livepatch-lab")
    group.addoption("--lab-cache-dir", help="cache for kernels, images and runs "
                    "(ini lab_cache_dir; env LIVEPATCH_LAB_CACHE)")
    group.addoption("--lab-accel", choices=ACCELS, help="auto (default), kvm or tcg (ini lab_accel)")
    group.addoption("--lab-kernel", action="append", default=[],
                    help="kernel(s) to run VM tests on, NAME or NAME@VERSION; repeatable "
                         "(ini lab_kernels; default: every defined kernel)")
    parser.addini("lab_cache_dir", "cache for kernels, images and runs")
    parser.addini("lab_accel", "auto, kvm or tcg")
    parser.addini("lab_kernels", "kernels to run VM tests on", type="args")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots real QEMU guests (slow)")
    config.addinivalue_line("markers", "network: downloads from Debian's archive on first run")
    import logging
    # SSH attempts to a booting guest fail by design; keep paramiko's tracebacks out of reports.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    from .session import raise_on_sigterm
    raise_on_sigterm()  # so a SIGTERM'd test run still tears its guests down


def _opt(config: pytest.Config, name: str) -> Optional[str]:
    return config.getoption(f"--lab-{name.replace('_', '-')}") or config.getini(f"lab_{name}") or None


@pytest.fixture(scope="session")
def lab_settings(pytestconfig: pytest.Config):
    """The lab's ``Settings`` from options > ini > environment > defaults."""
    from .settings import Settings
    return Settings.from_env(cache_dir=_opt(pytestconfig, "cache_dir"),
                             accel=_opt(pytestconfig, "accel"))


@pytest.fixture(scope="session")
def lab_kernel_names(pytestconfig: pytest.Config) -> list[str]:
    from . import kernels
    names = pytestconfig.getoption("--lab-kernel") or pytestconfig.getini("lab_kernels")
    return list(names) or sorted(kernels.load_definitions())


@pytest.fixture(scope="session")
def lab_image(lab_settings):
    """The default guest image, built once (file-locked across xdist workers)."""
    from . import images
    return images.build(images.load_recipe(images.DEFAULT_RECIPE), lab_settings)


@pytest.fixture(scope="session")
def lab_kernel(lab_settings) -> Callable:
    """``lab_kernel("debian-6.1")`` -> a fetched ``Kernel`` (cached, file-locked)."""
    from . import kernels
    seen: dict = {}

    def get(spec: str):
        if spec not in seen:
            seen[spec] = kernels.fetch(kernels.get_definition(spec), lab_settings)
        return seen[spec]
    return get


@pytest.fixture
def lab_boot(lab_settings, lab_image, lab_kernel) -> Callable[..., ContextManager]:
    """``with lab_boot("debian-6.1") as guest:`` — a booted guest, always torn down."""
    from . import session

    @contextlib.contextmanager
    def boot(spec: str, **kwargs) -> Iterator:
        with session.boot(lab_kernel(spec), lab_image, lab_settings, **kwargs) as guest:
            yield guest
    return boot
