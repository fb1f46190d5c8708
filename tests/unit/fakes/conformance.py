"""Type-checked, never run: the unit tests' pretend kernel and guest implement the protocols the
lab's steps use (``livepatch_lab.lab.run.ports``). tests/unit/test_types.py has mypy check this file, so
a fake that drifts from the real interface (a renamed operation, a missing argument) fails the
suite instead of testing something the lab no longer does."""
from __future__ import annotations

from livepatch_lab.lab.run.ports import Guest, Kernel

from .lab_guest import FakeKernel, LabGuest


def as_protocols(kernel: FakeKernel, guest: LabGuest) -> tuple[Kernel, Guest]:
    return kernel, guest
