"""Making an installed Debian tree a lab guest: the lab's init, per-image SSH keys, identity.

The lab's guest files (``images/guest/``): busybox init as PID 1, a static
network on QEMU user networking, sshd, "livepatch-lab: ready" on the console.
Each image gets a pinned ECDSA host key and a client key for root. A recipe's
own files are copied in first (``copy_in``), so the lab's win. Guest paths
are resolved inside the tree as the guest would see them, and files are never
written through a symlink.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Optional, Union

from ..core import hostcmd, paths
from ..core.errors import HostCommandError, InfraError
from ..core.settings import Settings

GUEST_DIR = paths.GUEST_DIR
# guest file in images/guest/ -> (path in the image, mode)
GUEST_FILES: dict[str, tuple[str, int]] = {
    "lab-init": ("/usr/lib/livepatch-lab/init", 0o755),
    "rcS": ("/usr/lib/livepatch-lab/rcS", 0o755),
    "ready": ("/usr/lib/livepatch-lab/ready", 0o755),
    "shutdown": ("/usr/lib/livepatch-lab/shutdown", 0o755),
    "inittab": ("/etc/inittab", 0o644),
    "sshd_config": ("/etc/ssh/sshd_config", 0o644),
}
# C sources in images/guest/ compiled (static, by the host's cc) into the image: path, mode
GUEST_PROGRAMS: dict[str, tuple[str, int]] = {
    "lab-httpd.c": ("/usr/lib/livepatch-lab/httpd", 0o755),   # the default service (workload/service.py)
}
# busybox applets linked into the image when the image has no such command
BUSYBOX_LINKS = ("poweroff", "reboot", "halt")


def guest_files_digest(guest_dir: Optional[Path] = None) -> dict[str, str]:
    guest_dir = GUEST_DIR if guest_dir is None else guest_dir
    return {name: f"{target}:{mode:o}:{hashlib.sha256((guest_dir / name).read_bytes()).hexdigest()}"
            for name, (target, mode) in sorted({**GUEST_FILES, **GUEST_PROGRAMS}.items())}


def compile_program(source: Path, out: Path, timeout: float) -> None:
    """A guest program from its C source: static, so it runs on any guest userland."""
    try:
        hostcmd.run(["cc", "-static", "-O2", "-Wall", "-o", str(out), str(source)],
                    what=f"compile {source.name} for the guest", timeout=timeout)
    except HostCommandError as exc:
        raise InfraError(f"cannot build the guest's {source.name} (is libc6-dev installed?):\n"
                         f"{exc.output.strip()[-800:]}") from None


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


def _entries(source: Path) -> list[tuple[str, Path]]:
    """(path relative to ``source``, path) of a file, or of everything below a directory, sorted."""
    if not source.is_dir():
        return [("", source)]
    out = []
    for top, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            full = Path(top) / name
            out.append((str(full.relative_to(source)), full))
    return sorted(out)


def tree_digest(source: Path) -> str:
    """sha256 over the names, modes and contents (a symlink: its target) of a file or a
    directory's tree; ValueError for what cannot be copied into an image (a socket, a device)."""
    h = hashlib.sha256()
    for rel, full in _entries(source):
        st = full.lstat()
        if stat.S_ISLNK(st.st_mode):
            h.update(f"L {rel} {os.readlink(full)}\n".encode())
        elif stat.S_ISDIR(st.st_mode):
            h.update(f"D {rel} {st.st_mode & 0o7777:o}\n".encode())
        elif stat.S_ISREG(st.st_mode):
            h.update(f"F {rel} {st.st_mode & 0o7777:o} {hashlib.sha256(full.read_bytes()).hexdigest()}\n".encode())
        else:
            raise ValueError(f"{full} is neither a file, a directory nor a symlink")
    return h.hexdigest()


def copy_in(tree: Path, source: Path, to: str) -> int:
    """Copy a file, or a directory's tree, to the guest path ``to`` (modes kept, owned by root);
    never writes through a symlink already in the tree. Returns the number of files."""
    count = 0
    for rel, full in _entries(source):
        guest = to if not rel else f"{to.rstrip('/')}/{rel}"
        st = full.lstat()
        if stat.S_ISDIR(st.st_mode):
            target = guest_path(tree, guest)
            if target.is_symlink():
                target.unlink()
            target.mkdir(mode=st.st_mode & 0o7777, parents=True, exist_ok=True)
        elif stat.S_ISLNK(st.st_mode):
            target = guest_path(tree, guest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            os.symlink(os.readlink(full), target)
        else:
            write_file(tree, guest, full.read_bytes(), st.st_mode & 0o7777)
            count += 1
    return count


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
    for name, (target, mode) in GUEST_PROGRAMS.items():
        built = out / f".{Path(target).name}.built"
        compile_program(guest_dir / name, built, Settings().timeouts.host_command)
        write_file(tree, target, built.read_bytes(), mode)
        built.unlink()

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


def check_busybox(tree: Path, settings: Settings) -> None:
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
