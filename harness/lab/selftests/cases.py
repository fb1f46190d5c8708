"""The selftest scripts' shapes: their cases, and what a script's output says of each.

Pure functions over text, so they are tested against real scripts' output. What the
scripts do (``functions.sh``): ``start_test DESC`` prints ``TEST: DESC ... `` and logs
``===== TEST: DESC =====`` to the kernel log; ``check_result`` compares the kernel log
since then with the lines the case expects and prints ``ok``, or ``not ok`` and the
diff, and then the script dies: a script stops at its first failure. ``skip`` prints
``SKIP: why`` and exits 4 (kselftest's skip). A case the script only runs when the
kernel has a feature sits inside an ``if`` (test-sysfs.sh on newer lines).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ...machine import kmsg

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"
OUTCOMES = (PASS, FAIL, SKIP, ERROR)
KSFT_SKIP = 4
TIMED_OUT = 124        # coreutils timeout's status: the lab's deadline ended the script

_START = re.compile(r'^(?P<indent>\s*)start_test\s+(?P<q>["\'])(?P<desc>.*?)(?P=q)\s*$')
_IF = re.compile(r"^(?P<indent>\s*)if\s+(?P<cond>.*?)\s*;\s*then\s*$")
_TEST_LINE = re.compile(r"^TEST: (?P<desc>.*?) \.\.\. ?", re.M)
_MARKER = re.compile(r"===== TEST: (?P<desc>.*) =====\s*$")
_STAMP = re.compile(r"^\[\s*(?P<t>\d+\.\d+)\]")
SCRIPT_BEGIN = "livepatch-lab: selftests: begin "   # what the lab writes to the kernel log
SCRIPT_END = "livepatch-lab: selftests: end "


@dataclass(frozen=True)
class Case:
    script: str                        # test-callbacks.sh
    description: str                   # as the script names it: "module_coming notifier"
    name: str                          # test-callbacks-module_coming_notifier
    condition: Optional[str] = None    # the script runs it only `if` this holds


@dataclass
class CaseResult:
    case: Case
    outcome: str
    reason: str = ""          # one line: why it failed, was skipped, or could not be judged
    output: str = ""          # the script's own words about it (the expected/actual diff)
    seconds: Optional[float] = None    # from its kernel-log marker to the next one (guest clock)
    findings: tuple[str, ...] = ()     # trouble the kernel logged while it ran

    def as_dict(self) -> dict:
        return {"name": self.case.name, "script": self.case.script, "description": self.case.description,
                "outcome": self.outcome, "reason": self.reason, "output": self.output,
                "seconds": None if self.seconds is None else round(self.seconds, 2),
                "findings": list(self.findings)}


def slug(text: str) -> str:
    """``module_coming + pre-patch callback -ENODEV`` -> ``module_coming_pre-patch_callback_-ENODEV``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "case"


def script_order(selftests_dir: Path) -> list[str]:
    """The scripts in the order the Makefile's TEST_PROGS lists them (how kselftest runs
    them), then any other ``test-*.sh``."""
    listed: list[str] = []
    try:
        text = (selftests_dir / "Makefile").read_text()
    except OSError:
        text = ""
    m = re.search(r"^TEST_PROGS\s*:?=(?P<body>(?:.*\\\n)*.*)$", text, re.M)
    if m:
        listed = [w for w in m.group("body").replace("\\\n", " ").split() if w.endswith(".sh")]
    present = sorted(p.name for p in selftests_dir.glob("test-*.sh"))
    return [s for s in listed if s in present] + [s for s in present if s not in listed]


def cases_of(script: str, text: str) -> list[Case]:
    """The cases a script's text starts, in order; a description used twice is numbered."""
    stem = script[:-3] if script.endswith(".sh") else script
    out: list[Case] = []
    seen: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _START.match(line)
        if not m:
            continue
        desc = m.group("desc")
        seen[desc] = seen.get(desc, 0) + 1
        name = f"{stem}-{slug(desc)}" + (f"-{seen[desc]}" if seen[desc] > 1 else "")
        out.append(Case(script, desc, name, _condition(lines, i, len(m.group("indent")))))
    return out


def _condition(lines: Sequence[str], at: int, indent: int) -> Optional[str]:
    """The ``if`` an indented line sits in (the nearest less indented ``if ...; then`` above)."""
    if indent == 0:
        return None
    for line in reversed(lines[:at]):
        m = _IF.match(line)
        if m and len(m.group("indent")) < indent:
            return m.group("cond")
    return None


def list_cases(selftests_dir: Path, scripts: Optional[Sequence[Path]] = None) -> list[Case]:
    """Every case of the directory's scripts (or of ``scripts``), in run order."""
    paths = list(scripts) if scripts is not None else [selftests_dir / s for s in script_order(selftests_dir)]
    return [c for p in paths for c in cases_of(p.name, p.read_text(errors="replace"))]


# --- one script's output --------------------------------------------------------------
def judge_script(script: str, cases: Sequence[Case], output: str, rc: Optional[int], *,
                 deadline: Optional[float] = None, lost: Optional[str] = None) -> list[CaseResult]:
    """Each case of one script from its output (stdout and stderr as one stream) and exit status.

    ``rc`` None: the script's end was not seen (``lost`` says why: the guest died or stopped
    answering). ``TIMED_OUT``: the lab's deadline (``deadline`` seconds) ended it.
    """
    marks = list(_TEST_LINE.finditer(output))
    runs: list[tuple[str, str]] = []      # (description, its part of the output), as they ran
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(output)
        runs.append((m.group("desc"), output[m.end():end]))
    stem = script[:-3] if script.endswith(".sh") else script
    known = {c.description for c in cases}
    todo = [*cases, *(Case(script, d, f"{stem}-{slug(d)}") for d, _ in runs if d not in known)]
    parts = _in_order(todo, [d for d, _ in runs])
    results: list[CaseResult] = []
    failed: Optional[str] = None
    last = len(runs) - 1
    for case, run in zip(todo, parts):
        if run is not None:
            res = _judge_started(case, runs[run][1], rc, deadline, lost, last=run == last)
            if res.outcome == FAIL and failed is None:
                failed = case.description
        else:
            res = _not_started(case, output, rc, failed, deadline, lost)
        results.append(res)
    return results


def _in_order(cases: Sequence[Case], ran: Sequence[Optional[str]]) -> list[Optional[int]]:
    """Per case, the index of the run (a description as it appeared, in order) that was it:
    a description that comes twice in a script is its first case, then its second."""
    used: set[int] = set()
    out: list[Optional[int]] = []
    for case in cases:
        i = next((i for i, d in enumerate(ran) if d == case.description and i not in used), None)
        if i is not None:
            used.add(i)
        out.append(i)
    return out


def _judge_started(case: Case, part: str, rc: Optional[int], deadline: Optional[float],
                   lost: Optional[str], last: bool) -> CaseResult:
    first, _, rest = part.partition("\n")
    text = part.strip("\n")
    if first.strip() == "ok":
        return CaseResult(case, PASS)
    if first.startswith("not ok"):
        return CaseResult(case, FAIL, "the kernel log differs from what the case expects", rest.strip("\n"))
    skipped = re.search(r"^SKIP: (.*)$", part, re.M)
    if skipped and (rc == KSFT_SKIP or not last):
        return CaseResult(case, SKIP, skipped.group(1).strip(), text)
    if last and rc is None:
        return CaseResult(case, ERROR, f"the script's end was not seen: {lost or 'unknown'}", text)
    if last and rc == TIMED_OUT:
        return CaseResult(case, ERROR, f"the script did not finish within the lab's deadline "
                                       f"({deadline or 0:.0f} s)", text)
    err = re.search(r"^(?:ERROR: |FAIL)(.*)$", part, re.M)
    why = err.group(0).strip() if err else f"the script ended (exit {rc}) before the case's verdict"
    return CaseResult(case, FAIL, why, text)


def _not_started(case: Case, output: str, rc: Optional[int], failed: Optional[str],
                 deadline: Optional[float], lost: Optional[str]) -> CaseResult:
    tail = "\n".join(output.strip("\n").splitlines()[-15:])
    if rc == KSFT_SKIP:
        m = re.search(r"^(?:SKIP: |skip all tests: )(.*)$", output, re.M)
        return CaseResult(case, SKIP, m.group(1).strip() if m else "the script skipped (exit 4)", tail)
    if rc is None:
        return CaseResult(case, ERROR, f"not reached: the script's end was not seen ({lost or 'unknown'})")
    if rc == TIMED_OUT:
        return CaseResult(case, ERROR, f"not reached: the lab's deadline ({deadline or 0:.0f} s) "
                                       f"ended {case.script}", tail)
    if failed is not None:
        return CaseResult(case, SKIP, f"not reached: {case.script} stops at its first failure "
                                      f"({failed!r})")
    if rc == 0 and case.condition:
        return CaseResult(case, SKIP, f"not run on this kernel: {case.script} runs it only "
                                      f"if {case.condition}")
    return CaseResult(case, ERROR, f"not run: {case.script} ended (exit {rc}) without starting it", tail)


# --- the kernel log ---------------------------------------------------------------------
def script_log(dmesg: Sequence[str], script: str) -> list[str]:
    """The kernel log lines after the lab's begin marker of ``script``, up to and with its
    end marker (whose time ends the last case)."""
    out: list[str] = []
    inside = False
    for line in dmesg:
        if SCRIPT_BEGIN + script in line:
            inside, out = True, []
            continue
        if inside and SCRIPT_END + script in line:
            out.append(line)
            break
        if inside:
            out.append(line)
    return out


def attribute(results: Sequence[CaseResult], log: Sequence[str]) -> None:
    """Per case, from its part of the script's kernel log: its guest-clock duration, and any
    trouble the kernel logged (an oops, a WARNING, a hung task...). A passing case with
    trouble fails: the scripts compare only livepatch lines, the lab reads all of them."""
    chunks: list[tuple[Optional[str], list[str]]] = [(None, [])]
    for line in log:
        m = _MARKER.search(kmsg.strip_prefix(line))
        if m:
            chunks.append((m.group("desc"), [line]))
        else:
            chunks[-1][1].append(line)
    ran = [d for d, _ in chunks[1:]]
    owner = {run: res for res, run in zip(results, _in_order([r.case for r in results], ran)) if run is not None}
    parts = [(None, chunks[0][1])] + [(owner.get(i), lines) for i, (_, lines) in enumerate(chunks[1:])]
    for i, (res, lines) in enumerate(parts):
        if res is None:
            continue
        nxt = parts[i + 1][1][0] if i + 1 < len(parts) else (lines[-1] if lines else "")
        t0, t1 = _stamp(lines[0]), _stamp(nxt)
        if t0 is not None and t1 is not None:
            res.seconds = max(0.0, t1 - t0)
        found = [f"{f.kind}: {f.line}" for f in kmsg.scan(lines)]
        res.findings = tuple(found)
        if found and res.outcome == PASS:
            res.outcome, res.reason = FAIL, f"the kernel logged trouble while it ran: {found[0]}"


def _stamp(line: str) -> Optional[float]:
    m = _STAMP.match(line)
    return float(m.group("t")) if m else None
