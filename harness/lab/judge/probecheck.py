"""The probe's samples against what each phase must show; a revert must bring the unpatched
output back. Pure, like the verdict it serves (verdict.decide)."""
from __future__ import annotations

import re
from typing import Optional

from ..run.record import Reason, RunRecord
from ..run.workload.probe import ProbeSample
from ..scenario.expect import Expect


def _samples(rec: RunRecord, phase: str) -> Optional[list[ProbeSample]]:
    """The probe runs wholly inside the window judged as ``phase``; None without such a window."""
    w = next((w for w in rec.windows.values() if w.probe_phase == phase), None)
    if w is None:
        return None
    return [s for s in rec.probe if w.start <= s.t and (getattr(s, "t_end", None) or s.t) < w.end]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _lost_fix(rec: RunRecord, phase: str, output: str) -> str:
    """Why a sample may not match after an upgrade: lines that are the unpatched kernel's output
    again, though the patch before showed otherwise (an atomic replace reverted a function the
    new patch no longer carries)."""
    if rec.probe_unpatched is None or not rec.replaced:
        return ""
    w = next(w for w in rec.windows.values() if w.probe_phase == phase)
    # the samples of each earlier window judged with a phase, those that have any
    earlier = [found for x in rec.windows.values() if x.probe_phase and x.end <= w.start
               for found in [_samples(rec, x.probe_phase)] if found]
    if not earlier:
        return ""
    before = set(_lines(earlier[-1][-1].output))
    unpatched = set(_lines(rec.probe_unpatched))
    lost = [line for line in _lines(output) if line in unpatched and line not in before]
    if not lost:
        return ""
    return (f"; a fix was lost in the upgrade: {lost[0].strip()[:80]!r} is the unpatched kernel's output "
            f"again (an atomic replace reverts what the new patch does not carry)")


def check_probe(expect: Expect, rec: RunRecord) -> list[Reason]:
    reasons = []
    wanted: dict[str, Optional[str]] = {**expect.probe, **{phase: None for phase in expect.probe_same}}
    for phase, rx in wanted.items():
        samples = _samples(rec, phase)
        if samples is None:
            # the run ended before this phase (a failed load, a lost guest), or a conditional
            # hold did not happen: others say why, if anything is wrong
            if phase == "before":
                reasons.append(Reason("probe", f"no probe sample in the {phase} phase"))
            continue
        if not samples:
            reasons.append(Reason("probe", f"no probe sample in the {phase} phase"))
            continue
        if rx is None:   # must show what another phase showed
            ref = _samples(rec, expect.probe_same[phase])
            if not ref:
                continue
            bad = [s for s in samples if s.output != ref[-1].output or s.rc != ref[-1].rc]
            if bad:
                reasons.append(Reason("probe", f"{phase}: {len(bad)} of {len(samples)} samples differ from "
                                               f"the {expect.probe_same[phase]} phase: {bad[0].output.strip()[:120]!r}"
                                               f" vs {ref[-1].output.strip()[:120]!r}"))
            continue
        bad = [s for s in samples if s.rc != 0 or not re.search(rx, s.output)]
        if bad:
            out = bad[0].output.strip().splitlines()[:2]
            reasons.append(Reason("probe", f"{phase}: {len(bad)} of {len(samples)} samples do not match "
                                           f"/{rx}/ (e.g. rc {bad[0].rc}: {' | '.join(out) or '(empty)'})"
                                           + _lost_fix(rec, phase, bad[0].output)))
    # Reverted means the unpatched behaviour is back, even when no 'after' pattern was given:
    # what the probe showed before any patch (or, if unknown, in the baseline).
    if "after" not in expect.probe and rec.main.revert.module_gone:
        before, after = _samples(rec, "before"), _samples(rec, "after")
        want = rec.probe_unpatched if rec.probe_unpatched is not None else before[-1].output if before else None
        if want is not None and after:
            differ = [s for s in after if s.output != want or s.rc != 0]
            if differ:
                reasons.append(Reason("revert", f"probe output after revert differs from before the "
                                                f"patch: {differ[0].output.strip()[:120]!r} vs "
                                                f"{want.strip()[:120]!r}"))
    return reasons
