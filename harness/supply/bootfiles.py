"""Per-kernel boot files: a small initramfs and a read-only modules disk.

One base image serves every kernel. What ties a kernel to it is made here,
once per kernel, and cached:

- the initramfs: the host's static busybox, this kernel's disk drivers
  (virtio_pci, virtio_blk, ext4 and what they need, unless built in) and the
  lab's ``/init`` (``images/guest/initramfs-init``), which mounts
  ``lab.root`` and ``lab.modules`` and hands over to the image's init;
- the modules disk: an ext4 filesystem holding ``<release>/`` (the kernel's
  ``lib/modules/<release>``), mounted read-only at ``/lib/modules`` in the
  guest, so ``modprobe`` finds every module of the booted kernel.

The cache key covers the release, ``modules.dep``/``modules.builtin`` and the
init script, so a rebuilt kernel or a changed script makes new files.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from ..core import cacheentry, hostcmd, paths
from ..core.errors import InfraError
from ..core.settings import Settings
from .cpio import Cpio
from .mke2fs import mke2fs
from .modindex import ModuleIndex

log = logging.getLogger(__name__)

INITRAMFS_INIT = paths.GUEST_DIR / "initramfs-init"
FORMAT = 1                     # bump when what prepare() makes changes
ROOT_MODULES = ("virtio_pci", "virtio_blk", "ext4")      # the root disk: required
# Loaded by the initramfs too, where insmod of the static busybox is much cheaper
# than the image's modprobe; a kernel or machine without them still boots.
EXTRA_MODULES = ("virtio_net", "virtio_rng")
BUSYBOX_APPLETS = ("sh", "mount", "umount", "insmod", "mkdir", "switch_root", "sleep", "cat",
                   "uname", "findfs", "ls", "dmesg", "ln")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
BLOCK = 4096


class KernelLike(Protocol):
    # read-only, so that a frozen dataclass (Kernel) matches
    @property
    def name(self) -> str: ...
    @property
    def release(self) -> str: ...
    @property
    def modules_dir(self) -> Path: ...


@dataclass(frozen=True)
class BootFiles:
    initramfs: Path      # gzip'ed newc cpio
    modules_disk: Path   # raw ext4, <release>/ at its root; attach read-only
    release: str


# host tools ----------------------------------------------------------------------
def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return False
        is64, little = head[4] == 2, head[5] == 1
        end = "<" if little else ">"
        if is64:
            phoff, = struct.unpack(end + "Q", head[32:40])
            phentsize, phnum = struct.unpack(end + "HH", head[54:58])
        else:
            phoff, = struct.unpack(end + "I", head[28:32])
            phentsize, phnum = struct.unpack(end + "HH", head[42:46])
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack(end + "I", table[i * phentsize: i * phentsize + 4])
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> Path:
    found = [Path(p) for p in (shutil.which("busybox"), *BUSYBOX_CANDIDATES) if p and Path(p).is_file()]
    if not found:
        raise InfraError("busybox is not installed: the initramfs needs a static busybox "
                         "(apt-get install busybox-static)")
    for path in found:
        if is_static_elf(path):
            return path
    raise InfraError(f"{found[0]} is dynamically linked: the initramfs needs a static busybox "
                     f"(apt-get install busybox-static)")


def read_module(path: Path, settings: Settings) -> bytes:
    """A module's plain ELF bytes (busybox insmod cannot decompress)."""
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        with tempfile.TemporaryDirectory(prefix="lab-zst-") as tmp:
            out = Path(tmp) / "m.ko"
            hostcmd.run(["zstd", "-q", "-d", "-f", "-o", out, path], what=f"decompress {name}",
                        timeout=settings.timeouts.host_command)
            return out.read_bytes()
    return path.read_bytes()


# the modules disk ---------------------------------------------------------------
SKIP_TOP = {"build", "source"}   # links to kbuild trees: meaningless in the guest


def stage_modules(modules_dir: Path, dest: Path) -> tuple[int, int]:
    """Mirror ``modules_dir`` into ``dest`` (hard links where possible, else copies).

    Returns (bytes the files take in 4 KiB blocks, number of entries).
    """
    used, entries = 0, 0
    dest.mkdir(parents=True)
    for top, dirs, files in os.walk(modules_dir):
        rel = Path(top).relative_to(modules_dir)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in SKIP_TOP]
            files = [f for f in files if f not in SKIP_TOP]
        for d in list(dirs):
            src = Path(top) / d
            if src.is_symlink():          # os.walk lists a link to a directory as a directory
                dirs.remove(d)
                files.append(d)
                continue
            (dest / rel / d).mkdir()
            entries += 1
            used += BLOCK
        for f in files:
            src, dst = Path(top) / f, dest / rel / f
            entries += 1
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            used += -(-src.stat().st_size // BLOCK) * BLOCK
    return used, entries


def modules_disk_size(used: int) -> int:
    """Content + 10% + 16 MiB for metadata, rounded up to a MiB."""
    size = int(used * 1.10) + 16 * 2**20
    return -(-size // 2**20) * 2**20


# putting it together ------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(release: str, modules_dir: Path, init_script: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"format={FORMAT}\nrelease={release}\nwanted={','.join(ROOT_MODULES)}\n"
             f"optional={','.join(EXTRA_MODULES)}\n".encode())
    for name in ("modules.dep", "modules.builtin", "modules.softdep"):
        p = modules_dir / name
        h.update(f"{name}={_sha(p.read_bytes()) if p.is_file() else '-'}\n".encode())
    h.update(f"init={_sha(init_script)}\n".encode())
    return f"{release}-{h.hexdigest()[:16]}"


def build_initramfs(index: ModuleIndex, modules_dir: Path, busybox: Path, init_script: bytes,
                    settings: Settings) -> tuple[bytes, list[tuple[str, bool]]]:
    """The gzip'ed cpio, and the modules it loads in order."""
    order = index.load_order(ROOT_MODULES, EXTRA_MODULES)
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lab", "lab/modules"):
        archive.dir(d)
    archive.chardev("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    listing = []
    for name, required in order:
        data = read_module(modules_dir / index.paths[name], settings)
        if data[:4] != b"\x7fELF":
            raise InfraError(f"{modules_dir / index.paths[name]} is not an ELF module after "
                             f"decompression")
        archive.file(f"lab/modules/{name}.ko", data)
        listing.append(f"{name}.ko {'required' if required else 'optional'}\n")
    archive.file("lab/modules.list", "".join(listing).encode())
    archive.file("init", init_script, 0o755)
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0), order


def _check_applets(busybox: Path, settings: Settings) -> None:
    have = set(hostcmd.run([busybox, "--list"], what="list busybox applets",
                           timeout=settings.timeouts.host_command).split())
    missing = [a for a in BUSYBOX_APPLETS if a not in have]
    if missing:
        raise InfraError(f"{busybox} lacks applets the initramfs needs: {', '.join(missing)}")


def cached(kernel: KernelLike, settings: Settings) -> Optional[BootFiles]:
    modules_dir = Path(kernel.modules_dir)
    key = cache_key(kernel.release, modules_dir, INITRAMFS_INIT.read_bytes())
    return _cached(settings.bootfiles_dir / key, kernel.release)


def _cached(final: Path, release: str) -> Optional[BootFiles]:
    if (final / "manifest.json").is_file():
        return BootFiles(final / "initramfs.cpio.gz", final / "modules.img", release)
    return None


def prepare(kernel: KernelLike, settings: Settings) -> BootFiles:
    """The kernel's initramfs and modules disk, built once and cached."""
    modules_dir = Path(kernel.modules_dir)
    release = kernel.release
    if not (modules_dir / "modules.dep").is_file():
        raise InfraError(f"{kernel.name}: {modules_dir}/modules.dep is missing "
                         f"(the kernel's modules are not depmod'ed)")
    init_script = INITRAMFS_INIT.read_bytes()
    key = cache_key(release, modules_dir, init_script)
    root = settings.bootfiles_dir
    final = root / key

    def make() -> None:
        with cacheentry.staging(root, f".tmp-{key}-", f"making the boot files of {release}") as work:
            _build(kernel, modules_dir, init_script, work, settings)
            cacheentry.publish(work / "out", final)   # replaces an incomplete left-over

    return cacheentry.obtain(lambda: _cached(final, release), make,
                             lock=settings.locks_dir / f"bootfiles-{key}.lock",
                             timeout=settings.timeouts.lock, what=f"boot files for {release}")


def _build(kernel: KernelLike, modules_dir: Path, init_script: bytes, work: Path,
           settings: Settings) -> None:
    release = kernel.release
    log.info("preparing boot files for %s (%s)", kernel.name, release)
    busybox = find_busybox()
    _check_applets(busybox, settings)
    index = ModuleIndex.load(modules_dir)
    out = work / "out"
    out.mkdir()
    initramfs, order = build_initramfs(index, modules_dir, busybox, init_script, settings)
    (out / "initramfs.cpio.gz").write_bytes(initramfs)
    log.info("initramfs: %d KiB, modules %s", len(initramfs) // 1024,
             " ".join(n for n, _ in order) or "(all built in)")

    tree = work / "modroot"
    tree.mkdir()
    used, entries = stage_modules(modules_dir, tree / release)
    size = modules_disk_size(used)
    disk = out / "modules.img"
    mke2fs(tree, disk, size, "lab-modules", settings, journal=False,
           inodes=int(entries * 1.1) + 256)
    disk.chmod(0o444)
    log.info("modules disk: %d MiB for %d entries", size // 2**20, entries)

    manifest = {"format": FORMAT, "kernel": kernel.name, "release": release,
                "modules": [{"name": n, "required": r} for n, r in order],
                "initramfs_bytes": len(initramfs), "modules_disk_bytes": size,
                "busybox": str(busybox)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.rename(tmp, out / "manifest.json")
