"""Guest image recipes: ``images/*.yaml`` -> a validated ``Recipe`` and its digest.

A recipe names a Debian suite, an mmdebstrap variant and packages. It
validates through ``yamlconf`` (every error names the file, the line and the
field). The digest covers the recipe's content, the lab's guest files and the
image layout version, so any change builds a new image.
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
from .guestfs import guest_files_digest

DEFAULT_RECIPE = paths.IMAGES_DIR / "default.yaml"
FORMAT = 1     # bump when images.build() makes a different image from the same recipe and files

# what the lab's guest init cannot work without
REQUIRED_PACKAGES = ("openssh-server", "kmod", "busybox", "iproute2")
VARIANTS = ("essential", "apt", "required", "minbase", "buildd", "important", "debootstrap",
            "standard")

SCHEMA: yamlconf.Schema = {
    "name": Field(str, required=True, check=matches(r"[a-z0-9][a-z0-9._-]{0,62}",
                                                    "a valid image name (a-z, 0-9, . _ -)")),
    "suite": Field(str, required=True, check=matches(r"[a-z][a-z0-9.-]{0,62}", "a Debian suite name")),
    "variant": Field(str, default="minbase", check=lambda v: None if v in VARIANTS else (
        f"{v!r} is not an mmdebstrap variant that installs packages ({', '.join(VARIANTS)})")),
    "packages": Field(list, default=[], unique=True, items=Field(str, check=matches(
        r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+|/[a-z0-9.-]+)?",
        "a Debian package name"))),
    "size_mib": Field(int, default=2048, check=lambda v: None if 512 <= v <= 65536 else (
        f"{v} is out of range (512..65536 MiB)")),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    size_mib: int
    source: Optional[Path] = field(default=None, compare=False)
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    def line_of(self, key: str) -> Optional[int]:
        return dict(self.lines).get(key)

    def content(self) -> dict[str, Any]:
        return {"name": self.name, "suite": self.suite, "variant": self.variant,
                "packages": sorted(self.packages), "size_mib": self.size_mib}

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
                  source=path, lines=tuple(sorted(loaded.lines.items())))
