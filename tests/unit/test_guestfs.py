"""The lab's guest files, and making an installed tree a lab guest (keys, identity, links)."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from livepatch_lab.supply import guestfs


def test_every_guest_file_exists_and_scripts_are_shell():
    for name, (target, mode) in guestfs.GUEST_FILES.items():
        text = (guestfs.GUEST_DIR / name).read_text()
        assert target.startswith("/")
        if mode & 0o111:
            assert text.startswith("#!/bin/sh\n"), name
    init = (guestfs.GUEST_DIR / "initramfs-init").read_text()
    assert "livepatch-lab: FATAL:" in init
    assert guestfs.GUEST_FILES["lab-init"][0] in init     # the initramfs hands over to it
    assert "livepatch-lab: ready" in (guestfs.GUEST_DIR / "ready").read_text()


@pytest.mark.skipif(not shutil.which("sh"), reason="needs sh")
def test_guest_scripts_parse(tmp_path):
    for name in ("initramfs-init", "lab-init", "rcS", "ready", "shutdown"):
        subprocess.run(["sh", "-n", str(guestfs.GUEST_DIR / name)], check=True)


# the tree ----------------------------------------------------------------------------------
def test_guest_paths_resolve_symlinks_inside_the_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "sbin").symlink_to("usr/sbin")
    (tree / "etc").mkdir()
    (tree / "etc/alt").symlink_to("/usr/sbin")            # absolute: must stay in the tree
    (tree / "etc/escape").symlink_to("../../../../../tmp")
    assert guestfs.guest_path(tree, "/sbin/poweroff") == tree / "usr/sbin/poweroff"
    assert guestfs.guest_path(tree, "/etc/alt/x") == tree / "usr/sbin/x"
    assert guestfs.guest_path(tree, "/etc/escape/x") == tree / "tmp/x"
    assert guestfs.guest_path(tree, "/etc/alt") == tree / "etc/alt"   # the last link is kept


def test_write_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    outside = tmp_path / "host-file"
    outside.write_text("host")
    (tree / "etc/resolv.conf").symlink_to(outside)
    guestfs.write_file(tree, "/etc/resolv.conf", "guest\n", 0o644)
    assert outside.read_text() == "host"
    assert not (tree / "etc/resolv.conf").is_symlink()
    assert (tree / "etc/resolv.conf").read_text() == "guest\n"


def fake_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "rootfs"
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc/ssh/sshd_config.d", "root", "proc"):
        (tree / d).mkdir(parents=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        (tree / link).symlink_to(target)
    (tree / "usr/bin/busybox").write_bytes(b"\x7fELF")
    (tree / "etc/ssh/ssh_host_rsa_key").write_text("old")
    (tree / "etc/ssh/ssh_host_ed25519_key.pub").write_text("old")
    (tree / "etc/ssh/sshd_config.d/debian.conf").write_text("PasswordAuthentication yes\n")
    (tree / "usr/sbin/reboot").symlink_to("/bin/systemctl")        # already provided
    (tree / "etc/shadow").write_text("root:!:19000:0:99999:7:::\ndaemon:*:19000::::::\n")
    (tree / "etc/resolv.conf").write_text("nameserver 10.255.255.53\n")
    return tree


def test_customise_makes_a_lab_guest(tmp_path):
    tree, out = fake_tree(tmp_path), tmp_path / "out"
    out.mkdir()
    host_pub, client_pub = guestfs.customise(tree, out)

    # scripts in place, executable
    for name, (target, mode) in guestfs.GUEST_FILES.items():
        path = guestfs.guest_path(tree, target)
        assert path.read_bytes() == (guestfs.GUEST_DIR / name).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert (tree / "usr/lib/livepatch-lab/init").exists()

    # one host key, the pinned one
    ssh = tree / "etc/ssh"
    assert sorted(p.name for p in ssh.glob("ssh_host_*")) == ["ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub"]
    assert stat.S_IMODE((ssh / "ssh_host_ecdsa_key").stat().st_mode) == 0o600
    host = paramiko.ECDSAKey.from_private_key_file(str(ssh / "ssh_host_ecdsa_key"))
    assert host_pub.startswith("ecdsa-sha2-nistp256 AAAA")
    assert host_pub.split()[1] == host.get_base64()
    assert (out / "host_key.pub").read_text().strip() == host_pub
    config = (ssh / "sshd_config").read_text()
    assert "HostKey /etc/ssh/ssh_host_ecdsa_key" in config
    assert "PermitRootLogin prohibit-password" in config and "UseDNS no" in config
    assert "PasswordAuthentication no" in config
    assert not list((ssh / "sshd_config.d").glob("*.conf"))

    # the client key opens root's account
    client = paramiko.ECDSAKey.from_private_key_file(str(out / "client_key"))
    assert stat.S_IMODE((out / "client_key").stat().st_mode) == 0o600
    authorized = tree / "root/.ssh/authorized_keys"
    assert authorized.read_text().split()[1] == client.get_base64() == client_pub.split()[1]
    assert stat.S_IMODE(authorized.stat().st_mode) == 0o600
    assert stat.S_IMODE((tree / "root/.ssh").stat().st_mode) == 0o700

    # the rest of the system
    assert (tree / "etc/hostname").read_text() == "lab\n"
    assert "nameserver" not in (tree / "etc/resolv.conf").read_text()
    assert "/dev/vda" in (tree / "etc/fstab").read_text()
    assert os.readlink(tree / "usr/sbin/poweroff") == "/bin/busybox"
    assert os.readlink(tree / "usr/sbin/halt") == "/bin/busybox"
    assert os.readlink(tree / "usr/sbin/reboot") == "/bin/systemctl"   # left alone
    assert (tree / "etc/shadow").read_text().startswith("root:*:")
    assert (tree / "usr/lib/modules").is_dir()


def test_two_builds_get_different_keys(tmp_path):
    keys = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        tree, out = fake_tree(tmp_path / str(i)), tmp_path / str(i) / "out"
        out.mkdir()
        keys.append(guestfs.customise(tree, out))
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]


# a recipe's own files -----------------------------------------------------------------------
def test_a_directory_is_copied_with_its_modes_and_links_through_the_guests_own_paths(tmp_path):
    tree = fake_tree(tmp_path)
    src = tmp_path / "agent"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "agentd").write_text("#!/bin/sh\n")
    (src / "bin" / "agentd").chmod(0o750)
    (src / "README").write_text("hi\n")
    (src / "current").symlink_to("bin")
    assert guestfs.copy_in(tree, src, "/lib/agent") == 2
    # /lib is a link to usr/lib inside the tree, as the guest sees it
    assert (tree / "usr/lib/agent/bin/agentd").read_text() == "#!/bin/sh\n"
    assert stat.S_IMODE((tree / "usr/lib/agent/bin/agentd").stat().st_mode) == 0o750
    assert os.readlink(tree / "usr/lib/agent/current") == "bin"
    guestfs.copy_in(tree, src / "README", "/etc/agent.readme")
    assert (tree / "etc/agent.readme").read_text() == "hi\n"


def test_a_copy_never_writes_through_a_link_that_points_out_of_the_tree(tmp_path):
    tree = fake_tree(tmp_path)
    outside = tmp_path / "host"
    outside.mkdir()
    (tree / "etc/agent").symlink_to(outside)           # absolute: the guest's /…/host, not ours
    src = tmp_path / "f"
    src.write_text("guest\n")
    guestfs.copy_in(tree, src, "/etc/agent")
    assert list(outside.iterdir()) == [] and (tree / "etc/agent").read_text() == "guest\n"


def test_the_tree_digest_follows_names_modes_contents_and_refuses_what_cannot_be_copied(tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    (src / "a").write_text("1")
    first = guestfs.tree_digest(src)
    (src / "a").chmod(0o600)
    assert guestfs.tree_digest(src) != first
    (src / "a").chmod(0o644)
    (src / "b").write_text("")
    assert guestfs.tree_digest(src) != first
    os.mkfifo(src / "pipe")
    with pytest.raises(ValueError, match="neither a file"):
        guestfs.tree_digest(src)
