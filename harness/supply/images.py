"""Guest images: recipe -> cached base image (content-hashed) -> per-run overlay.

A recipe (``images/*.yaml``) names a Debian suite, an mmdebstrap variant and
packages. ``build()`` turns it into a raw ext4 filesystem (no partition table;
the guest mounts it as ``/dev/vda`` through a qcow2 overlay) with:

- the lab's init (``images/guest/``): busybox init as PID 1, a static network
  on QEMU user networking, sshd, "livepatch-lab: ready" on the console;
- per-image SSH keys: a pinned ECDSA host key and a client key for root.

Images live in ``<cache>/images/<name>-<digest[:12]>/`` (``base.img`` 0444,
``client_key``, ``host_key.pub``, ``manifest.json`` written last). The digest
covers the recipe's content, the guest files and the layout version, so any
change builds a new image and an old one is never modified.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..core import hostcmd, paths
from ..core.errors import ConfigError, HostCommandError, InfraError
from ..core.locks import file_lock
from ..core.settings import Settings
from .bootfiles import GUEST_DIR, mke2fs
from .mirror import debian_mirrors

log = logging.getLogger(__name__)

DEFAULT_RECIPE = paths.IMAGES_DIR / "default.yaml"
FORMAT = 1     # bump when build() makes a different image from the same recipe and files

# guest file in images/guest/ -> (path in the image, mode)
GUEST_FILES: dict[str, tuple[str, int]] = {
    "lab-init": ("/usr/lib/livepatch-lab/init", 0o755),
    "rcS": ("/usr/lib/livepatch-lab/rcS", 0o755),
    "ready": ("/usr/lib/livepatch-lab/ready", 0o755),
    "shutdown": ("/usr/lib/livepatch-lab/shutdown", 0o755),
    "inittab": ("/etc/inittab", 0o644),
    "sshd_config": ("/etc/ssh/sshd_config", 0o644),
}
# what the lab's guest init cannot work without
REQUIRED_PACKAGES = ("openssh-server", "kmod", "busybox", "iproute2")
# busybox applets linked into the image when the image has no such command
BUSYBOX_LINKS = ("poweroff", "reboot", "halt")
VARIANTS = ("essential", "apt", "required", "minbase", "buildd", "important", "debootstrap",
            "standard")
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/doc/*", "/usr/share/lintian/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SUITE = re.compile(r"^[a-z][a-z0-9.-]{0,62}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+|/[a-z0-9.-]+)?$")


# recipes -------------------------------------------------------------------------
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


def guest_files_digest(guest_dir: Optional[Path] = None) -> dict[str, str]:
    guest_dir = GUEST_DIR if guest_dir is None else guest_dir
    return {name: f"{target}:{mode:o}:{hashlib.sha256((guest_dir / name).read_bytes()).hexdigest()}"
            for name, (target, mode) in sorted(GUEST_FILES.items())}


_FIELDS: dict[str, type] = {"name": str, "suite": str, "variant": str, "packages": list,
                            "size_mib": int}
_DEFAULTS: dict[str, Any] = {"variant": "minbase", "packages": [], "size_mib": 2048}


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe; every error names the file, line and field."""
    import yaml
    from yaml.constructor import SafeConstructor

    from ..core.yamlconf import compose

    path = Path(path)
    src = str(path)
    root = compose(path, empty="empty recipe", what="the image recipe")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("a recipe is a mapping of fields", source=src, line=root.start_mark.line + 1)

    constructor = SafeConstructor()
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    nodes: dict[str, Any] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = constructor.construct_object(key_node, deep=True)
        if not isinstance(key, str) or key not in _FIELDS:
            raise ConfigError(f"unknown field (known: {', '.join(_FIELDS)})", source=src, line=line,
                              field=str(key))
        if key in values:
            raise ConfigError("field given twice", source=src, line=line, field=key)
        value = constructor.construct_object(value_node, deep=True)
        want = _FIELDS[key]
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"must be {_kind(want)}, not {_kind(type(value))} ({value!r})",
                              source=src, line=value_node.start_mark.line + 1, field=key)
        values[key], lines[key], nodes[key] = value, line, value_node

    def err(message: str, key: str, line: Optional[int] = None) -> ConfigError:
        return ConfigError(message, source=src, line=line or lines.get(key), field=key)

    for key in ("name", "suite"):
        if key not in values:
            raise ConfigError("missing required field", source=src, field=key)
    if not _NAME.match(values["name"]):
        raise err(f"{values['name']!r} is not a valid image name (a-z, 0-9, . _ -)", "name")
    if not _SUITE.match(values["suite"]):
        raise err(f"{values['suite']!r} is not a Debian suite name", "suite")
    variant = values.get("variant", _DEFAULTS["variant"])
    if variant not in VARIANTS:
        raise err(f"{variant!r} is not an mmdebstrap variant that installs packages "
                  f"({', '.join(VARIANTS)})", "variant")
    packages: list[str] = values.get("packages", _DEFAULTS["packages"])
    for i, pkg in enumerate(packages):
        item_line = nodes["packages"].value[i].start_mark.line + 1
        if not isinstance(pkg, str) or not _PACKAGE.match(pkg):
            raise err(f"item {i + 1}: {pkg!r} is not a Debian package name", "packages", item_line)
    if len(set(packages)) != len(packages):
        dup = sorted({p for p in packages if packages.count(p) > 1})
        raise err(f"listed twice: {', '.join(dup)}", "packages")
    bare = {re.split(r"[:=/]", p)[0] for p in packages}
    missing = [p for p in REQUIRED_PACKAGES if p not in bare]
    if missing:
        raise err(f"the lab's guest init needs {', '.join(missing)}", "packages")
    size = values.get("size_mib", _DEFAULTS["size_mib"])
    if not 512 <= size <= 65536:
        raise err(f"{size} is out of range (512..65536 MiB)", "size_mib")
    return Recipe(values["name"], values["suite"], variant, tuple(packages), size,
                  source=path, lines=tuple(sorted(lines.items())))


def _kind(t: type) -> str:
    return {str: "a string", int: "an integer", list: "a list", dict: "a mapping",
            bool: "a boolean", float: "a number", type(None): "empty"}.get(t, t.__name__)


# images ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    name: str
    path: Path          # raw ext4 base image, 0444, never modified
    client_key: Path    # private key for root (paramiko-loadable, PEM)
    host_key: str       # the guest's host key: "ecdsa-sha2-nistp256 AAAA... lab"
    digest: str
    user: str = "root"


def image_dir(recipe: Recipe, settings: Settings) -> Path:
    return settings.images_dir / f"{recipe.name}-{recipe.digest()[:12]}"


def cached(recipe: Recipe, settings: Settings) -> Optional[Image]:
    """The built image for ``recipe``, or None."""
    return _load(image_dir(recipe, settings), recipe.digest())


def _load(directory: Path, digest: str) -> Optional[Image]:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("digest") != digest:
        return None
    base, key, pub = directory / "base.img", directory / "client_key", directory / "host_key.pub"
    if not (base.is_file() and key.is_file() and pub.is_file()):
        return None
    return Image(manifest["name"], base, key, pub.read_text().strip(), digest)


def build(recipe: Recipe, settings: Settings, *, force: bool = False) -> Image:
    """The image for ``recipe``: from the cache, or built (file-locked, atomic)."""
    digest = recipe.digest()
    final = image_dir(recipe, settings)
    if not force:
        found = _load(final, digest)
        if found:
            return found
    with file_lock(settings.locks_dir / f"image-{final.name}.lock", timeout=settings.timeouts.lock,
                   what=f"image {final.name}"):
        if not force:
            found = _load(final, digest)
            if found:
                return found
        if os.geteuid() != 0:
            raise InfraError("building a guest image needs root (mmdebstrap installs packages "
                             "as root in a directory); run `livepatch-lab image build` as root once")
        for stale in settings.images_dir.glob(f".build-{final.name}-*"):
            log.info("removing a dead build: %s", stale)
            remove_tree(stale, settings)
        work = settings.images_dir / f".build-{final.name}-{os.getpid()}"
        try:
            work.mkdir(parents=True)
            started = time.monotonic()
            out = _build(recipe, digest, work, settings)
            elapsed = time.monotonic() - started
            if final.exists():
                os.rename(final, work / "previous")
            os.rename(out, final)
            log.info("image %s built in %.0fs: %s", final.name, elapsed, final / "base.img")
        finally:
            remove_tree(work, settings)
    image = _load(final, digest)
    if image is None:
        raise InfraError(f"image {final} is incomplete right after its build")
    return image


def create_overlay(image: Image, path: Path, settings: Optional[Settings] = None) -> Path:
    """A throwaway qcow2 overlay on the base image (which stays untouched)."""
    timeout = (settings or Settings()).timeouts.host_command
    path = Path(path)
    hostcmd.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                 "-b", str(image.path.resolve()), str(path)],
                what="create the guest's overlay", timeout=timeout)
    return path


# building -----------------------------------------------------------------------------
def _build(recipe: Recipe, digest: str, work: Path, settings: Settings) -> Path:
    tree, out = work / "rootfs", work / "image"
    out.mkdir()
    mirror = debian_mirrors(settings.debian_mirror).archive
    log.info("image %s: installing %s %s with %s (mmdebstrap)", recipe.name, recipe.suite,
             recipe.variant, ", ".join(recipe.packages))
    t0 = time.monotonic()
    _mmdebstrap(recipe, tree, mirror, settings)
    log.info("image %s: packages installed in %.0fs; customising", recipe.name, time.monotonic() - t0)
    host_pub, client = customise(tree, out)
    _check_busybox(tree, settings)

    used = tree_usage(tree)
    size = recipe.size_mib * 2**20
    if used * 1.15 + 64 * 2**20 > size:
        raise ConfigError(f"the root filesystem needs about {int(used * 1.15) // 2**20 + 64} MiB, "
                          f"more than size_mib {recipe.size_mib}",
                          source=str(recipe.source) if recipe.source else None,
                          line=recipe.line_of("size_mib"), field="size_mib")
    log.info("image %s: writing %d MiB ext4 (%d MiB used)", recipe.name, recipe.size_mib,
             used // 2**20)
    base = out / "base.img"
    mke2fs(tree, base, size, "lab-root", settings, uuid=str(uuid.UUID(digest[:32])))
    base.chmod(0o444)
    manifest = {"format": FORMAT, "name": recipe.name, "digest": digest, "recipe": recipe.content(),
                "host_key": host_pub, "client_key_public": client,
                "used_bytes": used, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - t0, 1)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.rename(tmp, out / "manifest.json")
    return out


def _mmdebstrap(recipe: Recipe, tree: Path, mirror: str, settings: Settings) -> None:
    cmd = ["mmdebstrap", "--mode=root", f"--variant={recipe.variant}", "--components=main",
           "--aptopt=Acquire::Languages \"none\""]
    if recipe.packages:
        cmd.append("--include=" + ",".join(recipe.packages))
    cmd += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    cmd += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
    cmd += [recipe.suite, str(tree), mirror]
    try:
        hostcmd.run(cmd, what=f"install the {recipe.name} image's packages",
                    timeout=settings.timeouts.image_build,
                    env={**os.environ, "LC_ALL": "C.UTF-8"})
    except HostCommandError as exc:
        m = re.search(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation "
                      r"candidate", exc.output)
        if m:
            raise ConfigError(f"{recipe.suite} has no package {m.group(1) or m.group(2)}",
                              source=str(recipe.source) if recipe.source else None,
                              line=recipe.line_of("packages"), field="packages") from exc
        raise


def guest_path(tree: Path, path: str) -> Path:
    """Where the guest's ``path`` is in ``tree``: symlinks on the way are resolved as the
    guest would see them (an absolute link stays inside the tree), the last component is not."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = tree.joinpath(*done, part)
        if parts and here.is_symlink():
            hops += 1
            if hops > 40:
                raise InfraError(f"too many symlinks resolving {path} in {tree}")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return tree.joinpath(*done)


def write_file(tree: Path, path: str, data: Union[bytes, str], mode: int,
               uid: int = 0, gid: int = 0) -> Path:
    """Create (or replace) the guest file ``path``; never writes through a symlink."""
    target = guest_path(tree, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, raw)
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    return target


def _public_line(key: Any, comment: str) -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


def _private_pem(key: Any) -> str:
    import io
    buf = io.StringIO()
    key.write_private_key(buf)
    return buf.getvalue()


def customise(tree: Path, out: Path, guest_dir: Optional[Path] = None) -> tuple[str, str]:
    """Make the installed tree a lab guest. Writes the client key and the host's public key
    into ``out``; returns (host public key line, client public key line)."""
    import paramiko

    guest_dir = GUEST_DIR if guest_dir is None else guest_dir
    for name, (target, mode) in GUEST_FILES.items():
        write_file(tree, target, (guest_dir / name).read_bytes(), mode)

    # keys: one pinned host key, one client key, both per image
    ssh_dir = guest_path(tree, "/etc/ssh")
    for old in ssh_dir.glob("ssh_host_*"):
        old.unlink()
    for conf in guest_path(tree, "/etc/ssh/sshd_config.d").glob("*.conf"):
        conf.unlink()
    host = paramiko.ECDSAKey.generate(bits=256)
    client = paramiko.ECDSAKey.generate(bits=256)
    host_pub = _public_line(host, "root@lab")
    client_pub = _public_line(client, "livepatch-lab")
    write_file(tree, "/etc/ssh/ssh_host_ecdsa_key", _private_pem(host), 0o600)
    write_file(tree, "/etc/ssh/ssh_host_ecdsa_key.pub", host_pub + "\n", 0o644)
    root_ssh = guest_path(tree, "/root/.ssh")
    root_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    root_ssh.chmod(0o700)
    write_file(tree, "/root/.ssh/authorized_keys", client_pub + "\n", 0o600)
    if os.geteuid() == 0:
        os.chown(root_ssh, 0, 0)
    key_file = out / "client_key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_private_pem(client))
    (out / "client_key.pub").write_text(client_pub + "\n")
    (out / "host_key.pub").write_text(host_pub + "\n")

    # system identity and mounts
    write_file(tree, "/etc/hostname", "lab\n", 0o644)
    write_file(tree, "/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tlab\n"
                                   "::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644)
    write_file(tree, "/etc/fstab", "# livepatch-lab: the initramfs mounts these\n"
                                   "/dev/vda\t/\text4\trw\t0\t0\n"
                                   "/dev/vdb\t/lib/modules\text4\tro\t0\t0\n", 0o644)
    write_file(tree, "/etc/resolv.conf", "# livepatch-lab: the guest has no DNS\n", 0o644)
    mtab = guest_path(tree, "/etc/mtab")
    if not mtab.is_symlink():
        mtab.unlink(missing_ok=True)
        os.symlink("../proc/self/mounts", mtab)
    guest_path(tree, "/lib/modules").mkdir(parents=True, exist_ok=True)

    # poweroff & co. through busybox init, where nothing else provides them
    for cmd in BUSYBOX_LINKS:
        found = [guest_path(tree, f"{d}/{cmd}") for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")]
        if not any(p.exists() or p.is_symlink() for p in found):
            os.symlink("/bin/busybox", found[0])

    # sshd without PAM refuses a locked ("!...") account even with a key
    shadow = guest_path(tree, "/etc/shadow")
    if shadow.is_file():
        lines = shadow.read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            fields = line.split(":")
            if fields[0] == "root" and len(fields) > 1 and fields[1].startswith("!"):
                fields[1] = "*"
                lines[i] = ":".join(fields)
        shadow.write_text("".join(lines))
    return host_pub, client_pub


def _check_busybox(tree: Path, settings: Settings) -> None:
    """The image's busybox must provide init and poweroff (the guest's PID 1 and its end)."""
    try:
        listing = hostcmd.run(["chroot", str(tree), "/bin/busybox", "--list"],
                              what="list the image's busybox applets",
                              timeout=settings.timeouts.host_command)
    except HostCommandError as exc:
        raise InfraError(f"the image has no working /bin/busybox (the guest's init): {exc}") from exc
    missing = {"init", "poweroff"} - set(listing.split())
    if missing:
        raise InfraError(f"the image's busybox lacks {', '.join(sorted(missing))}")


def tree_usage(tree: Path) -> int:
    """Bytes the tree takes in 4 KiB blocks (one block per directory and symlink)."""
    total = 0
    for top, dirs, files in os.walk(tree):
        total += 4096 * (1 + len(files))  # inodes and small files
        for f in files:
            try:
                st = os.lstat(os.path.join(top, f))
            except OSError:
                continue
            total += st.st_size
    return total


# cleanup --------------------------------------------------------------------------------
def _mount_points() -> list[str]:
    points = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return points
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def _mounts_under(path: Path) -> list[str]:
    base = os.path.realpath(path)
    return [m for m in _mount_points() if m == base or m.startswith(base + "/")]


def remove_tree(path: Path, settings: Settings) -> None:
    """Remove a build directory, first unmounting what a killed mmdebstrap left mounted in it.
    Never deletes across a mount point: if one stays, it raises instead."""
    if not (path.exists() or path.is_symlink()):
        return
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        try:
            hostcmd.run(["umount", "-l", point], what="unmount a dead build's mount",
                        timeout=settings.timeouts.host_command)
        except InfraError as exc:
            log.warning("%s", exc)
    left = _mounts_under(path)
    if left:
        raise InfraError(f"cannot remove {path}: still mounted below it: {', '.join(left)}")
    shutil.rmtree(path)


__all__ = ["DEFAULT_RECIPE", "Image", "Recipe", "build", "cached", "create_overlay", "load_recipe"]
