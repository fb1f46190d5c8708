"""Building the real default image (mmdebstrap from Debian's archive) and real boot files."""
import gzip
import json
import os
import shutil
import stat
import subprocess
import time

import paramiko
import pytest

from livepatch_lab.supply import bootfiles, cpio, guestfs, images, recipes

pytestmark = [pytest.mark.network,
              pytest.mark.skipif(os.geteuid() != 0, reason="building an image needs root")]


def debugfs(image, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def built(lab_settings):
    recipe = recipes.load_recipe(recipes.DEFAULT_RECIPE)
    return recipe, images.build(recipe, lab_settings)


def test_the_default_image_is_a_read_only_ext4_with_its_keys_and_manifest(built, lab_settings):
    recipe, image = built
    assert image.path == lab_settings.images_dir / f"default-{recipe.digest()[:12]}" / "base.img"
    assert image.digest == recipe.digest() and image.user == "root"
    assert stat.S_IMODE(image.path.stat().st_mode) == 0o444
    assert image.path.stat().st_size == recipe.size_mib * 2**20
    manifest = json.loads((image.path.parent / "manifest.json").read_text())
    assert manifest["digest"] == image.digest and manifest["host_key"] == image.host_key
    assert not list(lab_settings.images_dir.glob(".build-*"))

    fsck = subprocess.run(["e2fsck", "-fn", str(image.path)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    label = subprocess.run(["e2label", str(image.path)], capture_output=True, text=True).stdout
    assert label.strip() == "lab-root"


def test_the_image_pins_one_host_key_and_lets_only_the_client_key_in(built):
    _, image = built
    assert image.host_key.startswith("ecdsa-sha2-nistp256 AAAA")
    assert debugfs(image.path, "cat /etc/ssh/ssh_host_ecdsa_key.pub").strip() == image.host_key
    keys = debugfs(image.path, "ls /etc/ssh")
    assert "ssh_host_rsa_key" not in keys and "ssh_host_ed25519_key" not in keys
    client = paramiko.ECDSAKey.from_private_key_file(str(image.client_key))
    assert stat.S_IMODE(image.client_key.stat().st_mode) == 0o600
    authorized = debugfs(image.path, "cat /root/.ssh/authorized_keys")
    assert authorized.split()[1] == client.get_base64()
    config = debugfs(image.path, "cat /etc/ssh/sshd_config")
    assert "HostKey /etc/ssh/ssh_host_ecdsa_key" in config and "PasswordAuthentication no" in config


def test_the_image_boots_through_the_lab_init_not_systemd(built):
    _, image = built
    for name, (target, _) in guestfs.GUEST_FILES.items():
        assert debugfs(image.path, f"cat {target}") == (guestfs.GUEST_DIR / name).read_text(), target
    assert "Inode:" not in debugfs(image.path, "stat /usr/sbin/init")   # no systemd-sysv
    for tool in ("/usr/sbin/sshd", "/usr/sbin/modprobe", "/usr/sbin/ip", "/usr/sbin/poweroff",
                 "/usr/bin/busybox", "/usr/bin/stress-ng", "/usr/bin/python3"):
        assert "Inode:" in debugfs(image.path, f"stat {tool}"), tool


def test_a_second_build_comes_from_the_cache(built, lab_settings):
    recipe, image = built
    start = time.monotonic()
    assert images.build(recipe, lab_settings) == image
    assert images.cached(recipe, lab_settings) == image
    assert time.monotonic() - start < 2


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_overlays_leave_the_base_untouched(built, tmp_path):
    _, image = built
    before = image.path.stat()
    overlay = images.create_overlay(image, tmp_path / "root.qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(image.path.resolve())
    after = image.path.stat()
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)


def test_boot_files_for_a_real_kernel(lab_settings, lab_kernel):
    pytest.importorskip("livepatch_lab.supply.kernels.fetch")
    kernel = lab_kernel("debian-6.1")
    files = bootfiles.prepare(kernel, lab_settings)
    assert files.release == kernel.release
    archive = cpio.read_cpio(gzip.decompress(files.initramfs.read_bytes()))
    for member in ("init", "bin/busybox", "bin/switch_root", "dev/console",
                   "lab/modules/virtio_blk.ko", "lab/modules/ext4.ko", "lab/modules.list"):
        assert member in archive, member
    listing = debugfs(files.modules_disk, "ls -p /")
    assert f"/{kernel.release}/" in listing
    assert "modules.dep" in debugfs(files.modules_disk, f"ls /{kernel.release}")
    assert bootfiles.prepare(kernel, lab_settings) == files
