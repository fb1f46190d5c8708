"""The cost workload's steps (lab/judge/overhead.py judges what they time): the unpatched arm's
first blocks, then load/revert cycles that interleave the arms. They run after the judged
windows, so a failure here failed a repeat of what those judged, and says so."""
from __future__ import annotations

from ...core.errors import LivepatchError
from .context import Context, Step
from .faults import Failed
from .record import Reason
from .workload import cost


def _cost_blocks(ctx: Context, arm: str, blocks: int) -> None:
    """``blocks`` blocks of the cost workload, added to ``arm``'s (stress and probe paused meanwhile)."""
    spec, t = ctx.scenario.overhead, ctx.timeouts
    cmd = spec.command or ctx.scenario.probe.command or ""
    ctx.rec.cost_workload, ctx.rec.cost_repeat = cmd, spec.repeat
    quiet = [n for n, on in (("stress", ctx.scenario.stress.enabled), ("probe", bool(ctx.scenario.probe.command)))
             if on]
    ctx.rec.cost.setdefault(arm, []).extend(
        cost.measure(ctx.guest, cmd, spec.repeat, blocks, t.command + blocks * spec.repeat * t.cost_call, quiet=quiet))


class CostArm(Step):
    """The unpatched arm's first blocks of the cost workload (lab/judge/overhead.py), before the cost
    cycles. Not a judged window."""

    def run(self, ctx: Context) -> bool:
        spec = ctx.scenario.overhead
        if ctx.load is not None:
            # The service's judged windows are over and its requests are the evidence; stopped,
            # its guest-side work (accepting and serving) stays out of the blocks, as stress-ng's
            # and the probe's do (paused). Measured: the busy-wait patches' figures were no nearer
            # the patch's own time with it running or stopped (docs/checks.md: What a patch costs).
            ctx.rec.requests = ctx.load.stop(timeout=ctx.scenario.service.timeout + 2)
        ctx.events("cost", arm="before", blocks=spec.per_cycle)
        _cost_blocks(ctx, "before", spec.per_cycle)
        return False


class CostCycle(Step):
    """One load/revert cycle of the cost workload: load the patch, wait for its transition, time
    the patched blocks, disable, wait, unload, time the unpatched ones. Cycles interleave the arms
    (A B A B ...), so a host that slows down for a while slows both: in one piece each, an arm
    once ran 1.8 times slower than the other with no patch at all. The run's judged windows are
    over by then; a patch that fails here failed a repeat of what they judged, and says so."""

    def __init__(self, name: str, cycle: int):
        self.name, self.cycle = name, cycle

    def run(self, ctx: Context) -> bool:
        g, t, spec = ctx.guest, ctx.timeouts, ctx.scenario.overhead
        def failed(what: str) -> Failed:
            return Failed(Reason("overhead", f"cost cycle {self.cycle}: {what}"))
        try:
            ctx.applier.load(ctx, self.name)
        except LivepatchError as exc:
            raise failed(f"the patch did not load again: {exc}") from None
        ctx.loaded.append(self.name)
        if not ctx.kernel.wait_transition(g, self.name, t.transition)[0]:
            raise failed(f"the patching transition did not complete within {t.transition:.0f} s")
        ctx.events("cost", arm="patched", cycle=self.cycle, blocks=spec.per_cycle)
        _cost_blocks(ctx, "patched", spec.per_cycle)
        if not ctx.applier.disable(ctx, self.name).ok:
            raise failed("the patch did not disable")
        if not ctx.kernel.wait_transition(g, self.name, t.transition)[0]:
            raise failed(f"the unpatching transition did not complete within {t.transition:.0f} s")
        gone = ctx.applier.unload(ctx, self.name)
        if not gone.module_gone:
            raise failed(f"the module did not unload: {gone.err}")
        ctx.loaded.remove(self.name)
        _cost_blocks(ctx, "after", spec.per_cycle)
        if self.cycle == spec.cycles:
            ctx.events("cost-end")
        return False
