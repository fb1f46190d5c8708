"""Out-of-tree kernel modules: build them against a ``Kernel``, check prebuilt ones.

``build(source, kernel, settings)`` compiles a kbuild directory (``Kbuild`` or
``Makefile`` with ``obj-m``) against the kernel's relocated Debian headers and
returns the resulting ``Module``. It never writes into ``source``: the files
are copied into a work directory in the cache first. Results are cached under
``settings.cache_dir/modules/<release>/<key>/`` where the key hashes the source
files, the kernel and the toolchain, so a second build of the same source is a
file read (file-locked between pytest-xdist workers, renamed into place).

Toolchains. kbuild's ``CC`` must be the kernel's compiler major: 6.12's flags
(``-fmin-function-alignment=16``) are unknown to gcc-12. And the kernel's
prebuilt kbuild binaries (fixdep, modpost, objtool) must run: a newer suite's
may need a newer glibc than the host's (checked by starting them). So:

- ``host``: the host's ``gcc-N`` when N is the kernel's compiler major (or a
  known-good substitute: Debian 5.10 is built with gcc-10, and gcc-12 builds
  modules for it that load and run), and the kernel's kbuild binaries run here;
- ``buildroot``: otherwise, a minimal Debian tree of the kernel's own suite
  (trixie for gcc-14, sid for gcc-16) made once with mmdebstrap under
  ``settings.cache_dir/toolchains/<suite>-<compiler>/``; its packages are the
  compiler and the runtime dependencies of the kernel's ``linux-kbuild``
  package as the archive states them, plus make and libc6-dev. A build runs
  ``make`` in it under ``unshare --mount`` + ``chroot``, with the kernel's
  cache tree (read-only) and the modules cache bound at their *same* absolute
  paths (the headers' Makefile includes an absolute path). The mounts live in
  a private mount namespace and vanish with the process.

The chosen toolchain is recorded in the module cache's ``manifest.json`` and
in ``Module.toolchain``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from ..core import hostcmd
from ..core.errors import ConfigError, HarnessError, HostCommandError, InfraError, LivepatchError
from ..core.locks import file_lock
from ..core.settings import Settings
from .kernels import Kernel

log = logging.getLogger(__name__)

FORMAT = 1              # bump when the same inputs would build a different module
TOOLCHAIN_FORMAT = 1    # bump when a build root is made differently
MANIFEST = "manifest.json"

# kernel compiler -> host compilers known to build working modules for it
SUBSTITUTES: dict[str, tuple[str, ...]] = {"gcc-10": ("gcc-12",)}
# the Debian suite whose gcc-N is the default/available one (used when the kernel names none)
SUITE_FOR_COMPILER: dict[str, str] = {"gcc-10": "bullseye", "gcc-12": "bookworm",
                                      "gcc-14": "trixie", "gcc-16": "sid"}
# always in a build root: kbuild's driver and the C library headers
BUILDROOT_BASE = ("make", "libc6-dev")

# files of a kbuild directory that are build output, never source (a manual `make` leaves them)
_ARTEFACT = re.compile(r"(\.(o|ko|mod|mod\.c|a|cmd|symvers|order|d|tmp|dwo|lst)$)|"
                       r"^(Module\.symvers|modules\.order|Module\.markers)$")
_ARTEFACT_DIRS = {".tmp_versions", "__pycache__", ".git"}
_COMPILER = re.compile(r"^(?P<cc>gcc|clang)-(?P<major>\d+)$")


class BuildError(HarnessError):
    """A module did not compile. ``output`` is what the compiler and kbuild printed."""

    def __init__(self, message: str, *, output: str, kernel: str, source: Path):
        self.output, self.kernel, self.source = output, kernel, Path(source)
        tail = "\n".join(output.rstrip("\n").splitlines()[-30:])
        super().__init__(f"{message}\n{tail}".rstrip())


class CompatError(HarnessError):
    """A prebuilt module does not fit the kernel; the message names both releases."""

    def __init__(self, message: str, *, module_release: str, kernel_release: str):
        self.module_release, self.kernel_release = module_release, kernel_release
        super().__init__(message)


@dataclass(frozen=True)
class Module:
    path: Path               # the .ko
    name: str                # modinfo name (else the file stem, '-' -> '_')
    vermagic: str
    livepatch: bool          # modinfo livepatch == "Y"
    kernel_release: str      # first word of vermagic
    toolchain: Optional[str] = None   # what built it ("host-gcc-12", "trixie-gcc-14"); None: prebuilt


@dataclass(frozen=True)
class Toolchain:
    kind: str                # "host" | "buildroot"
    cc: str                  # kbuild's CC and HOSTCC, e.g. "gcc-14"
    suite: Optional[str] = None   # buildroot: the Debian suite it comes from

    @property
    def id(self) -> str:
        return f"host-{self.cc}" if self.kind == "host" else f"{self.suite}-{self.cc}"


# --- pure logic -----------------------------------------------------------------
def vermagic_release(vermagic: str) -> str:
    """``"6.1.0-56-amd64 SMP preempt mod_unload modversions "`` -> ``"6.1.0-56-amd64"``."""
    words = vermagic.split()
    return words[0] if words else ""


def compiler_major(compiler: Optional[str]) -> Optional[int]:
    m = _COMPILER.match(compiler or "")
    return int(m.group("major")) if m else None


def choose_toolchain(kernel_compiler: Optional[str], host_compilers: Iterable[str], suite: str,
                     *, host_runs_kbuild: bool = True) -> Toolchain:
    """The toolchain for a kernel built with ``kernel_compiler`` (``"gcc-14"``).

    ``host_compilers``: the ``gcc-N`` names the host has. ``suite``: the kernel's
    own Debian suite (where a build root comes from). ``host_runs_kbuild``: the
    kernel's kbuild binaries run on this host (their glibc is not newer).
    """
    host = list(host_compilers)
    if kernel_compiler is None:
        if not host:
            raise ConfigError("the kernel names no compiler and the host has no gcc-N",
                              field="compiler")
        return Toolchain("host", sorted(host, key=lambda c: compiler_major(c) or 0)[-1])
    m = _COMPILER.match(kernel_compiler)
    if not m:
        raise ConfigError(f"unrecognised kernel compiler {kernel_compiler!r}", field="compiler")
    if m.group("cc") != "gcc":
        raise ConfigError(f"the kernel was built with {kernel_compiler}; only gcc-built kernels "
                          "are supported", field="compiler")
    if host_runs_kbuild:
        if kernel_compiler in host:
            return Toolchain("host", kernel_compiler)
        for sub in SUBSTITUTES.get(kernel_compiler, ()):
            if sub in host:
                return Toolchain("host", sub)
    return Toolchain("buildroot", kernel_compiler, suite)


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


_MODINFO_ENTRY = re.compile(r"^(?P<key>[A-Za-z0-9_.-]+)(?:=|:[ \t]*)(?P<value>.*)$", re.S)


def parse_modinfo(text: str) -> dict[str, str]:
    """``modinfo -0`` output -> first value per key. Entries are NUL-separated, the
    ``.modinfo`` ones as ``key=value`` and modinfo's own (filename) as ``key:   value``."""
    fields: dict[str, str] = {}
    for entry in text.split("\0"):
        m = _MODINFO_ENTRY.match(entry.strip("\n"))
        if m:
            fields.setdefault(m.group("key"), m.group("value").strip())
    return fields


def compat_message(module_name: str, module_release: str, vermagic: str, kernel_name: str,
                   kernel_release: str) -> str:
    return (f"{module_name} was built for kernel {module_release or '(no vermagic)'} "
            f"(vermagic {vermagic.strip()!r}) but {kernel_name} is {kernel_release}: "
            f"a module only loads into the release it was built for")


def kbuild_depends(depends_fields: Iterable[str]) -> list[str]:
    """Package names a build root needs from Depends fields (of the headers and kbuild
    packages): the first alternative of each entry, minus kernel packages and libc6."""
    from . import apt

    names: list[str] = []
    for field_text in depends_fields:
        for group in apt.parse_depends(field_text):
            if not group:
                continue
            name = group[0].name
            if name.startswith("linux-") or name == "libc6" or name in names:
                continue
            names.append(name)
    return names


# host apt settings a build root's mmdebstrap follows (it does not read the host's apt.conf.d):
# the same archive, through the same proxy, with the same view of Release file dates
FORWARDED_APT_OPTIONS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date",
                         "Acquire::http::Proxy", "Acquire::https::Proxy")
_APT_CONFIG_LINE = re.compile(r'^(?P<key>[A-Za-z0-9:_.-]+) "(?P<value>[^"]*)";$')


def forwarded_apt_options(dump: str) -> list[str]:
    """``apt-config dump`` output -> mmdebstrap ``--aptopt`` arguments for the forwarded keys."""
    wanted = {k.lower(): k for k in FORWARDED_APT_OPTIONS}
    out = []
    for line in dump.splitlines():
        m = _APT_CONFIG_LINE.match(line.strip())
        if m and m.group("key").lower() in wanted and m.group("value"):
            out.append(f'--aptopt={m.group("key")} "{m.group("value")}"')
    return out


def buildroot_packages(kernel_compiler: str, depends: Sequence[str]) -> list[str]:
    """What mmdebstrap installs into a build root for ``kernel_compiler``:
    the plain ``gcc-N`` (its ``CC``), what the archive says kbuild depends on,
    make and libc6-dev."""
    out = [kernel_compiler]
    for name in [*depends, *BUILDROOT_BASE]:
        if name not in out:
            out.append(name)
    return out


# --- inspecting modules -----------------------------------------------------------
def inspect(ko: Path, settings: Optional[Settings] = None) -> Module:
    """A module's identity from ``modinfo``."""
    ko = Path(ko)
    if not ko.is_file():
        raise ConfigError(f"{ko} does not exist or is not a file", field="ko")
    timeout = (settings or Settings()).timeouts.host_command
    try:
        text = hostcmd.run(["modinfo", "-0", str(ko.absolute())], what=f"modinfo {ko.name}",
                           timeout=timeout)
    except HostCommandError as exc:
        if exc.rc is None:
            raise
        raise ConfigError(f"{ko} is not a kernel module (modinfo: {exc.output.strip()})",
                          field="ko") from None
    info = parse_modinfo(text)
    stem = ko.name.split(".ko")[0]
    vermagic = info.get("vermagic", "")
    return Module(path=ko, name=info.get("name") or stem.replace("-", "_"), vermagic=vermagic,
                  livepatch=info.get("livepatch") == "Y", kernel_release=vermagic_release(vermagic))


def check_compatible(module: Module, kernel: Kernel) -> None:
    """Raise ``CompatError`` unless ``module`` was built for ``kernel``'s release."""
    if module.kernel_release != kernel.release:
        raise CompatError(compat_message(module.name, module.kernel_release, module.vermagic,
                                         kernel.name, kernel.release),
                          module_release=module.kernel_release, kernel_release=kernel.release)


def require_livepatch(module: Module) -> None:
    if not module.livepatch:
        raise LivepatchError(f"{module.name} ({module.path}) is not a livepatch module "
                             f"(modinfo livepatch != Y)")


# --- toolchains ---------------------------------------------------------------------
def host_compilers(names: Iterable[str], which: Callable[[str], Optional[str]] = shutil.which
                   ) -> list[str]:
    return [n for n in names if which(n)]


@functools.lru_cache(maxsize=None)
def _host_compiler_version(cc: str) -> str:
    out = hostcmd.run([cc, "--version"], what=f"{cc} --version", timeout=30)
    return out.splitlines()[0].strip() if out.strip() else cc


KBUILD_BINARIES = ("scripts/basic/fixdep", "scripts/mod/modpost", "tools/objtool/objtool")
_LOADER_TROUBLE = ("GLIBC_", "error while loading shared libraries", "cannot execute")


@functools.lru_cache(maxsize=None)
def host_runs_kbuild(build_dir: Path) -> bool:
    """Whether the kernel's prebuilt kbuild binaries run on this host: a newer suite's
    may need a newer glibc or libraries the host lacks. Each is started with no
    arguments (it complains about usage) and the dynamic loader's complaints are looked for."""
    for rel in KBUILD_BINARIES:
        binary = build_dir / rel
        if not binary.is_file():
            continue   # kbuild builds or does not need it
        try:
            hostcmd.run([str(binary)], what=f"run the kernel's {binary.name}", timeout=30)
        except HostCommandError as exc:
            if exc.rc is None or any(t in exc.output for t in _LOADER_TROUBLE):
                log.info("%s does not run on this host: %s", binary, exc.output.strip()[:200])
                return False
        except InfraError as exc:
            log.info("%s does not run on this host: %s", binary, exc)
            return False
    return True


def _kernel_manifest(kernel: Kernel) -> Optional[dict]:
    """The kernel cache's manifest.json (an ancestor of the build dir), if any."""
    for parent in kernel.build_dir.parents:
        m = parent / "manifest.json"
        if m.is_file():
            try:
                return {**json.loads(m.read_text()), "_dir": str(parent)}
            except ValueError:
                return None
    return None


def kernel_suite(kernel: Kernel) -> str:
    """The Debian suite the kernel came from (its definition's first suite, minus pockets)."""
    man = _kernel_manifest(kernel)
    suites = (man or {}).get("suites") or []
    if suites:
        return re.split(r"[-/]", suites[0])[0]
    if kernel.compiler in SUITE_FOR_COMPILER:
        return SUITE_FOR_COMPILER[kernel.compiler]
    raise ConfigError(f"cannot tell which Debian suite has {kernel.compiler} for {kernel.name}",
                      field="compiler")


def toolchain_for(kernel: Kernel) -> Toolchain:
    wanted = [kernel.compiler] if kernel.compiler else []
    wanted += list(SUBSTITUTES.get(kernel.compiler or "", ()))
    if not wanted:
        wanted = [f"gcc-{n}" for n in range(20, 8, -1)]
    tc_suite = kernel_suite(kernel) if kernel.compiler else "bookworm"
    return choose_toolchain(kernel.compiler, host_compilers(wanted), tc_suite,
                            host_runs_kbuild=host_runs_kbuild(kernel.build_dir))


def _load_buildroot(directory: Path) -> Optional[dict]:
    try:
        man = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if man.get("format") != TOOLCHAIN_FORMAT or not (directory / "root" / "usr/bin").is_dir():
        return None
    return man


def _kernel_depends(kernel: Kernel, settings: Settings) -> list[str]:
    """Depends of the kernel's headers and kbuild packages, from the apt lists it was fetched
    with (empty if they are not known, e.g. for a local kernel)."""
    from . import apt

    man = _kernel_manifest(kernel)
    if not man or not man.get("suites") or not kernel.packages:
        return []
    root = apt.root_for(settings, man["suites"])
    if not any(p.exists() for p in apt.index_files(root)):
        apt.update(root)
    wanted = {(p.name, p.version) for p in kernel.packages
              if p.name.startswith(("linux-headers-", "linux-kbuild-"))}
    recs = apt.packages(root, lambda n: n.startswith(("linux-headers-", "linux-kbuild-")))
    return [r.depends for r in recs if (r.package, r.version) in wanted]


def _host_apt_options(settings: Settings) -> list[str]:
    try:
        dump = hostcmd.run(["apt-config", "dump"], what="read the host's apt configuration",
                           timeout=settings.timeouts.host_command)
    except InfraError as exc:   # not a Debian-like host: nothing to follow
        log.debug("%s", exc)
        return []
    return forwarded_apt_options(dump)


def ensure_buildroot(tc: Toolchain, kernel: Kernel, settings: Settings) -> dict:
    """The build root for ``tc`` (made once with mmdebstrap; file-locked, atomic).
    Returns its manifest (``root``, ``cc_version``, ``packages``, ``seconds``)."""
    assert tc.kind == "buildroot" and tc.suite
    final = settings.toolchains_dir / tc.id
    man = _load_buildroot(final)
    if man:
        return man
    with file_lock(settings.locks_dir / f"toolchain-{tc.id}.lock", timeout=settings.timeouts.lock,
                   what=f"build root {tc.id}"):
        man = _load_buildroot(final)
        if man:
            return man
        if os.geteuid() != 0:
            raise InfraError(f"making the {tc.id} build root needs root (mmdebstrap, chroot); "
                             "run the first build as root")
        from .images import DPKG_EXCLUDES, DPKG_INCLUDES, remove_tree
        from .mirror import debian_mirrors

        parent = settings.toolchains_dir
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".build-{tc.id}-*"):
            log.info("removing a dead build root: %s", stale)
            remove_tree(stale, settings)
        packages = buildroot_packages(tc.cc, kbuild_depends(_kernel_depends(kernel, settings)))
        work = parent / f".build-{tc.id}-{os.getpid()}"
        try:
            out = work / "out"
            out.mkdir(parents=True)
            tree = out / "root"
            log.info("making build root %s (once): mmdebstrap %s minbase with %s", tc.id,
                     tc.suite, ", ".join(packages))
            t0 = time.monotonic()
            # in a private mount namespace: whatever mmdebstrap mounts in the tree (proc, dev...)
            # vanishes with it, even when it is killed half-way
            cmd = ["unshare", "--mount", "--propagation", "private", "--fork",
                   "mmdebstrap", "--mode=root", "--variant=minbase", "--components=main",
                   "--aptopt=Acquire::Languages \"none\"", "--include=" + ",".join(packages)]
            cmd += _host_apt_options(settings)
            cmd += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
            cmd += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
            cmd += [tc.suite, str(tree), debian_mirrors(settings.debian_mirror).archive]
            hostcmd.run(cmd, what=f"make the {tc.id} build root", timeout=settings.timeouts.image_build,
                        env={**os.environ, "LC_ALL": "C.UTF-8"})
            seconds = time.monotonic() - t0
            version = hostcmd.run(["chroot", str(tree), tc.cc, "--version"],
                                  what=f"{tc.cc} --version in {tc.id}",
                                  timeout=settings.timeouts.host_command).splitlines()[0].strip()
            man = {"format": TOOLCHAIN_FORMAT, "id": tc.id, "suite": tc.suite, "cc": tc.cc,
                   "cc_version": version, "packages": packages, "seconds": round(seconds, 1),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (out / (MANIFEST + ".part")).write_text(json.dumps(man, indent=2) + "\n")
            os.rename(out / (MANIFEST + ".part"), out / MANIFEST)
            if final.exists():
                os.rename(final, work / "previous")
            os.rename(out, final)
            log.info("build root %s ready in %.0fs (%s)", tc.id, seconds, version)
        finally:
            remove_tree(work, settings)
    man = _load_buildroot(final)
    if man is None:
        raise InfraError(f"build root {final} is incomplete right after it was made")
    return man


def toolchain_identity(tc: Toolchain, kernel: Kernel, settings: Settings) -> str:
    """``<id>: <compiler --version>``, making the build root if it does not exist yet."""
    if tc.kind == "host":
        return f"{tc.id}: {_host_compiler_version(tc.cc)}"
    return f"{tc.id}: {ensure_buildroot(tc, kernel, settings)['cc_version']}"


# --- building -----------------------------------------------------------------------
def kernel_trees(kernel: Kernel) -> list[Path]:
    """The directories to expose to a build root for ``kernel``: its whole cache tree
    (headers, kbuild, the links between them); for a kernel outside the cache, its build
    directory and the source tree its ``source`` link points at (an O= build)."""
    man = _kernel_manifest(kernel)
    if man:
        return [Path(man["_dir"])]
    trees = [kernel.build_dir.absolute()]
    for extra in (kernel.build_dir.resolve(), (kernel.build_dir / "source").resolve()):
        if extra.is_dir() and not any(extra == t or t in extra.parents for t in trees):
            trees.append(extra)
    return trees


def make_command(kernel: Kernel, tc: Toolchain, src: Path) -> list[str]:
    return ["make", "-C", str(kernel.build_dir), f"M={src}", f"CC={tc.cc}", f"HOSTCC={tc.cc}",
            "modules"]


def chroot_script(root: Path, binds: Sequence[tuple[Path, bool]], argv: Sequence[str]) -> str:
    """Shell run by ``unshare --mount``: private tmp/proc, ``binds`` (path, writable) at
    their own absolute paths inside ``root``, then ``argv`` under chroot with a clean env."""
    q = shlex.quote
    lines = ["set -e",
             f"mount -t tmpfs -o mode=1777,size=512m lab-tmp {q(str(root / 'tmp'))}",
             f"mount -t proc lab-proc {q(str(root / 'proc'))}"]
    for path, writable in binds:
        inside = q(str(root) + str(path))
        lines.append(f"mkdir -p {inside}")
        lines.append(f"mount --bind {q(str(path))} {inside}")
        if not writable:
            lines.append(f"mount -o remount,bind,ro {inside}")
    env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C.UTF-8",
           "HOME=/tmp", "TMPDIR=/tmp"]
    lines.append("exec chroot " + q(str(root)) + " " + " ".join(q(a) for a in [*env, *argv]))
    return "\n".join(lines)


def mounts_under(path: Path, mountinfo: Optional[str] = None) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    base = os.path.realpath(path)
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == base or point.startswith(base + "/"):
                points.append(point)
    return points


def _run_make(kernel: Kernel, tc: Toolchain, src: Path, settings: Settings) -> str:
    argv = make_command(kernel, tc, src)
    what = f"build {src.name} for {kernel.name} with {tc.id}"
    if tc.kind == "host":
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        env.pop("MAKEFLAGS", None)
        return hostcmd.run(argv, what=what, timeout=settings.timeouts.host_command, env=env)
    root = settings.toolchains_dir / tc.id / "root"
    # the whole modules/<release> dir, not the work dir: one fixed mount point in the root
    binds = [*((t, False) for t in kernel_trees(kernel)), (modules_dir(settings, kernel), True)]
    script = chroot_script(root, binds, argv)
    try:
        return hostcmd.run(["unshare", "--mount", "--propagation", "private", "--fork",
                            "sh", "-c", script], what=what, timeout=settings.timeouts.host_command)
    finally:
        left = mounts_under(root)
        if left:   # cannot happen with a private namespace; say so loudly if it does
            raise InfraError(f"mounts left behind in {root}: {', '.join(left)}")


def _from_manifest(directory: Path) -> Optional[Module]:
    try:
        m = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ko = directory / m.get("ko", "")
    if m.get("format") != FORMAT or not ko.is_file():
        return None
    return Module(path=ko, name=m["name"], vermagic=m["vermagic"], livepatch=m["livepatch"],
                  kernel_release=m["kernel_release"], toolchain=m.get("toolchain"))


def _deliver(mod: Module, out_dir: Optional[Path]) -> Module:
    if out_dir is None:
        return mod
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / mod.path.name
    tmp = out_dir / f".{mod.path.name}.{os.getpid()}.part"
    shutil.copyfile(mod.path, tmp)
    os.replace(tmp, target)
    return Module(target, mod.name, mod.vermagic, mod.livepatch, mod.kernel_release, mod.toolchain)


def modules_dir(settings: Settings, kernel: Kernel) -> Path:
    return settings.built_modules_dir / kernel.release


def build(source: Path, kernel: Kernel, settings: Settings, *,
          out_dir: Optional[Path] = None) -> Module:
    """Build the kbuild directory ``source`` against ``kernel``; the cached module if the
    same source was built for the same kernel with the same toolchain before.

    ``out_dir``: also copy the .ko there (the returned ``Module.path`` is that copy).
    Raises ``BuildError`` (the compiler's output attached) when it does not compile,
    ``ConfigError`` when ``source`` is not a kbuild directory, ``InfraError`` when the
    host cannot build at all.
    """
    source = Path(source).absolute()
    if not source.is_dir():
        raise ConfigError(f"{source} is not a directory", field="source")
    if not ((source / "Kbuild").is_file() or (source / "Makefile").is_file()):
        raise ConfigError(f"{source} has no Kbuild or Makefile: not a kbuild directory",
                          field="source")
    files = source_digest(source)
    tc = toolchain_for(kernel)
    identity = toolchain_identity(tc, kernel, settings)
    key = cache_key(files, kernel.release, kernel.version, identity)
    base = modules_dir(settings, kernel)
    final = base / key[:24]
    found = _from_manifest(final)
    if found:
        log.debug("%s for %s: cached %s", source, kernel.name, found.path)
        return _deliver(found, out_dir)
    with file_lock(settings.locks_dir / f"module-{kernel.release}-{key[:24]}.lock",
                   timeout=settings.timeouts.lock, what=f"building {source.name} for {kernel.name}"):
        found = _from_manifest(final)
        if found:
            return _deliver(found, out_dir)
        log.info("building %s for %s (%s) with %s", source, kernel.name, kernel.release, tc.id)
        base.mkdir(parents=True, exist_ok=True)
        for stale in base.glob(f".work-{key[:24]}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(dir=base, prefix=f".work-{key[:24]}-"))
        try:
            _build_in(source, files, kernel, tc, identity, key, work, settings)
            if final.exists():
                shutil.rmtree(final)
            os.rename(work / "out", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = _from_manifest(final)
    if found is None:
        raise InfraError(f"{final} is incomplete right after its build")
    info = build_info(found)
    log.info("built %s for %s with %s in %.1fs%s: %s", found.name, kernel.name, tc.id,
             info.get("seconds", 0.0),
             f" ({info['warnings']} compiler warnings, see build.log)" if info.get("warnings") else "",
             found.path)
    return _deliver(found, out_dir)


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
        if exc.rc is None:
            raise     # a hung build is the host's problem, not the source's
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
    manifest = {"format": FORMAT, "ko": kos[0].name, "name": mod.name, "vermagic": mod.vermagic,
                "livepatch": mod.livepatch, "kernel_release": mod.kernel_release,
                "toolchain": tc.id, "toolchain_version": identity, "kernel": kernel.name,
                "kernel_version": kernel.version, "source": str(source), "files": dict(files),
                "key": key, "seconds": round(seconds, 2),
                "warnings": len(re.findall(r"\bwarning:", output)),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / (MANIFEST + ".part")).write_text(json.dumps(manifest, indent=2) + "\n")
    os.rename(out / (MANIFEST + ".part"), out / MANIFEST)


__all__ = ["BuildError", "CompatError", "Module", "Toolchain", "build", "check_compatible",
           "choose_toolchain", "inspect", "require_livepatch"]
