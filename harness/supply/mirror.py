"""Where Debian's archive is, as this host's apt already knows it.

The lab fetches kernels and builds images from the same archive the host is
configured for, so it works behind the same mirror or proxy with no extra
set-up. ``LIVEPATCH_LAB_MIRROR`` (or ``Settings.debian_mirror``) overrides it,
e.g. on an Ubuntu host whose apt knows no Debian archive.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from ..core.errors import ConfigError

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBIAN_SUITES = {"bullseye", "bookworm", "trixie", "forky", "sid", "unstable", "testing", "stable",
                 "oldstable"}


@dataclass(frozen=True)
class Mirrors:
    archive: str    # .../debian
    security: str   # .../debian-security

    @classmethod
    def from_archive(cls, archive: str) -> "Mirrors":
        archive = archive.rstrip("/")
        return cls(archive, re.sub(r"/debian$", "/debian-security", archive)
                   if archive.endswith("/debian") else archive + "-security")


def _entries(text: str, deb822: bool) -> Iterator[tuple[str, list[str]]]:
    """Yield (uri, suites) from a sources.list or a deb822 .sources file."""
    if not deb822:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
        return
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def archive_from_sources(files: Iterable[Path]) -> Optional[str]:
    """The first Debian (not -security) archive URI in the given apt sources files."""
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for uri, suites in _entries(text, path.suffix == ".sources"):
            base = {s.split("-")[0].split("/")[0] for s in suites}
            security = uri.rstrip("/").endswith("-security") or all(
                s.endswith(("-security", "/updates")) for s in suites)
            if base & DEBIAN_SUITES and not security:
                return uri.rstrip("/")
    return None


def host_sources(root: Path = Path("/etc/apt")) -> list[Path]:
    files = [root / "sources.list"]
    parts = root / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return files


def debian_mirrors(override: Optional[str] = None, apt_root: Path = Path("/etc/apt")) -> Mirrors:
    if override:
        return Mirrors.from_archive(override)
    found = archive_from_sources(host_sources(apt_root))
    if not found:
        raise ConfigError("this host's apt sources name no Debian archive; set LIVEPATCH_LAB_MIRROR "
                          "to a Debian mirror URL (ending in /debian)", source=str(apt_root),
                          field="LIVEPATCH_LAB_MIRROR")
    return Mirrors.from_archive(found)
