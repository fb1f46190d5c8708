"""What /sys/kernel/livepatch must hold as patches come and go, by the kernel's rules.

- A patch whose transition completed is listed and enabled. If it carries
  ``replace`` (atomic replace), every patch enabled before it is disabled and
  leaves the list, and their modules can be unloaded; otherwise the patches
  stack and every earlier one stays enabled. Which of the two happened is read
  from the list itself (the ``replace`` attribute only exists since 6.11, and
  where it does it must agree).
- Disabling a patch leaves the others enabled.
- A refused load leaves nothing: no list entry, no module.
- At the end of a run no patch is listed and no module of the run is loaded.

Each step calls in after it changed something; a difference between the model
and the kernel is recorded as a ``lifecycle`` reason (the patch's or the
kernel's behaviour is not what the lifecycle implies), never an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import livepatch
from .record import Reason

Context = Any   # context.Context (which holds a State): context.py imports this module, not the reverse


@dataclass
class State:
    enabled: list[str] = field(default_factory=list)        # listed and enabled, oldest first
    replaced: dict[str, str] = field(default_factory=dict)  # a replaced patch -> the patch that replaced it


def _problem(ctx: Context, message: str) -> None:
    ctx.rec.lifecycle.append(Reason("lifecycle", message))


def _listed(ctx: Context) -> dict[str, dict]:
    return ctx.kernel.patches(ctx.guest, ctx.timeouts.command)


def patched(ctx: Context, name: str) -> None:
    """``name``'s patching transition completed: it replaced or stacked on what was enabled."""
    state, listed = ctx.state, _listed(ctx)
    before = [n for n in state.enabled if n != name]
    gone = [n for n in before if n not in listed]
    replace = bool(before) and len(gone) == len(before)
    if gone and not replace:
        _problem(ctx, f"after {name} was applied, {', '.join(gone)} left /sys/kernel/livepatch but "
                      f"{', '.join(n for n in before if n not in gone)} stayed: neither a replace nor a stack")
    attr = listed.get(name, {}).get("replace")
    if attr is not None and before and bool(attr) != replace:
        _problem(ctx, f"{name} has replace={attr}, but the patches before it "
                      f"{'stayed enabled' if attr else 'were replaced'}")
    if replace or (attr and not before):
        for old in before:
            state.replaced[old] = name
            ctx.rec.replaced[old] = name
        state.enabled = []
    if name not in state.enabled:
        state.enabled.append(name)
    _compare(ctx, f"{name} was applied", listed)


def unpatched(ctx: Context, name: str) -> None:
    """``name`` was disabled and its unpatching completed: the others stay enabled."""
    if name in ctx.state.enabled:
        ctx.state.enabled.remove(name)
    listed = _listed(ctx)
    if listed.get(name, {}).get("enabled"):
        _problem(ctx, f"{name} is still enabled after its unpatching completed")
    listed.pop(name, None)   # its entry leaves once the module is gone (async)
    _compare(ctx, f"{name} was disabled", listed)


def check(ctx: Context, after: str, gone: list[str]) -> None:
    """After ``after``: the patches in ``gone`` are neither listed nor loaded."""
    listed = _listed(ctx)
    for name in gone:
        if name in listed or ctx.kernel.module_loaded(ctx.guest, name, ctx.timeouts.command):
            _problem(ctx, f"after {after}, {name} is still "
                          f"{'in /sys/kernel/livepatch' if name in listed else 'loaded'}")
    _compare(ctx, after, {n: s for n, s in listed.items() if n not in gone})


def _compare(ctx: Context, after: str, listed: dict[str, dict]) -> None:
    want = ctx.state.enabled
    have = sorted(n for n, s in listed.items() if s.get("enabled"))
    if sorted(want) != have:
        _problem(ctx, f"after {after}, /sys/kernel/livepatch has {', '.join(have) or 'no patch'} enabled; "
                      f"the lifecycle implies {', '.join(sorted(want)) or 'none'}")
    ctx.events("livepatch-state", after=after, enabled=have)


def left_behind(ctx: Context, end: livepatch.EndState) -> None:
    """The end of the run (``end``: what the kernel shows once the targets are unloaded): no patch
    listed, no module of the run loaded."""
    reported = {n for n, p in ctx.rec.patches.items()   # the revert check names these already
                if p.revert.module_gone is False or p.revert.rmmod_rc not in (0, None)}
    mods = [n for n in ctx.modules if n not in reported and n in end.modules]
    if end.listed or mods:
        ctx.rec.lifecycle.append(Reason("revert", "left behind at the end of the run: " + "; ".join(
            part for part in (f"/sys/kernel/livepatch lists {', '.join(end.listed)}" if end.listed else "",
                              f"modules still loaded: {', '.join(mods)}" if mods else "") if part)))
