"""What depmod wrote about a kernel's modules, and the order to load some of them in.

``modules.dep``, ``modules.builtin``, ``modules.softdep``, ``modules.alias`` and
``modules.builtin.modinfo`` -> a ``ModuleIndex`` that resolves names and aliases
to loadable modules and orders a set of them after their dependencies, as
modprobe would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..core.errors import InfraError

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str) -> str:
    """``kernel/fs/ext4/ext4.ko.xz`` -> ``ext4`` (dashes as underscores, like the kernel)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES[::-1]:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass(frozen=True)
class ModuleIndex:
    """What depmod wrote about one kernel: paths, hard and soft dependencies, aliases."""
    paths: Mapping[str, str]                  # name -> path relative to the modules dir
    deps: Mapping[str, tuple[str, ...]]       # name -> hard dependencies, as modules.dep lists them
    builtin: frozenset[str]
    softdeps: Mapping[str, tuple[str, ...]]   # name -> "pre:" names or aliases
    aliases: Mapping[str, tuple[str, ...]]    # exact alias -> module names
    builtin_aliases: frozenset[str]

    @classmethod
    def parse(cls, dep: str, builtin: str = "", softdep: str = "", alias: str = "",
              builtin_modinfo: bytes = b"") -> "ModuleIndex":
        paths: dict[str, str] = {}
        deps: dict[str, tuple[str, ...]] = {}
        for line in dep.splitlines():
            if ":" not in line:
                continue
            path, rest = line.split(":", 1)
            name = module_name(path.strip())
            paths[name] = path.strip()
            deps[name] = tuple(module_name(p) for p in rest.split())
        soft: dict[str, list[str]] = {}
        for line in softdep.splitlines():
            words = line.split()
            if len(words) < 3 or words[0] != "softdep":
                continue
            pre, mode = [], None
            for word in words[2:]:
                if word.endswith(":"):
                    mode = word[:-1]
                elif mode == "pre":
                    pre.append(word)
            soft.setdefault(module_name(words[1]), []).extend(pre)
        aliases: dict[str, list[str]] = {}
        for line in alias.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
                aliases.setdefault(words[1], []).append(module_name(words[2]))
        builtin_aliases = set()
        for entry in builtin_modinfo.split(b"\0"):
            key, _, value = entry.decode(errors="replace").partition("=")
            if key.endswith(".alias") and value:
                builtin_aliases.add(value)
        return cls(paths, deps,
                   frozenset(module_name(p) for p in builtin.split()),
                   {k: tuple(v) for k, v in soft.items()},
                   {k: tuple(v) for k, v in aliases.items()},
                   frozenset(builtin_aliases))

    @classmethod
    def load(cls, modules_dir: Path) -> "ModuleIndex":
        dep = modules_dir / "modules.dep"
        if not dep.is_file():
            raise InfraError(f"{dep} is missing: the kernel's modules are not indexed "
                             f"(run depmod -b <root> <release>)")

        def text(name: str) -> str:
            p = modules_dir / name
            return p.read_text(errors="replace") if p.is_file() else ""

        modinfo = modules_dir / "modules.builtin.modinfo"
        return cls.parse(dep.read_text(errors="replace"), text("modules.builtin"),
                         text("modules.softdep"), text("modules.alias"),
                         modinfo.read_bytes() if modinfo.is_file() else b"")

    def _provider(self, want: str) -> Optional[str]:
        """The loadable module for a name or an alias; None if built in or unknown."""
        name = module_name(want)
        if name in self.builtin or want in self.builtin_aliases:
            return None
        if name in self.paths:
            return name
        candidates = self.aliases.get(want, ())
        # the generic implementation loads on any CPU (crc32c_generic, not crc32c_intel)
        for cand in sorted(candidates, key=lambda c: (not c.endswith("_generic"), c)):
            if cand in self.paths:
                return cand
        return None

    def load_order(self, wanted: Sequence[str],
                   optional: Sequence[str] = ()) -> list[tuple[str, bool]]:
        """``(module, required)`` in insmod order: every module after its dependencies.

        Built-in modules are skipped. ``wanted`` and their hard dependencies
        (modules.dep) are required; soft "pre:" dependencies (modules.softdep,
        e.g. ext4's crypto-crc32c) come first and may fail, as may ``optional``
        modules and what only they need. A wanted module that is neither built
        in nor loadable is an ``InfraError``; a missing optional one is skipped.
        """
        order: list[tuple[str, bool]] = []
        done: dict[str, int] = {}   # name -> index in order
        active: list[str] = []

        def visit(name: str, required: bool) -> None:
            if name in done:
                if required and not order[done[name]][1]:   # needed after all: so is its closure
                    order[done[name]] = (name, True)
                    for dep in self.deps.get(name, ()):
                        if dep in done:
                            visit(dep, True)
                return
            if name in active:
                raise InfraError(f"module dependency cycle: {' -> '.join(active + [name])}")
            active.append(name)
            for soft in self.softdeps.get(name, ()):
                provider = self._provider(soft)
                if provider and provider != name:
                    visit(provider, False)
            # modprobe loads modules.dep's list from the end: deepest dependency first
            for dep in reversed(self.deps.get(name, ())):
                if dep not in self.builtin:
                    if dep not in self.paths:
                        raise InfraError(f"{name} needs {dep}, which modules.dep does not list")
                    visit(dep, required)
            active.pop()
            done[name] = len(order)
            order.append((name, required))

        for want in wanted:
            name = module_name(want)
            if name in self.builtin:
                continue
            if name not in self.paths:
                raise InfraError(f"module {want} is neither built in nor in modules.dep "
                                 f"(a kernel without it cannot mount the lab's root)")
            visit(name, True)
        for want in optional:
            name = module_name(want)
            if name in self.paths and name not in self.builtin:
                visit(name, False)
        return order
