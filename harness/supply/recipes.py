"""Guest image recipes: ``images/*.yaml`` -> a validated ``Recipe`` and its digest.

A recipe names a Debian suite, an mmdebstrap variant and packages; it may add
``.deb`` files (local ones, or packages of another suite fetched through the
lab's verified apt root) and copy files or directories into the image (a
vendor's agent, a hook script). It validates through ``yamlconf`` (every error
names the file, the line and the field). The digest covers the recipe's
content (a local .deb and a copied tree by their contents), the lab's guest
files and the image layout version, so any change builds a new image.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core import paths, yamlconf
from ..core.yamlconf import Field, matches
from .guestfs import guest_files_digest, tree_digest

DEFAULT_RECIPE = paths.IMAGES_DIR / "default.yaml"
FORMAT = 1     # bump when images.build() makes a different image from the same recipe and files

# what the lab's guest init cannot work without
REQUIRED_PACKAGES = ("openssh-server", "kmod", "busybox", "iproute2")
VARIANTS = ("essential", "apt", "required", "minbase", "buildd", "important", "debootstrap",
            "standard")

_PACKAGE = r"[a-z0-9][a-z0-9+.-]+"
_SUITE = r"[a-z][a-z0-9.-]{0,62}"
SCHEMA: yamlconf.Schema = {
    "name": Field(str, required=True, check=matches(r"[a-z0-9][a-z0-9._-]{0,62}",
                                                    "a valid image name (a-z, 0-9, . _ -)")),
    "suite": Field(str, required=True, check=matches(_SUITE, "a Debian suite name")),
    "variant": Field(str, default="minbase", check=lambda v: None if v in VARIANTS else (
        f"{v!r} is not an mmdebstrap variant that installs packages ({', '.join(VARIANTS)})")),
    "packages": Field(list, default=[], unique=True, items=Field(str, check=matches(
        _PACKAGE + r"(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+|/[a-z0-9.-]+)?",
        "a Debian package name"))),
    "debs": Field(list, default=[], items={
        "file": Field(Path, doc="a local .deb (relative to the recipe)"),
        "package": Field(str, check=matches(_PACKAGE, "a Debian package name")),
        "suite": Field(str, check=matches(_SUITE, "a Debian suite name"), doc="where `package` comes from"),
        "version": Field(str, as_text=True, check=matches(r"[A-Za-z0-9.+~:-]+", "a Debian version"),
                         doc="default: the newest in `suite` when the image is built"),
    }, doc=".deb files installed with the packages (apt resolves their dependencies in `suite`)"),
    "copy": Field(list, default=[], items={
        "from": Field(Path, required=True, doc="a file or directory (relative to the recipe)"),
        "to": Field(str, required=True, check=matches(r"/[^\0]*", "an absolute path in the guest")),
    }, doc="files copied into the image (before the lab's own, which win)"),
    "size_mib": Field(int, default=2048, check=lambda v: None if 512 <= v <= 65536 else (
        f"{v} is out of range (512..65536 MiB)")),
}


@dataclass(frozen=True)
class DebSource:
    """A .deb the recipe adds: a local ``file`` (with its sha256), or ``package`` from ``suite``
    (at ``version``, or the newest there when the image is built)."""
    file: Optional[Path] = None
    sha256: str = ""
    package: Optional[str] = None
    suite: Optional[str] = None
    version: Optional[str] = None

    def content(self) -> dict[str, Any]:
        if self.file is not None:
            return {"file": self.file.name, "sha256": self.sha256}
        return {"package": self.package, "suite": self.suite, "version": self.version}


@dataclass(frozen=True)
class Copy:
    """A file or directory copied to ``to`` in the guest; ``digest`` covers its names, modes and
    contents."""
    source: Path
    to: str
    digest: str = ""


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    size_mib: int
    debs: tuple[DebSource, ...] = ()
    copies: tuple[Copy, ...] = ()
    source: Optional[Path] = field(default=None, compare=False)
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    def line_of(self, key: str) -> Optional[int]:
        return dict(self.lines).get(key)

    def content(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "suite": self.suite, "variant": self.variant,
                               "packages": sorted(self.packages), "size_mib": self.size_mib}
        if self.debs:      # only when given: a recipe without them keeps its digest
            out["debs"] = [d.content() for d in self.debs]
        if self.copies:
            out["copy"] = [{"to": c.to, "digest": c.digest} for c in self.copies]
        return out

    def digest(self) -> str:
        """sha256 of the recipe's content, the guest files and the layout version."""
        doc = {"format": FORMAT, "recipe": self.content(), "guest": guest_files_digest()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe; every error names the file, line and field."""
    path = Path(path)
    loaded = yamlconf.load(path, SCHEMA, empty="empty recipe", what="the image recipe")
    v = loaded.values
    bare = {re.split(r"[:=/]", p)[0] for p in v["packages"]}
    missing = [p for p in REQUIRED_PACKAGES if p not in bare]
    if missing:
        raise loaded.error(f"the lab's guest init needs {', '.join(missing)}", "packages")
    return Recipe(v["name"], v["suite"], v["variant"], tuple(v["packages"]), v["size_mib"],
                  debs=tuple(_deb(d, loaded, f"debs[{i}]") for i, d in enumerate(v["debs"])),
                  copies=tuple(_copy(c, loaded, f"copy[{i}]") for i, c in enumerate(v["copy"])),
                  source=path, lines=tuple(sorted(loaded.lines.items())))


def _deb(raw: dict, loaded: yamlconf.Loaded, where: str) -> DebSource:
    if bool(raw["file"]) == bool(raw["package"]):
        raise loaded.error("give exactly one of file (a local .deb) or package (from a suite)", where)
    if raw["file"]:
        path = raw["file"]
        if not path.is_file() or path.suffix != ".deb":
            raise loaded.error(f"{path} is not a .deb file", f"{where}.file")
        if raw["suite"] or raw["version"]:
            raise loaded.error("suite and version go with a package, not a file", f"{where}.file")
        return DebSource(file=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    if not raw["suite"]:
        raise loaded.error("a package needs the suite it comes from", f"{where}.suite")
    return DebSource(package=raw["package"], suite=raw["suite"], version=raw["version"])


def _copy(raw: dict, loaded: yamlconf.Loaded, where: str) -> Copy:
    source = raw["from"]
    if not (source.is_file() or source.is_dir()):
        raise loaded.error(f"{source} is neither a file nor a directory", f"{where}.from")
    try:
        digest = tree_digest(source)
    except ValueError as exc:
        raise loaded.error(str(exc), f"{where}.from") from None
    return Copy(source, raw["to"], digest)
