"""The kernel's own memory debugging, switched on where the target kernel can do it cheaply.

A distribution kernel keeps quiet about a patch that writes past a slab object
or reads memory it freed: the damage shows days later. Debian builds every
line with the detectors and leaves them off; the kernel command line turns
them on without a rebuild:

- ``slub``: ``slub_debug=FZP`` (CONFIG_SLUB_DEBUG): red zones around every slab
  object, poison in free ones, sanity checks on every free. An overflow or a
  write after free is reported (``BUG <cache> (...): Right Redzone
  overwritten``) at the object's next free or allocation.
- ``kfence``: ``kfence.sample_interval`` (CONFIG_KFENCE; built on 6.12 and 7
  with a default interval of 0, i.e. off): every few milliseconds one
  allocation lands on a guarded page, and an out-of-bounds access or a read of
  freed memory faults on the spot (``BUG: KFENCE: use-after-free read in f``).
- ``poison``: ``page_poison=1`` (CONFIG_PAGE_POISONING): freed pages are filled
  and checked when they are handed out again (``pagealloc: memory corruption``).

A facility the kernel was not built with is reported as absent (in the JSON and
the report), never silently dropped. ``DEBUG_PAGEALLOC`` is built by no Debian
line, so it is not offered. The cost per line is measured by ``bench/memdebug.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ...supply.kernels import tree as kerneltree
from ..scenario.specs import DEBUG_FACILITIES, DebugSpec

# KFENCE's sample interval in ms: short, so a hot path's allocation is sampled within a run of a
# few seconds (the kernel's default, when it is on, is 100 ms); its cost is a guarded page fault
# per sample, ~200 a second at this interval.
KFENCE_INTERVAL_MS = 5


@dataclass(frozen=True)
class Facility:
    config: str      # the kernel option that builds it
    append: str      # the kernel command line that turns it on
    blind: tuple[tuple[str, str], ...] = ()   # (option, why): built so, it finds nothing


FACILITIES: dict[str, Facility] = {
    "slub": Facility("CONFIG_SLUB_DEBUG", "slub_debug=FZP"),
    "kfence": Facility("CONFIG_KFENCE", f"kfence.sample_interval={KFENCE_INTERVAL_MS}"),
    # Debian's 5.10 fills freed pages but never checks them (seen: a write into a freed page went
    # unreported there, and was reported on 6.1, 6.12 and 7)
    "poison": Facility("CONFIG_PAGE_POISONING", "page_poison=1",
                       (("CONFIG_PAGE_POISONING_NO_SANITY", "freed pages are filled but never checked"),)),
}
assert tuple(FACILITIES) == DEBUG_FACILITIES


@dataclass(frozen=True)
class DebugPlan:
    """What a guest boots with: the facilities asked for, those on, those the kernel lacks."""
    requested: tuple[str, ...]
    active: tuple[str, ...]
    absent: dict[str, str] = field(default_factory=dict)   # facility -> why
    unverified: bool = False     # no kernel config to tell: asked for, on if the kernel has it

    @property
    def append(self) -> str:
        return " ".join(FACILITIES[f].append for f in self.active)

    def describe(self) -> dict[str, Any]:
        return {"requested": list(self.requested), "active": list(self.active), "absent": dict(self.absent),
                "append": self.append, **({"unverified": True} if self.unverified else {})}


def choose(spec: DebugSpec, config: Optional[dict[str, str]]) -> DebugPlan:
    """The facilities of ``spec`` this kernel (its ``config``; None: unknown) was built with."""
    if config is None:
        return DebugPlan(spec.facilities, spec.facilities, unverified=bool(spec.facilities))
    active, absent = [], {}
    for name in spec.facilities:
        option = FACILITIES[name].config
        blind = [(o, why) for o, why in FACILITIES[name].blind if config.get(o) == "y"]
        if config.get(option) not in ("y", "m"):
            absent[name] = f"this kernel is built without {option}"
        elif blind:
            absent[name] = f"this kernel is built with {blind[0][0]}: {blind[0][1]}"
        else:
            active.append(name)
    return DebugPlan(spec.facilities, tuple(active), absent)


def for_kernel(spec: DebugSpec, kernel) -> DebugPlan:
    """``choose`` for a fetched or local ``supply.kernel.Kernel``."""
    return choose(spec, kerneltree.config_options(kernel.config))
