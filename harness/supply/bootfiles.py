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
import io
import json
import logging
import lzma
import os
import shutil
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence, Union

from ..core import hostcmd, paths
from ..core.errors import InfraError
from ..core.locks import file_lock
from ..core.settings import Settings

log = logging.getLogger(__name__)

GUEST_DIR = paths.GUEST_DIR
INITRAMFS_INIT = GUEST_DIR / "initramfs-init"
FORMAT = 1                     # bump when what prepare() makes changes
ROOT_MODULES = ("virtio_pci", "virtio_blk", "ext4")      # the root disk: required
# Loaded by the initramfs too, where insmod of the static busybox is much cheaper
# than the image's modprobe; a kernel or machine without them still boots.
EXTRA_MODULES = ("virtio_net", "virtio_rng")
BUSYBOX_APPLETS = ("sh", "mount", "umount", "insmod", "mkdir", "switch_root", "sleep", "cat",
                   "uname", "findfs", "ls", "dmesg")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
BLOCK = 4096

# ext4 features every kernel the lab boots (5.10 and later) mounts. Passed
# through our own mke2fs.conf, so a newer host e2fsprogs (orphan_file,
# metadata_csum_seed by default) cannot make a filesystem an old kernel refuses.
MKE2FS_CONF = """\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
"""


class KernelLike(Protocol):
    name: str
    release: str
    modules_dir: Path


@dataclass(frozen=True)
class BootFiles:
    initramfs: Path      # gzip'ed newc cpio
    modules_disk: Path   # raw ext4, <release>/ at its root; attach read-only
    release: str


# modules.dep and friends --------------------------------------------------------
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


# cpio (newc) ---------------------------------------------------------------------
class Cpio:
    """A newc ("070701") archive, built in memory: no root needed for device nodes."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name}")
        self._names.add(name)
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._ino = 0
        self._entry("TRAILER!!!", 0, nlink=1)
        self._buf.write(b"\0" * (-self._buf.tell() % 512))
        return self._buf.getvalue()


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)) of a newc archive (for tests and checks)."""
    out: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (rmaj, rmin))


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


def mke2fs(tree: Path, image: Path, size_bytes: int, label: str, settings: Settings, *,
           journal: bool = True, inodes: Optional[int] = None,
           uuid: Optional[str] = None) -> None:
    """An ext4 filesystem in the (new, sparse) file ``image``, filled from ``tree``; no mounting."""
    conf = image.parent / f".{image.name}.mke2fs.conf"
    conf.write_text(MKE2FS_CONF)
    cmd: list[Union[str, Path]] = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-m", "0",
                                   "-d", tree]
    if not journal:
        cmd += ["-O", "^has_journal"]
    if inodes:
        cmd += ["-N", str(inodes)]
    if uuid:
        cmd += ["-U", uuid]
    cmd += [image, f"{(size_bytes + 1023) // 1024}k"]
    try:
        hostcmd.run(cmd, what=f"make the {label} filesystem", timeout=settings.timeouts.image_build,
                    env={**os.environ, "MKE2FS_CONFIG": str(conf)})
    finally:
        conf.unlink(missing_ok=True)


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
    found = _cached(final, release)
    if found:
        return found
    with file_lock(settings.locks_dir / f"bootfiles-{key}.lock", timeout=settings.timeouts.lock,
                   what=f"boot files for {release}"):
        found = _cached(final, release)
        if found:
            return found
        for stale in root.glob(f".tmp-{key}-*"):   # a build killed before it finished
            _remove(stale)
        work = root / f".tmp-{key}-{os.getpid()}"
        try:
            work.mkdir(parents=True)
            _build(kernel, modules_dir, init_script, work, settings)
            if final.exists():
                _remove(final)   # no manifest: an incomplete left-over
            os.rename(work / "out", final)
        finally:
            _remove(work)
    return BootFiles(final / "initramfs.cpio.gz", final / "modules.img", release)


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


__all__ = ["BootFiles", "Cpio", "ModuleIndex", "prepare", "cached", "read_cpio", "mke2fs",
           "is_static_elf", "find_busybox", "module_name"]
