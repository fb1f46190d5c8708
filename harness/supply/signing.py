"""Sign a module with the kernel's own ``scripts/sign-file``, the way the vendor's build does.

For kernels that trust the signer's key (a ``kind: local`` build with the
vendor's key in its keyring): the patch is then loaded as a signed module, and
a kernel enforcing signatures accepts it. The built module in the cache is
never changed: the signed copy is stored beside the others, keyed by the
module's and the certificate's contents.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..core import atomic, diskspace, hostcmd
from ..core.errors import ConfigError, HostCommandError, InfraError
from ..core.settings import Settings
from . import modinfo
from .kernels.kernel import Kernel


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def check_key(key: Path, cert: Path, option: str = "--sign-key") -> None:
    for path, name in ((key, option), (cert, option.replace("key", "cert"))):
        if not Path(path).is_file():
            raise ConfigError(f"{path} does not exist or is not a file", field=name)


def sign(module: modinfo.Module, kernel: Kernel, key: Path, cert: Path, settings: Settings,
         hash_algorithm: str = "sha256") -> modinfo.Module:
    """A signed copy of ``module``; its ``signature`` names the certificate's signer."""
    check_key(key, cert)
    tool = kernel.build_dir / "scripts" / "sign-file"
    if not tool.is_file():
        raise InfraError(f"{kernel.name} has no scripts/sign-file in {kernel.build_dir}: cannot sign modules "
                         "for it")
    out = settings.built_modules_dir / "signed" / _digest(module.path, cert) / module.path.name
    if not out.is_file():
        work = out.with_name(f".{out.name}.{os.getpid()}.unsigned")   # racing signers each their own
        try:
            with diskspace.guard(out.parent, f"signing {module.path.name}"):
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(module.path, work)
                _sign_file(tool, hash_algorithm, key, cert, work, module, settings)
                atomic.write(out, work.read_bytes())
        finally:
            work.unlink(missing_ok=True)
    return modinfo.inspect(out, settings)


def _sign_file(tool: Path, hash_algorithm: str, key: Path, cert: Path, work: Path,
               module: modinfo.Module, settings: Settings) -> None:
    try:
        hostcmd.run([str(tool), hash_algorithm, str(key), str(cert), str(work)],
                    what=f"sign {module.path.name} with {cert.name}", timeout=settings.timeouts.host_command)
    except HostCommandError as exc:
        if diskspace.is_no_space(exc):
            raise
        raise ConfigError(f"could not sign {module.name} with {key} / {cert}: "
                          f"{exc.output.strip().splitlines()[-1] if exc.output.strip() else exc}",
                          field="--sign-key") from None
