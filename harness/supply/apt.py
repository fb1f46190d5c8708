"""A private apt root per set of suites: lists, downloads, nothing of the host's.

The lab needs packages from suites the host does not track (bullseye, trixie,
sid) without touching the host's own apt state. Each root under
``settings.apt_dir/<name>/`` has its own sources.list, lists, status and cache;
apt still verifies every Release file against ``mirror.KEYRING`` and every
.deb against the hash in the signed lists. The host's apt.conf.d is still read
(proxies, mirror settings), but its update/dpkg hooks are cleared so that an
update of a private root never runs the host's hooks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from ..core import atomic, diskspace, hostcmd, progress, retry
from ..core.errors import ConfigError, HostCommandError, InfraError
from ..core.locks import file_lock
from ..core.settings import Settings
from . import aptlists, debversion, mirror

log = logging.getLogger(__name__)

MAX_AGE = 12 * 3600.0      # lists older than this are refreshed before use
COMPONENTS = ("main",)
ARCH = "amd64"
_ENV = {"LC_ALL": "C.UTF-8", "LANGUAGE": "", "DEBIAN_FRONTEND": "noninteractive"}

# Read after the host's apt.conf.d (via -c): keep its proxies, drop its hooks
# and the index targets the lab never reads.
_PRIVATE_CONF = """\
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Install-Pkgs;
Acquire::Languages "none";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
"""


@dataclass(frozen=True)
class PackageRecord:
    """One stanza of a Packages index (only the fields the lab uses)."""
    package: str
    version: str
    source: str          # source package name ("linux"), without its version
    depends: str         # raw Depends field
    filename: str        # pool path
    sha256: str
    size: int


@dataclass(frozen=True)
class Relation:
    """One alternative of a Depends entry: ``name (op version)``."""
    name: str
    op: Optional[str] = None
    version: Optional[str] = None

    def satisfied_by(self, version: str) -> bool:
        if self.op is None or self.version is None:
            return True
        return debversion.satisfies(version, self.op, self.version)


_RELATION = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9.+-]*)(?::[A-Za-z0-9-]+)?\s*"
                       r"(?:\(\s*(?P<op><<|<=|=|>=|>>|<|>)\s*(?P<version>[^)\s]+)\s*\))?"
                       r"\s*(?:\[[^]]*\])?\s*(?:<[^>]*>)?$")


def parse_depends(text: str) -> list[list[Relation]]:
    """``a (>= 1), b | c`` -> [[a>=1], [b, c]]; unparseable alternatives are dropped."""
    groups: list[list[Relation]] = []
    for group in text.replace("\n", " ").split(","):
        alts = []
        for alt in group.split("|"):
            m = _RELATION.match(alt.strip())
            if m:
                alts.append(Relation(m.group("name"), m.group("op"), m.group("version")))
        if alts:
            groups.append(alts)
    return groups


@dataclass(frozen=True)
class Deb:
    """A downloaded package file and its measured hash."""
    package: str
    version: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class AptRoot:
    name: str
    path: Path
    suites: tuple[str, ...]
    sources_list: str    # the full text of its sources.list
    settings: Settings

    @property
    def lists(self) -> Path:
        return self.path / "lists"

    @property
    def lock(self) -> Path:
        return self.settings.locks_dir / f"apt-{self.name}.lock"

    def options(self) -> list[str]:
        p = self.path
        opts = {
            "Dir::Etc::SourceList": p / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State": p / "state",
            "Dir::State::Lists": self.lists,
            "Dir::State::Status": p / "status",
            "Dir::Cache": p / "cache",
            "Dir::Cache::Archives": p / "cache" / "archives",
            # no binary caches: ~80 MB per root for ~0.5 s saved per apt call
            "Dir::Cache::pkgcache": "",
            "Dir::Cache::srcpkgcache": "",
            "APT::Architecture": ARCH,
            "APT::Architectures": ARCH,   # ignore the host's foreign architectures
            "APT::Update::Error-Mode": "any",  # a failed index is a failed update
        }
        if os.geteuid() == 0:
            # as root apt would drop to _apt, which cannot write into our cache
            opts["APT::Sandbox::User"] = "root"
        argv = ["-c", str(p / "apt.conf")]
        for k, v in opts.items():
            argv += ["-o", f"{k}={v}"]
        return argv

    def command(self, tool: str, *args: str) -> list[str]:
        return [tool, *self.options(), *args]


def sources_for(suites: Sequence[str], mirrors: mirror.Mirrors, kind: str = "deb") -> str:
    """sources.list text: ``-security`` suites live on the security archive. ``kind``
    ``deb-src`` lists source packages instead of binaries."""
    lines = []
    for suite in suites:
        uri = mirrors.security if suite.endswith("-security") else mirrors.archive
        lines.append(f"{kind} [signed-by={mirror.KEYRING}] {uri} {suite} {' '.join(COMPONENTS)}")
    return "\n".join(lines) + "\n"


def root_for(settings: Settings, suites: Sequence[str], *, sources: bool = False) -> AptRoot:
    """The private root for exactly these suites (named after them); with ``sources``, a
    root of their source package lists (``deb-src``)."""
    if not suites:
        raise ConfigError("no apt suites given", field="suites")
    name = re.sub(r"[^A-Za-z0-9.+_-]", "_", "+".join(suites)) + ("-src" if sources else "")
    text = sources_for(suites, mirror.debian_mirrors(settings.debian_mirror), "deb-src" if sources else "deb")
    return AptRoot(name, settings.apt_dir / name, tuple(suites), text, settings)


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    atomic.write(path, text)


def _prepare(root: AptRoot) -> None:
    for d in ("lists/partial", "state", "cache/archives/partial"):
        (root.path / d).mkdir(parents=True, exist_ok=True)
    (root.path / "status").touch()
    _write_if_changed(root.path / "apt.conf", _PRIVATE_CONF)
    _write_if_changed(root.path / "sources.list", root.sources_list)


def _stamp(root: AptRoot) -> Path:
    return root.path / "updated.json"


def is_fresh(root: AptRoot, max_age: float = MAX_AGE, now: Optional[float] = None) -> bool:
    """Lists exist, were fetched for the current sources.list, and are younger than ``max_age``."""
    try:
        stamp = json.loads(_stamp(root).read_text())
    except (OSError, ValueError):
        return False
    now = time.time() if now is None else now
    return (stamp.get("sources") == root.sources_list
            and 0 <= now - float(stamp.get("time", 0)) < max_age)


def update(root: AptRoot, *, force: bool = False, max_age: float = MAX_AGE) -> bool:
    """``apt-get update`` the root unless its lists are fresh; True if it ran."""
    with file_lock(root.lock, timeout=root.settings.timeouts.lock, what=f"apt lists {root.name}"), \
            diskspace.guard(root.path, f"updating the apt lists of {', '.join(root.suites)}"):
        _prepare(root)
        if not force and is_fresh(root, max_age):
            return False
        log.info("fetching apt lists for %s", ", ".join(root.suites))
        start = time.monotonic()
        for attempt in retry.download_policy():
            with attempt:
                hostcmd.run(root.command("apt-get", "-q", "update"), env=env(),
                            what=f"apt-get update ({', '.join(root.suites)})",
                            timeout=root.settings.timeouts.apt_update)
        _write_if_changed(_stamp(root), json.dumps({"sources": root.sources_list,
                                                    "time": time.time()}))
        log.info("apt lists for %s updated in %.1fs", root.name, time.monotonic() - start)
        return True


def env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(_ENV)
    return env


# --- reading the lists (aptlists) ---------------------------------------------
def parse_packages(text: str, want: Callable[[str], bool] = lambda _: True) -> Iterator[PackageRecord]:
    """Records of a Packages index whose package name passes ``want``."""
    for stanza in re.split(r"\n\s*\n", text):
        stanza = stanza.strip("\n")
        if not stanza.startswith("Package:"):
            continue
        name = stanza[len("Package:"):stanza.find("\n") if "\n" in stanza else None].strip()
        if not want(name):
            continue
        f = aptlists.field_map(stanza)
        try:
            yield PackageRecord(
                package=name, version=f["Version"],
                source=(f.get("Source") or name).split()[0],
                depends=f.get("Depends", ""), filename=f.get("Filename", ""),
                sha256=f.get("SHA256", ""), size=int(f.get("Size", "0") or 0))
        except KeyError:
            continue  # a stanza without a version is not installable; skip it


def packages(root: AptRoot, want: Callable[[str], bool] = lambda _: True) -> list[PackageRecord]:
    """Every (package, version) in the root's lists that passes ``want``, deduplicated."""
    return aptlists.read_lists(root.lists, root.lock, root.settings, "Packages",
                               lambda text: parse_packages(text, want))


# --- downloads ---------------------------------------------------------------
def deb_name(package: str, version: str, arch: str = ARCH) -> str:
    """The file name ``apt-get download`` gives a package (epoch colon quoted)."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_MISSING = (re.compile(r"Unable to locate package (?P<pkg>\S+)"),
            re.compile(r"Version '(?P<ver>[^']+)' for '(?P<pkg>[^']+)' was not found"),
            re.compile(r"Can't select (?:candidate )?version .* package (?P<pkg>\S+)"))


def available_versions(root: AptRoot, package: str) -> list[str]:
    """Versions of ``package`` the root's lists know (from ``apt-cache madison``)."""
    try:
        out = hostcmd.run(root.command("apt-cache", "madison", package), env=env(),
                          what="apt-cache madison", timeout=root.settings.timeouts.host_command)
    except HostCommandError:
        return []
    versions = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[0] == package and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def missing_error(root: AptRoot, package: str, version: str) -> ConfigError:
    have = available_versions(root, package)
    listed = ", ".join(have) if have else "none"
    return ConfigError(f"{package}={version} is not in {', '.join(root.suites)} "
                       f"(available versions of {package}: {listed})", field=package)


def _apt_get_download(root: AptRoot, package: str, version: str, into: Path) -> None:
    cmd = root.command("apt-get", "-q", "download", f"{package}={version}")
    for attempt in retry.download_policy():
        with attempt:
            try:
                hostcmd.run(cmd, cwd=into, env=env(), what=f"download {package}={version}",
                            timeout=root.settings.timeouts.download)
            except HostCommandError as exc:
                if any(p.search(exc.output) for p in _MISSING):
                    raise missing_error(root, package, version) from None  # not transient
                raise


def download(root: AptRoot, package: str, version: str, dest_dir: Path, *,
             sha256: Optional[str] = None, size: Optional[int] = None) -> Deb:
    """``dest_dir/<package>_<version>_amd64.deb``, downloaded unless already there.

    An existing file is reused (no network) when it matches ``sha256`` (or when
    no hash is given). A download lands in a private temp dir first and is
    renamed into place, so concurrent callers never see a partial file.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / deb_name(package, version)
    if final.exists():
        have = sha256_file(final)
        if sha256 is None or have == sha256:
            return Deb(package, version, final, have, final.stat().st_size)
        log.warning("%s: hash %s does not match the archive's %s; downloading again",
                    final, have, sha256)
    with diskspace.guard(dest_dir, f"downloading {package} {version}"):
        return _download_new(root, package, version, dest_dir, final, sha256, size)


def _download_new(root: AptRoot, package: str, version: str, dest_dir: Path, final: Path,
                  sha256: Optional[str], size: Optional[int]) -> Deb:
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".download-"))
    try:
        with progress.ticking(f"downloading {package} {version}", done=progress.bytes_done(tmp, size)):
            _apt_get_download(root, package, version, tmp)
        got = list(tmp.glob("*.deb"))
        if len(got) != 1:
            raise InfraError(f"apt-get download {package}={version} left {len(got)} .deb files in {tmp}")
        have = sha256_file(got[0])
        if sha256 is not None and have != sha256:
            raise InfraError(f"{got[0].name}: sha256 {have} but the archive lists {sha256}")
        os.replace(got[0], final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Deb(package, version, final, have, final.stat().st_size)
