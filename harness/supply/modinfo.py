"""A kernel module's identity (``modinfo``) and whether it fits a kernel.

A module only loads into the release its vermagic names; ``check_compatible``
says so before anything is loaded, naming both releases.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core import hostcmd
from ..core.errors import ConfigError, HarnessError, HostCommandError
from ..core.settings import Settings
from .kernels.kernel import Kernel


class CompatError(HarnessError):
    """A prebuilt module does not fit the kernel; the message names both releases."""

    def __init__(self, message: str, *, module_release: str, kernel_release: str):
        self.module_release, self.kernel_release = module_release, kernel_release
        super().__init__(message)


@dataclass(frozen=True)
class Signature:
    """A module's appended signature, as modinfo reads it."""
    signer: str
    key_id: str
    hash_algorithm: str

    def describe(self) -> str:
        return f"signed by {self.signer or '(no signer name)'} (key {self.key_id or '?'}, {self.hash_algorithm or '?'})"


def signature(info: dict[str, str]) -> Optional[Signature]:
    """The signature in modinfo's fields; None for an unsigned module."""
    if not info.get("signer") and not info.get("sig_id") and not info.get("sig_key"):
        return None
    return Signature(info.get("signer", ""), info.get("sig_key", ""), info.get("sig_hashalgo", ""))


@dataclass(frozen=True)
class Module:
    path: Path               # the .ko
    name: str                # modinfo name (else the file stem, '-' -> '_')
    vermagic: str
    livepatch: bool          # modinfo livepatch == "Y"
    kernel_release: str      # first word of vermagic
    toolchain: Optional[str] = None   # what built it ("host-gcc-12", "trixie-gcc-14"); None: prebuilt
    signature: Optional[Signature] = None   # None: unsigned (the lab's own builds are, unless signed)

    def describe_signature(self) -> str:
        return self.signature.describe() if self.signature else "unsigned"


def vermagic_release(vermagic: str) -> str:
    """``"6.1.0-56-amd64 SMP preempt mod_unload modversions "`` -> ``"6.1.0-56-amd64"``."""
    words = vermagic.split()
    return words[0] if words else ""


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
        said = next((line.strip() for line in exc.output.splitlines() if "ERROR" in line), "")
        raise ConfigError(f"{ko} is not a kernel module (modinfo found no module information"
                          f"{': ' + said[:160] if said else ''})", field="ko") from None
    info = parse_modinfo(text)
    stem = ko.name.split(".ko")[0]
    vermagic = info.get("vermagic", "")
    return Module(path=ko, name=info.get("name") or stem.replace("-", "_"), vermagic=vermagic,
                  livepatch=info.get("livepatch") == "Y", kernel_release=vermagic_release(vermagic),
                  signature=signature(info))


def check_compatible(module: Module, kernel: Kernel) -> None:
    """Raise ``CompatError`` unless ``module`` was built for ``kernel``'s release."""
    if module.kernel_release != kernel.release:
        raise CompatError(compat_message(module.name, module.kernel_release, module.vermagic,
                                         kernel.name, kernel.release),
                          module_release=module.kernel_release, kernel_release=kernel.release)


def require_livepatch(module: Module, source: Optional[str] = None, field: str = "patch") -> None:
    """A module that is not a livepatch at all is bad input (``ConfigError``), not a patch that failed."""
    if not module.livepatch:
        raise ConfigError(f"{module.name} ({module.path}) is not a livepatch module "
                          f"(modinfo livepatch != Y)", source=source, field=field)
