"""Out-of-tree kernel modules: build a kbuild directory against a ``Kernel``.

``build(source, kernel, settings)`` compiles a kbuild directory (``Kbuild`` or
``Makefile`` with ``obj-m``) against the kernel's relocated Debian headers and
returns the resulting ``Module``. It never writes into ``source``: the files
are copied into a work directory in the cache first. Results are cached under
``settings.built_modules_dir/<release>/<key>/`` where the key hashes the source
files, the kernel and the toolchain, so a second build of the same source is a
file read (file-locked between pytest-xdist workers, renamed into place).

The toolchain (``toolchains``: the host's compiler or a ``buildroot``) is
recorded in the module cache's ``manifest.json`` and in ``Module.toolchain``,
with the .ko's sha256: a cached module is hashed on every use (it is small),
and one changed since its build is built again, with a warning naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Mapping, Optional

from ..core import atomic, cacheentry, diskspace, hostcmd
from ..core.errors import ConfigError, HarnessError, HostCommandError
from ..core.settings import Settings
from . import buildroot
from .apt import sha256_file
from .kernels.kernel import Kernel
from .modinfo import Module, inspect
from .toolchains import Toolchain, host_compiler_version, toolchain_for

log = logging.getLogger(__name__)

FORMAT = 1              # bump when the same inputs would build a different module
MANIFEST = "manifest.json"

# files of a kbuild directory that are build output, never source (a manual `make` leaves them)
_ARTEFACT = re.compile(r"(\.(o|ko|mod|mod\.c|a|cmd|symvers|order|d|tmp|dwo|lst)$)|"
                       r"^(Module\.symvers|modules\.order|Module\.markers)$")
_ARTEFACT_DIRS = {".tmp_versions", "__pycache__", ".git"}


class BuildError(HarnessError):
    """A module did not compile. ``output`` is what the compiler and kbuild printed."""

    def __init__(self, message: str, *, output: str, kernel: str, source: Path):
        self.output, self.kernel, self.source = output, kernel, Path(source)
        tail = "\n".join(output.rstrip("\n").splitlines()[-30:])
        super().__init__(f"{message}\n{tail}".rstrip())


def is_source_file(relpath: str) -> bool:
    """True for the files of a kbuild directory that are its source (hashed and copied)."""
    parts = relpath.split("/")
    if any(p in _ARTEFACT_DIRS for p in parts[:-1]):
        return False
    name = parts[-1]
    return not (name.startswith(".") or _ARTEFACT.search(name))


def source_files(source: Path) -> dict[str, Path]:
    """``relative path -> file`` for every source file under ``source`` (sorted)."""
    found: dict[str, Path] = {}
    for top, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _ARTEFACT_DIRS and not d.startswith("."))
        for f in sorted(files):
            p = Path(top) / f
            rel = p.relative_to(source).as_posix()
            if is_source_file(rel) and p.is_file():
                found[rel] = p
    return dict(sorted(found.items()))


def source_digest(source: Path) -> dict[str, str]:
    """``relative path -> sha256`` of the source files."""
    return {rel: hashlib.sha256(p.read_bytes()).hexdigest()
            for rel, p in source_files(source).items()}


def cache_key(files: Mapping[str, str], kernel_release: str, kernel_version: str,
              toolchain: str) -> str:
    """sha256 over the source files' hashes, the kernel and the toolchain's identity
    (``toolchain`` should name the compiler's exact version)."""
    doc = {"format": FORMAT, "files": dict(sorted(files.items())), "release": kernel_release,
           "version": kernel_version, "toolchain": toolchain}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def toolchain_identity(tc: Toolchain, kernel: Kernel, settings: Settings) -> str:
    """``<id>: <compiler --version>``, making the build root if it does not exist yet."""
    if tc.kind == "host":
        return f"{tc.id}: {host_compiler_version(tc.cc)}"
    return f"{tc.id}: {buildroot.ensure_buildroot(tc, kernel, settings)['cc_version']}"


def make_command(kernel: Kernel, tc: Toolchain, src: Path) -> list[str]:
    return ["make", "-C", str(kernel.build_dir), f"M={src}", f"CC={tc.cc}", f"HOSTCC={tc.cc}",
            "modules"]


def _run_make(kernel: Kernel, tc: Toolchain, src: Path, settings: Settings) -> str:
    argv = make_command(kernel, tc, src)
    what = f"build {src.name} for {kernel.name} with {tc.id}"
    if tc.kind == "host":
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        env.pop("MAKEFLAGS", None)
        return hostcmd.run(argv, what=what, timeout=settings.timeouts.host_command, env=env)
    # the whole modules/<release> dir, not the work dir: one fixed mount point in the root
    binds = [*((t, False) for t in buildroot.kernel_trees(kernel)),
             (modules_dir(settings, kernel), True)]
    return buildroot.run_in(tc, binds, argv, what=what, settings=settings)


def _from_manifest(directory: Path, *, warn: bool = True) -> Optional[Module]:
    try:
        m = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ko = directory / m.get("ko", "")
    if m.get("format") != FORMAT or not ko.is_file():
        return None
    have = sha256_file(ko)
    if m.get("sha256") and have != m["sha256"]:
        (log.warning if warn else log.debug)("cached module %s changed after its build (sha256 %s, built as %s): building it "
                    "again", ko, have[:16], m["sha256"][:16])
        return None
    if not m.get("sha256"):   # built before the lab recorded it: recorded now
        try:
            atomic.write(directory / MANIFEST, json.dumps({**m, "sha256": have}, indent=2) + "\n")
        except OSError as exc:
            log.warning("could not update %s: %s", directory / MANIFEST, exc)
    return Module(path=ko, name=m["name"], vermagic=m["vermagic"], livepatch=m["livepatch"],
                  kernel_release=m["kernel_release"], toolchain=m.get("toolchain"))


def deliver(mod: Module, out_dir: Optional[Path]) -> Module:
    """``mod`` copied into ``out_dir`` (atomically; the module as it is there), or itself."""
    if out_dir is None:
        return mod
    out_dir = Path(out_dir)
    target = out_dir / mod.path.name
    tmp = out_dir / f".{mod.path.name}.{os.getpid()}.part"
    try:
        with diskspace.guard(out_dir, f"copying {mod.path.name}"):
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mod.path, tmp)
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return Module(target, mod.name, mod.vermagic, mod.livepatch, mod.kernel_release, mod.toolchain)


def modules_dir(settings: Settings, kernel: Kernel) -> Path:
    return settings.built_modules_dir / kernel.release


def check_source(source: Path, field: str = "source") -> Path:
    """``source`` made absolute if it is a kbuild directory, else a ``ConfigError`` naming ``field``:
    what ``build`` checks, for callers that refuse bad input before fetching anything."""
    source = Path(source).absolute()
    if not source.is_dir():
        raise ConfigError(f"{source} is not a directory", field=field)
    if not ((source / "Kbuild").is_file() or (source / "Makefile").is_file()):
        raise ConfigError(f"{source} has no Kbuild or Makefile: not a kbuild directory", field=field)
    return source


def build(source: Path, kernel: Kernel, settings: Settings, *,
          out_dir: Optional[Path] = None) -> Module:
    """Build the kbuild directory ``source`` against ``kernel``; the cached module if the
    same source was built for the same kernel with the same toolchain before.

    ``out_dir``: also copy the .ko there (the returned ``Module.path`` is that copy).
    Raises ``BuildError`` (the compiler's output attached) when it does not compile,
    ``ConfigError`` when ``source`` is not a kbuild directory, ``InfraError`` when the
    host cannot build at all.
    """
    source = check_source(source)
    files = source_digest(source)
    tc = toolchain_for(kernel)
    identity = toolchain_identity(tc, kernel, settings)
    key = cache_key(files, kernel.release, kernel.version, identity)
    base = modules_dir(settings, kernel)
    final = base / key[:24]
    warn = iter([True])   # a damaged entry is said at the first look, not again under the lock

    def make() -> None:
        log.info("building %s for %s (%s) with %s", source, kernel.name, kernel.release, tc.id)
        with cacheentry.staging(base, f".work-{key[:24]}-", f"building {source.name} for {kernel.name}") as work:
            _build_in(source, files, kernel, tc, identity, key, work, settings)
            info = json.loads((work / "out" / MANIFEST).read_text())
            cacheentry.publish(work / "out", final)
        log.info("built %s for %s with %s in %.1fs%s: %s", info["name"], kernel.name, tc.id,
                 info.get("seconds", 0.0),
                 f" ({info['warnings']} compiler warnings, see build.log)" if info.get("warnings") else "",
                 final / info["ko"])

    found = cacheentry.obtain(lambda: _from_manifest(final, warn=next(warn, False)), make,
                              lock=settings.locks_dir / f"module-{kernel.release}-{key[:24]}.lock",
                              timeout=settings.timeouts.lock, what=f"building {source.name} for {kernel.name}")
    return deliver(found, out_dir)


def build_info(module: Module) -> dict:
    """What the cache recorded about a built module (toolchain, seconds, warnings, source
    files...); empty for a module that ``build`` did not make."""
    try:
        return json.loads((module.path.parent / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _build_in(source: Path, files: Mapping[str, str], kernel: Kernel, tc: Toolchain, identity: str,
              key: str, work: Path, settings: Settings) -> None:
    """Build a copy of ``source`` in ``work/src``; leave the module, its log and its
    manifest (written last) in ``work/out``."""
    src, out = work / "src", work / "out"
    src.mkdir()
    out.mkdir()
    for rel, path in source_files(source).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, src / rel)
    t0 = time.monotonic()
    try:
        output = _run_make(kernel, tc, src, settings)
    except HostCommandError as exc:
        if exc.rc is None or diskspace.is_no_space(exc, work):
            raise     # a hung build, or a full disk, is the host's problem, not the source's
        # the compiler named the copy; name the user's files instead
        text = exc.output.replace(f"{src}/", f"{source}/").replace(str(src), str(source))
        raise BuildError(f"building {source} for {kernel.name} ({kernel.release}) with {tc.id} "
                         f"failed (make exited {exc.rc})", output=text, kernel=kernel.name,
                         source=source) from None
    seconds = time.monotonic() - t0
    kos = sorted(src.rglob("*.ko"))
    if len(kos) != 1:
        what = "no module" if not kos else f"{len(kos)} modules ({', '.join(k.name for k in kos)})"
        raise BuildError(f"building {source} for {kernel.name} made {what}; expected exactly one",
                         output=output, kernel=kernel.name, source=source)
    shutil.copyfile(kos[0], out / kos[0].name)
    (out / "build.log").write_text(output)
    mod = inspect(out / kos[0].name, settings)
    if mod.kernel_release != kernel.release:
        log.warning("%s built against %s says vermagic %r, not %s: it will not load there",
                    mod.name, kernel.build_dir, mod.vermagic, kernel.release)
    manifest = {"format": FORMAT, "ko": kos[0].name, "sha256": sha256_file(out / kos[0].name),
                "name": mod.name, "vermagic": mod.vermagic,
                "livepatch": mod.livepatch, "kernel_release": mod.kernel_release,
                "toolchain": tc.id, "toolchain_version": identity, "kernel": kernel.name,
                "kernel_version": kernel.version, "source": str(source), "files": dict(files),
                "key": key, "seconds": round(seconds, 2),
                "warnings": len(re.findall(r"\bwarning:", output)),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / (MANIFEST + ".part")).write_text(json.dumps(manifest, indent=2) + "\n")
    os.rename(out / (MANIFEST + ".part"), out / MANIFEST)
