"""What went into a run and where it ran: the modules, the kernel, the image, the lab, the host.

Facts the run's folder does not hold are read at report time: the modules' identity
from the .ko files its ``built`` event names (``modinfo``; a module built here also
has its build manifest, which names the source directory), the image from its
recipe's digest, the lab's version and commit, the host's QEMU.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Optional

from ....core import hostcmd, paths
from ....core.errors import HarnessError
from ....core.settings import Settings
from ....core.version import __version__
from ....machine.backends.qemu.backend import binary_version
from ....supply import images, kbuild, modinfo, recipes
from ....supply.apt import sha256_file


def signature(info: dict[str, str]) -> Optional[dict[str, str]]:
    """A module's signature from its modinfo fields; None when it carries none."""
    sig = modinfo.signature(info)
    if sig is None:
        return None
    return {"signer": sig.signer, "key_id": sig.key_id, "hash_algorithm": sig.hash_algorithm,
            "type": info.get("sig_id", "")}


def module_facts(path: str, role: str, settings: Settings, given: Optional[str] = None) -> dict[str, Any]:
    """Name, sha256, vermagic, signature and source of one module the run loaded: the source
    is what the run says it was given, else the directory its build manifest names (where
    these exact source files were first built from), else the .ko itself."""
    ko = Path(path)
    facts: dict[str, Any] = {"role": role, "path": str(ko), "file": ko.name}
    if not ko.is_file():
        facts["missing"] = "the module file is gone (a pruned cache?)"
        return facts
    try:
        info = modinfo.parse_modinfo(hostcmd.run(["modinfo", "-0", str(ko)], what=f"modinfo {ko.name}",
                                               timeout=settings.timeouts.host_command))
    except HarnessError as exc:
        info = {}
        facts["modinfo_error"] = str(exc).splitlines()[0]
    facts.update(name=info.get("name") or ko.name.split(".ko")[0].replace("-", "_"),
                 sha256=sha256_file(ko), size=ko.stat().st_size, vermagic=info.get("vermagic", ""),
                 signature=signature(info), source=str(ko), built_here=False)
    try:   # a module this lab built sits beside its build manifest
        made = json.loads((ko.parent / kbuild.MANIFEST).read_text())
    except (OSError, ValueError):
        made = {}
    if made.get("ko") == ko.name and made.get("source"):
        facts.update(source=made["source"], built_here=True, toolchain=made.get("toolchain_version", ""),
                     source_files=made.get("files", {}))
    if made.get("ko") == ko.name and made.get("diff_sha256"):   # built from a source diff
        facts.update(diff_sha256=made["diff_sha256"], kernel_source=made.get("kernel_source", ""),
                     toolchain=made.get("builder_version", ""), builder_log=str(ko.parent / made.get("log", "")),
                     source_files={})
    if given:
        facts["source"] = given
    return facts


def _git_commit(settings: Settings) -> str:
    if not (paths.TOP / ".git").exists():
        return "unknown (not a git checkout)"
    git = ["git", "-C", str(paths.TOP)]
    try:
        head = hostcmd.run([*git, "rev-parse", "HEAD"], what="git rev-parse",
                           timeout=settings.timeouts.host_command).strip()
        dirty = hostcmd.run([*git, "status", "--porcelain", "--untracked-files=no"], what="git status",
                            timeout=settings.timeouts.host_command).strip()
    except HarnessError as exc:
        return f"unknown ({str(exc).splitlines()[0]})"
    return head + (" (with uncommitted changes)" if dirty else "")


def _qemu_version(settings: Settings) -> str:
    try:
        line = binary_version(settings.qemu_binary, settings.timeouts.host_command)[1]
    except (HarnessError, OSError) as exc:
        return f"unknown ({str(exc).splitlines()[0] if str(exc) else 'no output'})"
    return line or "unknown (no output)"


def image_facts(settings: Settings) -> dict[str, Any]:
    """The guest image every run boots: its recipe and the digest it is cached under."""
    recipe = recipes.load_recipe(recipes.DEFAULT_RECIPE)
    return {"recipe": recipe.name, "recipe_file": str(recipes.DEFAULT_RECIPE), "digest": recipe.digest(),
            "content": recipe.content(), "cached": images.cached(recipe, settings) is not None}


def environment(settings: Settings) -> dict[str, Any]:
    """The lab and the host that made the report (a run's accelerator, backend and URI are
    the run's own: its ``booted`` event)."""
    return {"lab_version": __version__, "git_commit": _git_commit(settings), "host": platform.node(),
            "host_kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
            "host_cpus": os.cpu_count() or 0, "python": platform.python_version(),
            "qemu": _qemu_version(settings), "image": image_facts(settings),
            "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
