"""Boot files: a static busybox, the initramfs, the modules disk, the cache."""
import gzip
import lzma
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from livepatch_lab.core.errors import InfraError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import bootfiles
from livepatch_lab.supply.cpio import read_cpio
from livepatch_lab.supply.modindex import ModuleIndex, module_name
from tests.unit.test_modindex import ALIAS, DEP, SOFTDEP


# ELF ------------------------------------------------------------------------------------
def _elf(tmp_path: Path, interp: bool) -> Path:
    phnum = 2
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", header, 32, 64)              # e_phoff
    struct.pack_into("<HH", header, 54, 56, phnum)      # e_phentsize, e_phnum
    ph = struct.pack("<I", 1) + bytes(52)               # PT_LOAD
    ph += struct.pack("<I", 3 if interp else 4) + bytes(52)   # PT_INTERP or PT_NOTE
    path = tmp_path / ("dyn" if interp else "static")
    path.write_bytes(bytes(header) + ph)
    return path


def test_static_elf_detection(tmp_path):
    assert bootfiles.is_static_elf(_elf(tmp_path, interp=False))
    assert not bootfiles.is_static_elf(_elf(tmp_path, interp=True))
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not bootfiles.is_static_elf(script)


def test_a_dynamic_busybox_is_refused_with_the_package_to_install(tmp_path, monkeypatch):
    dyn = _elf(tmp_path, interp=True)
    monkeypatch.setattr(bootfiles.shutil, "which", lambda _: str(dyn))
    monkeypatch.setattr(bootfiles, "BUSYBOX_CANDIDATES", ())
    with pytest.raises(InfraError, match="busybox-static"):
        bootfiles.find_busybox()
    monkeypatch.setattr(bootfiles.shutil, "which", lambda _: None)
    with pytest.raises(InfraError, match="busybox-static"):
        bootfiles.find_busybox()


# a fake kernel on disk ------------------------------------------------------------------
RELEASE = "6.1.0-99-amd64"


def fake_modules_dir(tmp_path: Path, compress: str = "") -> Path:
    mdir = tmp_path / "lib" / "modules" / RELEASE
    dep_lines = []
    for line in DEP.splitlines():
        path, rest = line.split(":", 1)
        path = path + compress
        rest = " ".join(p + compress for p in rest.split())
        dep_lines.append(f"{path}: {rest}".rstrip())
        body = b"\x7fELF" + module_name(path).encode() + b"\n~Module signature appended~\n"
        target = mdir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.compress(body) if compress == ".xz" else body)
    (mdir / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    (mdir / "modules.softdep").write_text(SOFTDEP)
    (mdir / "modules.alias").write_text(ALIAS)
    (mdir / "modules.builtin").write_text("kernel/drivers/virtio/virtio_rng.ko\n")
    (mdir / "build").symlink_to("/usr/src/linux-headers-" + RELEASE)
    return mdir


def test_the_initramfs_holds_busybox_applets_modules_in_order_and_init(tmp_path):
    mdir = fake_modules_dir(tmp_path, ".xz")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    data, order = bootfiles.build_initramfs(ModuleIndex.load(mdir), mdir, busybox,
                                            b"#!/bin/sh\necho hi\n", Settings(cache_dir=tmp_path))
    files = read_cpio(gzip.decompress(data))
    assert files["init"][0] == stat.S_IFREG | 0o755 and files["init"][1] == b"#!/bin/sh\necho hi\n"
    assert files["dev/console"][2] == (5, 1)
    assert files["bin/busybox"][1] == b"\x7fELF static busybox"
    for applet in ("sh", "mount", "insmod", "switch_root", "sleep"):
        assert files[f"bin/{applet}"][1] == b"busybox"
    listing = files["lab/modules.list"][1].decode().splitlines()
    assert [line.split()[0] for line in listing] == [f"{n}.ko" for n, _ in order]
    assert "ext4.ko required" in listing and "crc32c_generic.ko optional" in listing
    assert "virtio_net.ko optional" in listing          # optional extra present
    assert not any(line.startswith("virtio_rng") for line in listing)   # built in
    # decompressed on the host: busybox insmod takes plain ELF only
    assert files["lab/modules/ext4.ko"][1].startswith(b"\x7fELFext4\n")
    for d in ("proc", "sys", "dev", "newroot"):
        assert stat.S_ISDIR(files[d][0])


def test_the_cache_key_follows_the_init_script_and_modules_dep(tmp_path):
    mdir = fake_modules_dir(tmp_path)
    k1 = bootfiles.cache_key(RELEASE, mdir, b"init v1")
    assert k1.startswith(RELEASE + "-")
    assert bootfiles.cache_key(RELEASE, mdir, b"init v1") == k1
    assert bootfiles.cache_key(RELEASE, mdir, b"init v2") != k1
    with open(mdir / "modules.dep", "a") as f:
        f.write("kernel/new.ko:\n")
    assert bootfiles.cache_key(RELEASE, mdir, b"init v1") != k1


def test_staging_the_modules_tree_skips_kbuild_links(tmp_path):
    mdir = fake_modules_dir(tmp_path)
    dest = tmp_path / "stage" / RELEASE
    used, entries = bootfiles.stage_modules(mdir, dest)
    assert (dest / "kernel/fs/ext4/ext4.ko").read_bytes() == (mdir / "kernel/fs/ext4/ext4.ko").read_bytes()
    assert (dest / "modules.dep").is_file()
    assert not (dest / "build").exists() and not (dest / "build").is_symlink()
    assert used >= 4096 * 14 and entries > 14
    assert bootfiles.modules_disk_size(used) >= used * 1.1 + 16 * 2**20
    assert bootfiles.modules_disk_size(used) % 2**20 == 0


def test_a_kernel_without_modules_dep_is_an_infra_error(tmp_path):
    kernel = SimpleNamespace(name="k", release=RELEASE, modules_dir=tmp_path)
    with pytest.raises(InfraError, match="depmod"):
        bootfiles.prepare(kernel, Settings(cache_dir=tmp_path / "cache"))


def _static_busybox() -> bool:
    try:
        bootfiles.find_busybox()
        return True
    except InfraError:
        return False


@pytest.mark.skipif(not (shutil.which("mke2fs") and _static_busybox()),
                    reason="needs mke2fs and a static busybox")
def test_prepare_builds_once_and_then_comes_from_the_cache(tmp_path, monkeypatch):
    mdir = fake_modules_dir(tmp_path)
    kernel = SimpleNamespace(name="fake", release=RELEASE, modules_dir=mdir)
    settings = Settings(cache_dir=tmp_path / "cache")
    files = bootfiles.prepare(kernel, settings)
    assert files.release == RELEASE
    assert files.initramfs.is_file() and files.modules_disk.is_file()
    assert files.initramfs.parent.name.startswith(RELEASE + "-")
    assert (files.initramfs.parent / "manifest.json").is_file()
    assert not stat.S_IMODE(files.modules_disk.stat().st_mode) & 0o222   # read-only
    assert not list((tmp_path / "cache" / "bootfiles").glob(".tmp-*"))
    if shutil.which("debugfs"):
        out = subprocess.run(["debugfs", "-R", "ls -p /", str(files.modules_disk)],
                             capture_output=True, text=True).stdout
        assert f"/{RELEASE}/" in out
        label = subprocess.run(["e2label", str(files.modules_disk)], capture_output=True,
                               text=True).stdout.strip()
        assert label == "lab-modules"

    monkeypatch.setattr(bootfiles, "_build", lambda *a, **k: pytest.fail("rebuilt a cached kernel"))
    assert bootfiles.prepare(kernel, settings) == files


def test_a_failed_build_leaves_no_temporary_directory(tmp_path, monkeypatch):
    mdir = fake_modules_dir(tmp_path)
    kernel = SimpleNamespace(name="fake", release=RELEASE, modules_dir=mdir)
    settings = Settings(cache_dir=tmp_path / "cache")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bootfiles, "_build", boom)
    with pytest.raises(KeyboardInterrupt):
        bootfiles.prepare(kernel, settings)
    left = os.listdir(tmp_path / "cache" / "bootfiles")
    assert left == []
