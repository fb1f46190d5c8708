"""How a patch gets into the kernel and out again: the lab's insmod, a vendor's tool, a hook.

The steps (steps.py) load, disable and unload a patch through an applier; the
lab judges what the kernel shows whichever it is (its own transition wait,
/sys/kernel/livepatch, dmesg, taint), never the tool's word alone.

- ``Insmod`` (the default): insmod, ``echo 0 > enabled``, rmmod, each done as
  its step runs.
- ``Tool``: a vendor's tool (``kpatch load {module}`` / ``kpatch unload
  {name}``) or a scenario's command hook, run detached in the guest while the
  lab watches the kernel. A tool does more than one step's worth: ``kpatch
  load`` waits for the transition itself (15 s, signals the stragglers, 60 s
  more) and, when it never completes, disables and unloads the patch and
  fails; ``kpatch unload`` is disable + wait + rmmod. So the load step returns
  once the patch is in /sys/kernel/livepatch with its module live, the
  transition step waits on the kernel under the lab's own deadline and then
  hears the tool out (``settle``); the disable step starts the tool's revert
  and returns once the patch reads disabled (or is gone), the unpatch step
  waits on the kernel, the unload step hears the tool out and the lab then
  confirms the module is gone. What a tool said, its exit status and how long
  it took go into the record (``RunRecord.tool_runs``, the patch's
  ``transition.tool`` / ``revert.tool``), onto the timeline and into the
  artifact ``apply.log``; the verdict says where the tool and the kernel
  disagree.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

from ...core.errors import LivepatchError
from ...machine.channel import Result
from ..scenario import hookcmd
from . import livepatch
from ..scenario.specs import ApplySpec
from .record import ToolRun
from .workload import detached
from .workload.detached import q

log = logging.getLogger(__name__)
Context = Any   # context.Context: context.py imports this module, not the reverse

# tool -> (load, revert) command templates
TOOLS = {"kpatch": ("kpatch load {module}", "kpatch unload {name}")}
OUTPUT_LIMIT = 65536    # bytes of a tool's output kept (its tail)
MODULES = "/sys/module"


class Insmod:
    """The lab's own way: insmod, sysfs, rmmod."""
    name = "insmod"

    def load(self, ctx: Context, name: str) -> Result:
        return ctx.kernel.load(ctx.guest, ctx.remote(name), ctx.timeouts.command, report_text_of=name,
                              params=ctx.params.get(name, ()))

    def settle(self, ctx: Context, name: str) -> Optional[ToolRun]:
        return None

    def disable(self, ctx: Context, name: str) -> Result:
        return ctx.kernel.disable(ctx.guest, name, ctx.timeouts.command)

    def unload(self, ctx: Context, name: str) -> livepatch.Removal:
        return ctx.kernel.remove(ctx.guest, name, ctx.timeouts.command)

    def finish(self, ctx: Context) -> None:
        pass


@dataclass
class Call:
    """One call of a tool, running detached in the guest as ``key``."""
    op: str            # load | revert
    patch: str
    command: str
    key: str
    deadline: float    # host monotonic

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True)
class Seen:
    """What a wait on a call saw: ``what`` (listed / disabled / ended / timeout), the guest's
    seconds from the call's start, and the .text address of a listed patch's module."""
    what: str
    seconds: Optional[float]
    text: str = ""


class Tool:
    """A vendor's tool or a command hook: ``load`` and ``revert`` templates (hookcmd.py);
    without ``revert`` the lab disables and unloads the patch itself."""

    def __init__(self, name: str, load: str, revert: Optional[str]):
        self.name, self.load_cmd, self.revert_cmd = name, load, revert
        self.calls: dict[tuple[str, str], Call] = {}    # (op, patch) -> a call not yet heard out

    # the steps' operations ------------------------------------------------------------
    def load(self, ctx: Context, name: str) -> Result:
        """Start the tool; return once the kernel lists the patch with its module live. A tool
        that ends (or runs out of time) before that failed the load: its output says why."""
        call = self._start(ctx, "load", name, self.load_cmd)
        seen = _await(ctx.guest, call, "listed", ctx.timeouts.command)
        if seen.what == "listed":
            return Result(call.command, 0, seen.text, "", seen.seconds or 0.0)
        run = self._hear(ctx, call)
        tail = ctx.guest.run("dmesg | tail -n 6", ctx.timeouts.command).stdout
        if run.rc is None:
            why = (f"neither got {name} into the kernel nor ended within {ctx.timeouts.apply_tool:.0f} s "
                   "(killed)")
        elif run.rc == 0:
            why = f"reported success (rc 0), but the kernel has no patch {name}: the tool and the kernel disagree"
        else:
            why = f"failed (rc {run.rc})"
        raise LivepatchError(f"{self.name} load {ctx.remote(name)} {why}: {run.output.strip()[-2000:]}\n{tail}")

    def settle(self, ctx: Context, name: str) -> Optional[ToolRun]:
        """Hear the load out (the tool may still wait for the transition, or be reverting a
        stalled one); record what it said and what the kernel shows after it. A patch the tool
        removed is recorded as reverted by it, and is no longer the lab's to unload."""
        call = self.calls.get(("load", name))
        if call is None:
            return None
        tool = self._hear(ctx, call)
        st = ctx.kernel.state(ctx.guest, name, ctx.timeouts.command)
        tool.kernel = ("gone" if st["enabled"] is None else "in transition" if st["transition"] else
                          "patched" if st["enabled"] else "disabled")
        prec = ctx.rec.patch(name)
        prec.transition.tool = tool
        if tool.kernel == "gone":
            gone = not ctx.kernel.module_loaded(ctx.guest, name, ctx.timeouts.command)
            prec.revert = replace(prec.revert, disabled=True, by=f"{self.name} load", sysfs_gone=True,
                                  module_gone=gone)
            if gone and name in ctx.loaded:
                ctx.loaded.remove(name)
        return tool

    def disable(self, ctx: Context, name: str) -> Result:
        """Start the tool's revert; return once the patch reads disabled (or is gone)."""
        if self.revert_cmd is None:
            return ctx.kernel.disable(ctx.guest, name, ctx.timeouts.command)
        call = self.calls.get(("revert", name)) or self._start(ctx, "revert", name, self.revert_cmd)
        seen = _await(ctx.guest, call, "disabled", ctx.timeouts.command)
        if seen.what == "disabled":
            return Result(call.command, 0, "", "", seen.seconds or 0.0)
        run = self._hear(ctx, call)
        return Result(call.command, run.rc or 1, "", f"{self.name} revert {why(run)} without disabling the "
                      f"patch: {run.output.strip()[-2000:]}", run.seconds or 0.0)

    def unload(self, ctx: Context, name: str) -> livepatch.Removal:
        """Hear the tool's revert out (started now if no step did: an atomic replace, an unwind),
        then what is gone (the revert check judges it, and the verdict what the tool said)."""
        if self.revert_cmd is None:
            return ctx.kernel.remove(ctx.guest, name, ctx.timeouts.command)
        call = self.calls.get(("revert", name)) or self._start(ctx, "revert", name, self.revert_cmd)
        run = self._hear(ctx, call)
        ctx.rec.patch(name).revert.tool = run
        return ctx.kernel.remove(ctx.guest, name, ctx.timeouts.command, rmmod=False)

    def finish(self, ctx: Context) -> None:
        """Hear out every call still running (after a failed step, and before collecting)."""
        for op, name in list(self.calls):
            if op == "load":
                self.settle(ctx, name)
            else:
                ctx.rec.patch(name).revert.tool = self._hear(ctx, self.calls[(op, name)])

    # calls --------------------------------------------------------------------------------
    def _start(self, ctx: Context, op: str, name: str, template: str) -> Call:
        command = hookcmd.render(template, ctx.remote(name), name)
        key = f"tool-{op}-{name}"
        base = detached.path(key)
        # the guest's clock on both sides of the command: how long the tool took, to the
        # fork; bash, as for every other guest command
        wrapped = (f"rm -f {q(base + '.t1')}; date +%s.%N >{q(base + '.t0')}\nbash -c {q(command)}\n"
                   f"rc=$?\ndate +%s.%N >{q(base + '.t1')}\nexit $rc")
        detached.start(ctx.guest, key, wrapped, stop_first=False)
        call = Call(op, name, command, key, time.monotonic() + ctx.timeouts.apply_tool)
        self.calls[(op, name)] = call
        ctx.events("tool-started", tool=self.name, op=op, patch=name, command=command)
        return call

    def _hear(self, ctx: Context, call: Call) -> ToolRun:
        """Wait for the call to end (killed at its deadline); its record, also kept in the run's."""
        g = ctx.guest
        base = q(detached.path(call.key))
        g.run(f"SECONDS=0; while [ ! -e {base}.rc ] && [ $SECONDS -lt {int(call.left()) + 1} ]; do sleep 0.2; done",
              call.left() + ctx.timeouts.command)
        if detached.ended(g, call.key) is None:
            log.warning("%s %s %s did not end within %.0f s: killed", self.name, call.op, call.patch,
                        ctx.timeouts.apply_tool)
            detached.stop(g, call.key, ctx.timeouts.service_stop)
        out = g.run(f"for f in rc t0 t1; do v=; read -r v <{base}.$f 2>/dev/null; echo \"$v\"; done; "
                    f"tail -c {OUTPUT_LIMIT} {base}.log 2>/dev/null", ctx.timeouts.command).stdout
        rc, t0, t1, output = (out.split("\n", 3) + ["", "", "", ""])[:4]
        run = ToolRun(self.name, call.op, call.patch, call.command,
                      rc=int(rc) if rc.strip().lstrip("-").isdigit() else None,
                      seconds=_seconds(t0, t1), deadline=ctx.timeouts.apply_tool, output=output,
                      said=next((line.strip() for line in reversed(output.splitlines()) if line.strip()), ""))
        self.calls.pop((call.op, call.patch), None)
        ctx.rec.tool_runs.append(run)
        ctx.events("tool-ended", tool=self.name, op=call.op, patch=call.patch, rc=run.rc, seconds=run.seconds)
        return run


def why(run: ToolRun) -> str:
    """How a call ended, in words: ``failed (rc 1)``, ``did not end within 360 s (killed)``."""
    if run.rc is None:
        return f"did not end within {run.deadline:.0f} s (killed)"
    return "succeeded (rc 0)" if run.rc == 0 else f"failed (rc {run.rc})"


def _seconds(t0: str, t1: str) -> Optional[float]:
    try:
        return round(float(t1) - float(t0), 3)
    except ValueError:
        return None


# what a call waits for, in the guest's shell: $p the patch's sysfs entry, $m its module's
_CONDITIONS = {
    "listed": '[ -d "$p" ] && read -r s 2>/dev/null <"$m/initstate" && [ "$s" = live ]',
    "disabled": '[ ! -d "$p" ] || { read -r e 2>/dev/null <"$p/enabled" && [ "$e" = 0 ]; }',
}


def _await(guest, call: Call, until: str, slack: float) -> Seen:
    """Until the kernel shows ``until`` (a module is listed once its init has run: before that
    its transition has not begun), or the call ends, or its deadline passes."""
    base = detached.path(call.key)
    script = (f"p={livepatch.SYSFS}/{q(call.patch)}; m={MODULES}/{q(call.patch)}; d={q(base)}; SECONDS=0\n"
              f"met() {{ {_CONDITIONS[until]}; }}\n"
              "while :; do\n"
              f"  if met; then w={until}\n"
              f"  elif [ -e \"$d.rc\" ]; then if met; then w={until}; else w=ended; fi\n"
              f"  elif [ $SECONDS -ge {int(call.left()) + 1} ]; then w=timeout\n"
              "  else sleep 0.2; continue; fi\n"
              "  t0=; read -r t0 2>/dev/null <\"$d.t0\"; echo \"@$w $EPOCHREALTIME $t0\"\n"
              "  [ $w = listed ] && cat \"$m/sections/.text\" 2>/dev/null\n"
              "  exit 0\n"
              "done")
    out = guest.run(script, call.left() + slack).stdout
    head, _, text = out.partition("\n")
    parts = head.split()
    if not parts or not parts[0].startswith("@"):
        return Seen("timeout", None)
    return Seen(parts[0][1:], _seconds(parts[2], parts[1]) if len(parts) == 3 else None, text)


def applier(spec: ApplySpec) -> Insmod | Tool:
    """The applier a scenario's ``apply`` asks for."""
    if spec.tool == "command":
        assert spec.command
        return Tool("command hook", spec.command, spec.revert)
    if spec.tool in TOOLS:
        return Tool(spec.tool, *TOOLS[spec.tool])
    return Insmod()
