"""The lab's fixtures, for a user's own tests: its settings, the kernels' names, a fetched kernel,
the default image and a booted guest (docs/plugin.md). Kept light: heavy modules
(paramiko, kernels, images) are imported inside the fixtures that need them.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

import pytest

from .activation import activate
from .settings import settings_for

# a test that uses one makes its session a lab session (plugin/activation.py)
FIXTURES = frozenset({"lab_settings", "lab_kernel_names", "lab_kernel", "lab_image", "lab_boot"})


@pytest.fixture(scope="session")
def lab_settings(pytestconfig: pytest.Config):
    """The lab's ``Settings`` from options > ini > environment > defaults."""
    activate(pytestconfig)
    return settings_for(pytestconfig)


@pytest.fixture(scope="session")
def lab_kernel_names(pytestconfig: pytest.Config) -> list[str]:
    """The kernels named by ``--lab-kernel`` (ini ``lab_kernels``), else every defined one."""
    from ..supply.kernels import defs as kerneldefs
    activate(pytestconfig)
    names = pytestconfig.getoption("--lab-kernel") or pytestconfig.getini("lab_kernels")
    return list(names) or sorted(kerneldefs.load_definitions())


@pytest.fixture(scope="session")
def lab_image(lab_settings):
    """The default guest image, built once (file-locked across xdist workers)."""
    from ..supply import images, recipes
    return images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), lab_settings)


@pytest.fixture(scope="session")
def lab_kernel(lab_settings) -> Callable:
    """``lab_kernel("debian-6.1")`` -> a fetched ``Kernel`` (cached, file-locked)."""
    from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
    seen: dict = {}

    def get(spec: str):
        if spec not in seen:
            seen[spec] = kernelfetch.fetch(kerneldefs.get_definition(spec), lab_settings)
        return seen[spec]
    return get


@pytest.fixture
def lab_boot(lab_settings, lab_image, lab_kernel) -> Callable[..., ContextManager]:
    """``with lab_boot("debian-6.1") as guest:`` — a booted guest, always torn down."""
    from ..machine import session

    @contextlib.contextmanager
    def boot(spec: str, **kwargs) -> Iterator:
        with session.boot(lab_kernel(spec), lab_image, lab_settings, **kwargs) as guest:
            yield guest
    return boot
