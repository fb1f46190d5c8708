"""One source diff built into a livepatch module by kpatch-build, over the kept original build.

For each diff and kernel: refuse what cannot be built before anything is fetched; check
that the diff applies to the kernel's exact source (``patch --dry-run``; a hunk that does
not apply is the diff's ``compat`` failure on that kernel, naming the file and hunk); then
run kpatch-build in the build root with the kept tree under an overlay, so that its
patched build and relink land in a scratch layer and the kept tree stays the original
(two diffs can build at once; a killed build leaves nothing in it). kpatch-build's own
original pass finds nothing to do: the tree was built with its flags.

Whose fault a failure is follows kpatch-build's phases: up to its original build it is
the lab's (the tree, the tools); from "Building patched source" on it is the diff's (it
does not compile, or create-diff-object refuses it: a changed data structure, an
initialised static, a changed section it cannot include), and so is its refusal of what
it does not support (lib/, assembly). The builder's own words are quoted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ...core import cacheentry, progress
from ...core.errors import PATCH, HarnessError, HostCommandError, InfraError
from ...core.settings import Settings
from .. import buildroot, modinfo
from ..kernels.kernel import Kernel
from ..toolchains import Toolchain
from . import kpatchtool, tree as srctree
from .diff import Diff

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
RUN_INSIDE = "/build/run"
OUTPUT = "kpatch-build.out"      # kpatch-build's stdout and stderr, in the run directory
# kpatch-build's progress lines, in order; from PATCH_PHASE on, a failure is the diff's
PHASES = ("Using source directory", "Testing patch file(s)", "Reading special section data",
          "Building original source", "Building patched source", "Extracting new and modified ELF sections",
          "Patched objects:", "Building patch module:", "SUCCESS")
PATCH_PHASE = PHASES.index("Building patched source")
MODULE_PHASE = PHASES.index("Building patch module:")
_DIFF_REFUSALS = ("Unsupported changes detected", "unsupported patch to")
# what kpatch-build says when, linking the patch module, the diff itself is the cause
_MODULE_REFUSALS = ("Undefined symbols", "altered exported kernel symbols")
_HUNK_FAILED = re.compile(r"^Hunk #(\d+) FAILED at (\d+)", re.M)
_FILE = re.compile(r"^(?:checking|patching) file '?([^'\n]+)'?$", re.M)


class DiffDoesNotApply(HarnessError):
    """The diff does not apply to this kernel's source: the diff's ``compat`` failure."""
    fault = PATCH

    def __init__(self, message: str, output: str):
        self.output = output
        super().__init__(message)


class BuildRefused(HarnessError):
    """kpatch-build did not make a module of the diff, by the diff's doing (``build``)."""
    fault = PATCH

    def __init__(self, message: str, log_text: str, log_path: Optional[Path]):
        self.log_text, self.log_path = log_text, log_path
        super().__init__(message)


@dataclass(frozen=True)
class Built:
    module: modinfo.Module
    log: Path                 # kpatch-build's output and its build.log
    diff_sha256: str
    source: str               # the source package and version the module was built from
    seconds: float
    cached: bool


def cache_key(d: Diff, kernel: Kernel, targets: Sequence[str]) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{d.sha256}\0{kernel.name}\0{kernel.version}\0{kernel.release}\0"
                       f"{','.join(targets)}".encode())
    return h.hexdigest()[:16]


def modules_dir(settings: Settings, kernel: Kernel) -> Path:
    return settings.built_modules_dir / "diffs" / f"{kernel.name}-{kernel.release}"


def _from_manifest(directory: Path) -> Optional[Built]:
    try:
        m = json.loads((directory / MANIFEST).read_text())
        ko = directory / m["ko"]
    except (OSError, ValueError, KeyError):
        return None
    if m.get("format") != FORMAT or not ko.is_file():
        return None
    return Built(modinfo.inspect(ko), directory / m["log"], m["diff_sha256"], m["kernel_source"], m["seconds"], True)


def build(d: Diff, kernel: Kernel, settings: Settings, *, targets: Sequence[str] = ()) -> Built:
    """The livepatch module kpatch-build makes of ``d`` for ``kernel`` (cached per diff and
    kernel version). ``targets``: modules the diff changes (``fs/foo/bar.ko``), built too."""
    srctree.check_input(kernel)
    final = modules_dir(settings, kernel) / cache_key(d, kernel, targets)
    hit = _from_manifest(final)
    if hit is not None:
        return hit

    def make() -> Built:
        return _build(d, kernel, settings, tuple(targets), final)

    return cacheentry.obtain(lambda: _from_manifest(final), make,
                             lock=settings.locks_dir / f"diff-{final.name}.lock", timeout=settings.timeouts.lock,
                             what=f"building {d.path.name} for {kernel.name}")


def _build(d: Diff, kernel: Kernel, settings: Settings, targets: tuple[str, ...], final: Path) -> Built:
    tc = srctree.toolchain(kernel)
    tree = srctree.prepared(kernel, settings)
    addon = kpatchtool.addon(settings, tc.cc)
    buildroot.ensure_buildroot(tc, kernel, settings, addon)
    check_applies(d, kernel, tree, settings, tc, addon)
    tree = srctree.built(kernel, settings, addon)
    root = buildroot.entry_dir(tc, settings, addon) / "root"
    with cacheentry.staging(final.parent, f".{final.name}-", f"building {d.path.name} for {kernel.name}") as work:
        run = work / "run"
        for sub in ("upper", "work", "cache", "out"):
            (run / sub).mkdir(parents=True)
        name = _module_stem(d)
        shutil.copyfile(d.path, run / f"{name}.patch")
        cmd = ["env", f"CACHEDIR={RUN_INSIDE}/cache", kpatchtool.KPATCH_BUILD, "-s", srctree.INSIDE,
               "-v", srctree.VMLINUX_INSIDE, "-j", str(max(1, settings.cpu_capacity)), "-o", f"{RUN_INSIDE}/out",
               "-t", "vmlinux", *[a for t in targets for a in ("-t", t)], f"{RUN_INSIDE}/{name}.patch"]
        # its progress lines into a file, read while it runs (the progress line's phase)
        argv = ["sh", "-c", f"{shlex.join(cmd)} > {RUN_INSIDE}/{OUTPUT} 2>&1"]
        setup = srctree.mounts(tree, root, upper=run / "upper", work=run / "work") + _run_mount(run, root)
        start = time.monotonic()
        failed: Optional[HostCommandError] = None
        with progress.ticking(f"kpatch-build {d.path.name} for {kernel.name}",
                              done=lambda: _phase(_read(run / OUTPUT)),
                              usually="~3-5 min over a kept original build on 2 cores"):
            try:
                buildroot.run_in(tc, [], argv, what=f"kpatch-build {d.path.name} for {kernel.name}",
                                 settings=settings, addon=addon, setup=setup, timeout=settings.timeouts.livepatch_build)
            except HostCommandError as exc:
                failed = exc
        output = _read(run / OUTPUT)
        seconds = time.monotonic() - start
        out = work / "keep"
        out.mkdir()
        log_text = f"$ kpatch-build ...\n{output}\n\n--- build.log ---\n{_read(run / 'cache' / 'build.log')}"
        (out / "kpatch-build.log").write_text(log_text)
        if failed is not None:   # the log outlives the attempt, for the run's artifacts
            kept = final.parent / f"{final.name}.failed.log"
            kept.write_text(log_text)
            _raise_for(failed, output, log_text, kept, d, kernel)
        kos = sorted((run / "out").glob("*.ko"))
        if len(kos) != 1:
            raise InfraError(f"kpatch-build reported success for {d.path.name} but left {len(kos)} modules")
        shutil.copyfile(kos[0], out / kos[0].name)
        # "ko" and "source" as a kbuild manifest has them: the sign-off report reads both kinds
        man = {"format": FORMAT, "ko": kos[0].name, "log": "kpatch-build.log", "source": str(d.path),
               "diff_sha256": d.sha256, "kernel_source": tree.source_package, "builder": "kpatch-build",
               "builder_version": addon.name, "kernel": kernel.name,
               "kernel_version": kernel.version, "release": kernel.release, "targets": list(targets),
               "seconds": round(seconds, 1), "original_build": tree.built,
               "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / MANIFEST).write_text(json.dumps(man, indent=2) + "\n")
        cacheentry.publish(out, final)
    log.info("kpatch-build made %s for %s in %.0f s", man["ko"], kernel.name, seconds)
    made = _from_manifest(final)
    if made is None:
        raise InfraError(f"{final}: the module kpatch-build made is not where it was put")
    return dataclasses.replace(made, cached=False)


def _module_stem(d: Diff) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", d.path.stem)[:40].strip("_") or "fix"
    return stem


def _run_mount(run: Path, root: Path) -> list[str]:
    q = shlex.quote
    inside = q(str(root) + RUN_INSIDE)
    return [f"mkdir -p {inside}", f"mount --bind {q(str(run))} {inside}"]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _phase(text: str) -> str:
    return last_phase(text) or "starting"


def last_phase(output: str) -> Optional[str]:
    """The last of kpatch-build's progress lines ``output`` reached."""
    found = None
    for line in output.splitlines():
        for p in PHASES:
            if line.startswith(p):
                found = p
    return found


def diff_at_fault(output: str) -> bool:
    """Whether kpatch-build's failure is the diff's: it refused what it does not support,
    or it failed from its patched build on."""
    if any(r in output for r in _DIFF_REFUSALS):
        return True
    phase = last_phase(output)
    if phase is None or PHASES.index(phase) < PATCH_PHASE:
        return False
    if PHASES.index(phase) >= MODULE_PHASE:    # linking the module: the tools', unless it says why
        return any(r in output for r in _MODULE_REFUSALS)
    return True


def builder_words(output: str, lines: int = 12) -> str:
    """What the builder said about the failure: its ERROR lines and compiler errors, else the tail."""
    said = [ln.strip() for ln in output.splitlines()
            if re.search(r"\bERROR\b|error:|changed|not supported|unsupported|Undefined symbols", ln)]
    if not said:
        said = output.strip().splitlines()[-lines:]
    return "\n".join(list(dict.fromkeys(said))[:lines])


def _raise_for(exc: HostCommandError, output: str, log_text: str, log_path: Path, d: Diff,
               kernel: Kernel) -> None:
    if exc.rc is None or not diff_at_fault(output):
        raise InfraError(f"kpatch-build failed on {d.path.name} for {kernel.name} before the diff was built "
                         f"(the lab's or the host's fault; phase: {last_phase(output) or 'start'}):\n"
                         f"{builder_words(log_text)}") from None
    raise BuildRefused(f"kpatch-build refused {d.path.name} for {kernel.name} ({kernel.release}) at "
                       f"\"{last_phase(output)}\":\n{builder_words(output)}", log_text, log_path)


def check_applies(d: Diff, kernel: Kernel, tree: srctree.Tree, settings: Settings, tc: Toolchain,
                  addon: buildroot.AddOn) -> None:
    """``DiffDoesNotApply`` naming the file and hunk when ``d`` does not apply to the kernel's
    exact source (checked with ``patch --dry-run`` in the build root, the tree read-only)."""
    root = buildroot.entry_dir(tc, settings, addon) / "root"
    with tempfile.TemporaryDirectory(prefix="lab-diff-") as tmp:
        shutil.copyfile(d.path, Path(tmp) / "fix.patch")
        setup = srctree.mounts(tree, root, writable=False) + _run_mount(Path(tmp), root)
        argv = ["patch", "-p1", "-N", "--dry-run", "-d", srctree.INSIDE, "-i", f"{RUN_INSIDE}/fix.patch"]
        try:
            buildroot.run_in(tc, [], argv, what=f"patch --dry-run {d.path.name}", settings=settings, addon=addon,
                             setup=setup)
        except HostCommandError as exc:
            if exc.output is None or ("FAILED" not in exc.output and "can't find file" not in exc.output
                                      and "No file to patch" not in exc.output
                                      and "Reversed (or previously applied)" not in exc.output):
                raise
            raise DiffDoesNotApply(explain_rejects(exc.output, d, kernel, tree.source_package), exc.output) from None


def explain_rejects(output: str, d: Diff, kernel: Kernel, source: str) -> str:
    """``patch``'s complaints as: file, hunk (its @@ line), where it was tried."""
    out = [f"{d.path.name} does not apply to {kernel.name}'s source ({source}):"]
    current = None
    for line in output.splitlines():
        m = _FILE.match(line)
        if m:
            current = m.group(1)
            continue
        h = _HUNK_FAILED.match(line)
        if h and current:
            hunk = d.hunk(current, int(h.group(1)))
            out.append(f"  {current}: hunk #{h.group(1)} ({hunk.header if hunk else '?'}, diff line "
                       f"{hunk.line if hunk else '?'}) fails at line {h.group(2)}")
        elif "can't find file" in line or "No file to patch" in line:
            out.append(f"  {current or '?'}: no such file in this kernel's source")
        elif "Reversed (or previously applied)" in line:
            out.append(f"  {current or '?'}: already applied (this kernel has the fix)")
    return "\n".join(out)
