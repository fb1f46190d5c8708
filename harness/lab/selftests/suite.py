"""One kernel line's livepatch selftests in one lab guest of that kernel.

fetch (kernel, its linux-source parts) → stage (modules built on the host) → boot →
install → each script under a deadline, the heartbeat watching the guest → the kernel
log → a result per case (``cases.judge_script`` + ``cases.attribute``). The guest is
always torn down (``session.boot``); the artifact folder keeps each script's output,
``dmesg.txt``, ``console.log`` and ``results.json``.

How the scripts run, and why (the kernel's files are never edited):
- as root from their own directory (the newer lines insmod ``test_modules/<name>.ko``);
- ``KDIR`` set for the newer lines' ``has_kdir`` check, which only asks whether modules
  could be built here (they were, on the host);
- under coreutils ``timeout`` with ``Timeouts.selftest_case`` per case of the script, so
  a script stuck in the kernel ends and the next one runs (its trap still cleans up);
- between the lab's own markers in the kernel log (``livepatch-lab: selftests: begin
  <script>``), which never match the scripts' ``livepatch:``/``test_klp`` filters.
"""
from __future__ import annotations

import json
import logging
import shlex
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from ...core.errors import HarnessError
from ...core.settings import Settings
from ...machine import heartbeat, session
from ...supply import images, recipes
from ...supply.kernels import defs as kerneldefs, fetch as kernelfetch, source as kernelsource
from ...supply.kernels.kernel import Kernel
from . import cases as C
from .results import LineResult
from .stage import Staged, plan, stage, tarball

log = logging.getLogger(__name__)

GUEST_DIR = "/tmp/lab-selftests"
OVERLAY = "/run/lab-modules"
KILL_AFTER = 10            # seconds between timeout's TERM (the script's trap cleans up) and KILL
ARTIFACTS = ("results.json", "dmesg.txt", "console.log")


def run_line(kernel_spec: str, settings: Settings, out_dir: Path, *,
             scripts: Optional[Sequence[str]] = None, extra_scripts: Sequence[Path] = ()) -> LineResult:
    """Every selftest case of one kernel line. Never raises for the kernel's, the guest's or
    the host's trouble (it is in the result); an interrupt is re-raised after teardown."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("test-*.log"), *(out_dir / a for a in ARTIFACTS)]:
        old.unlink(missing_ok=True)
    line = LineResult(kernel_spec, [], {"name": kernel_spec}, artifacts=str(out_dir))
    try:
        kernel = kernelfetch.fetch(kerneldefs.get_definition(kernel_spec), settings)
        line.kernel_info = {"name": kernel.name, "version": kernel.version, "release": kernel.release}
        source = kernelsource.fetch(kernel, settings)
        line.source = source.describe()
        if source.note:
            line.notes.append(source.note)
        the_plan = plan(source, scripts, extra_scripts)
        line.cases = [C.CaseResult(c, C.ERROR, "not run") for c in the_plan.cases]
        image = images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), settings)
        with tempfile.TemporaryDirectory(prefix="lab-selftests-") as work:
            staged = stage(source, kernel, settings, the_plan, Path(work))
            line.notes += staged.notes
            _in_guest(kernel, image, staged, settings, out_dir, line)
    except HarnessError as exc:
        line.error = f"{type(exc).__name__}: {exc}"
        for res in line.cases:
            if res.reason == "not run":
                res.reason = f"not run: {str(exc).splitlines()[0]}"
    finally:
        line.seconds = time.monotonic() - started
        (out_dir / "results.json").write_text(json.dumps(line.as_dict(), indent=2, default=str) + "\n")
    return line


def _in_guest(kernel: Kernel, image, staged: Staged, settings: Settings, out_dir: Path,
              line: LineResult) -> None:
    with session.boot(kernel, image, settings, artifacts_dir=out_dir) as guest:
        t = guest.timeouts
        line.notes.append(f"guest: {guest.accel.upper()}, {settings.cpus} vCPU, {settings.memory_mib} MiB; "
                          f"booted in {guest.timings.get('ssh_ready', 0):.1f}s")
        install(guest, kernel, staged, Path(out_dir))
        lost = threading.Event()
        results: list[C.CaseResult] = []
        with heartbeat.Heartbeat(guest.channel, t.heartbeat, on_lost=lambda _why: lost.set()):
            for script in staged.plan.scripts:
                mine = [c for c in staged.plan.cases if c.script == script.name]
                if lost.is_set() or not guest.machine.is_running():
                    why = guest.channel.lost or "the guest's machine ended"
                    results += [C.CaseResult(c, C.ERROR, f"not run: {why}") for c in mine]
                    continue
                results += run_script(guest, script.name, mine, staged, out_dir, line)
        dmesg = _dmesg(guest)
        (out_dir / "dmesg.txt").write_text("\n".join(dmesg) + ("\n" if dmesg else ""))
        for script in staged.plan.scripts:
            C.attribute([r for r in results if r.case.script == script.name], C.script_log(dmesg, script.name))
        line.cases = results


def install(guest, kernel: Kernel, staged: Staged, out_dir: Path) -> None:
    """The scripts (and, for the modprobe layout, the modules over a tmpfs overlay of the
    read-only /lib/modules) into the guest."""
    t = guest.timeouts
    with tempfile.TemporaryDirectory(prefix="lab-selftests-tar-") as tmp:
        tar = tarball(staged.tree, Path(tmp) / "tree.tar.gz")
        guest.run(f"mkdir -p {GUEST_DIR} && tar -xzf - -C {GUEST_DIR}", t.command, check=True,
                  stdin=tar.read_bytes())
    if staged.modules_tar is None:
        return
    mods = shlex.quote(f"/lib/modules/{kernel.release}")
    guest.run(f"modprobe overlay && mkdir -p {OVERLAY}/upper {OVERLAY}/work && "
              f"mount -t overlay lab-modules -o lowerdir=/lib/modules,upperdir={OVERLAY}/upper,"
              f"workdir={OVERLAY}/work /lib/modules && tar -xzf - -C {mods} && "
              f"modprobe --dry-run {shlex.quote(next(iter(staged.modules)))}",
              t.command, check=True, stdin=staged.modules_tar.read_bytes())


def script_command(script: str, deadline: float, kdir: Optional[str]) -> str:
    env = f"KDIR={shlex.quote(kdir)} " if kdir else ""
    q = shlex.quote(script)
    return (f"cd {GUEST_DIR}/livepatch && echo '{C.SCRIPT_BEGIN}'{q} >/dev/kmsg; "
            f"{env}timeout -k {KILL_AFTER} {deadline:.0f} ./{q} 2>&1; rc=$?; "
            f"echo '{C.SCRIPT_END}'{q}\" (exit $rc)\" >/dev/kmsg; exit $rc")


def run_script(guest, script: str, mine: Sequence[C.Case], staged: Staged, out_dir: Path,
               line: LineResult) -> list[C.CaseResult]:
    """Run one script under its deadline; its cases from its output."""
    t = guest.timeouts
    deadline = t.selftest_case * max(1, len(mine))
    kdir = None if staged.modules_tar is not None else f"{GUEST_DIR}/livepatch/test_modules"
    log.info("%s: %s (%d cases, deadline %.0f s)", line.kernel, script, len(mine), deadline)
    rc: Optional[int]
    lost = None
    t0 = time.monotonic()
    try:
        res = guest.run(script_command(script, deadline, kdir), deadline + KILL_AFTER + t.command)
        rc, output = res.rc, res.stdout + res.stderr
        if rc == 128 + 9 and res.seconds >= deadline:
            rc = C.TIMED_OUT        # killed after ignoring timeout's TERM
    except HarnessError as exc:
        rc, output = None, getattr(exc, "evidence", "")
        lost = guest.channel.lost or f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    seconds = time.monotonic() - t0
    line.scripts[script] = {"rc": rc, "seconds": round(seconds, 1)}
    (out_dir / f"{script[:-3] if script.endswith('.sh') else script}.log").write_text(output)
    results = C.judge_script(script, mine, output, rc, deadline=deadline, lost=lost)
    if rc is None:
        _blame_kernel(guest, results)
    counts = {o: sum(1 for r in results if r.outcome == o) for o in C.OUTCOMES}
    log.info("%s: %s: %s in %.0f s", line.kernel, script,
             ", ".join(f"{n} {o}" for o, n in counts.items() if n), seconds)
    return results


def _blame_kernel(guest, results: Sequence[C.CaseResult]) -> None:
    """The guest died or froze inside a case: the kernel's doing when its console says so
    (a panic, an oops...), a fail of that case with the console's words."""
    console = guest.machine.console
    console.wait_for(lambda c: c.fatal() is not None, 1.0)
    if not console.findings:
        return
    for res in results:
        if res.outcome == C.ERROR and not res.reason.startswith("not reached"):
            f = console.findings[0]
            res.outcome = C.FAIL
            res.reason = f"the kernel {f.kind}: {f.line}"
            res.output = (res.output + "\n--- console tail ---\n" + console.tail(20)).lstrip("\n")
            return


def _dmesg(guest) -> list[str]:
    if guest.channel.lost or not guest.machine.is_running():
        return [line.text for line in guest.machine.console.lines]   # the console is all there is
    try:
        return guest.run("dmesg", guest.timeouts.command, check=True).stdout.splitlines()
    except HarnessError as exc:
        log.warning("dmesg: %s", exc)
        return [line.text for line in guest.machine.console.lines]
