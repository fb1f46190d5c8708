"""Image recipes (validation with file/line/field), digests, the tree customisation, the cache."""
import json
import os
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import paramiko
import pytest

from harness.core.errors import ConfigError, HostCommandError, InfraError
from harness.core.settings import Settings
from harness.supply import images

GOOD = """\
name: default
suite: bookworm
variant: minbase
packages: [openssh-server, kmod, busybox, iproute2, procps]
size_mib: 1024
"""


def recipe_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> images.Recipe:
    return images.load_recipe(recipe_file(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.source == str(tmp_path / "recipe.yaml")
    return err.value


# loading ------------------------------------------------------------------------------
def test_the_default_recipe_loads_and_has_what_the_guest_init_needs():
    recipe = images.load_recipe(images.DEFAULT_RECIPE)
    assert recipe.name == "default" and recipe.suite == "bookworm" and recipe.variant == "minbase"
    for pkg in ("openssh-server", "kmod", "busybox", "iproute2", "procps", "stress-ng", "python3"):
        assert pkg in recipe.packages
    assert recipe.size_mib == 2048


def test_a_good_recipe_loads_with_defaults(tmp_path):
    recipe = load(tmp_path, "name: x\nsuite: trixie\npackages: [openssh-server, kmod, busybox, iproute2]\n")
    assert (recipe.variant, recipe.size_mib) == ("minbase", 2048)
    assert recipe.source == tmp_path / "recipe.yaml"


def test_an_unknown_field_names_its_line(tmp_path):
    err = config_error(tmp_path, GOOD + "colour: blue\n")
    assert (err.field, err.line) == ("colour", 6)
    assert "unknown field" in str(err) and "recipe.yaml:6" in str(err)


@pytest.mark.parametrize("line,field,value", [
    (5, "size_mib", "size_mib: big"),
    (5, "size_mib", "size_mib: true"),
    (5, "size_mib", "size_mib: 1.5"),
    (2, "suite", "suite: 12"),
    (4, "packages", "packages: openssh-server"),
])
def test_a_wrong_type_names_field_and_line(tmp_path, line, field, value):
    text = "\n".join(value if l.startswith(field + ":") else l for l in GOOD.splitlines()) + "\n"
    err = config_error(tmp_path, text)
    assert (err.field, err.line) == (field, line)
    assert "must be" in str(err)


def test_a_bad_package_names_the_item_line(tmp_path):
    err = config_error(tmp_path, """\
        name: x
        suite: bookworm
        packages:
          - openssh-server
          - kmod
          - "rm -rf /"
          - busybox
          - iproute2
        """)
    assert (err.field, err.line) == ("packages", 6)
    assert "item 3" in str(err)


def test_the_guest_init_packages_are_required(tmp_path):
    err = config_error(tmp_path, "name: x\nsuite: bookworm\npackages: [kmod, busybox]\n")
    assert err.field == "packages" and err.line == 3
    assert "openssh-server" in str(err) and "iproute2" in str(err)


def test_package_pins_count_as_the_package(tmp_path):
    recipe = load(tmp_path, "name: x\nsuite: bookworm\n"
                            "packages: [openssh-server=1:9.2p1-2, kmod/bookworm, busybox, iproute2]\n")
    assert "openssh-server=1:9.2p1-2" in recipe.packages


@pytest.mark.parametrize("text,field,line,message", [
    ("suite: bookworm\npackages: []\n", "name", None, "missing"),
    ("name: Bad Name\nsuite: bookworm\n", "name", 1, "not a valid image name"),
    ("name: x\nsuite: Bookworm!\n", "suite", 2, "suite"),
    ("name: x\nsuite: bookworm\nvariant: extract\n", "variant", 3, "variant"),
    ("name: x\nsuite: bookworm\nsize_mib: 100\npackages: [openssh-server, kmod, busybox, iproute2]\n",
     "size_mib", 3, "out of range"),
    ("name: x\nname: y\nsuite: bookworm\n", "name", 2, "twice"),
    ("name: x\nsuite: bookworm\npackages: [kmod, kmod]\n", "packages", 3, "twice"),
])
def test_bad_values(tmp_path, text, field, line, message):
    err = config_error(tmp_path, text)
    assert (err.field, err.line) == (field, line)
    assert message in str(err)


def test_yaml_syntax_errors_name_the_line(tmp_path):
    err = config_error(tmp_path, "name: x\nsuite: [bookworm\nsize_mib: 3\n")
    assert err.line is not None and err.line >= 2


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_recipe_must_be_a_mapping(tmp_path, text):
    config_error(tmp_path, text)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        images.load_recipe(tmp_path / "nope.yaml")
    assert err.value.source == str(tmp_path / "nope.yaml")


# digests --------------------------------------------------------------------------------
def test_the_digest_follows_content_not_form(tmp_path):
    a = load(tmp_path, GOOD)
    b = load(tmp_path, "# comment\nsize_mib: 1024\nname: default\nsuite: bookworm\n"
                       "packages: [procps, iproute2, busybox, kmod, openssh-server]\n")
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64
    c = load(tmp_path, GOOD.replace("1024", "1536"))
    d = load(tmp_path, GOOD.replace("procps", "procps, strace"))
    assert len({a.digest(), c.digest(), d.digest()}) == 3


def test_the_digest_changes_when_a_guest_script_changes(tmp_path, monkeypatch):
    guest = tmp_path / "guest"
    shutil.copytree(images.GUEST_DIR, guest)
    monkeypatch.setattr(images, "GUEST_DIR", guest)
    recipe = load(tmp_path, GOOD)
    before = recipe.digest()
    with open(guest / "rcS", "a") as f:
        f.write("# a change\n")
    assert recipe.digest() != before


def test_the_digest_changes_with_the_layout_version(tmp_path, monkeypatch):
    recipe = load(tmp_path, GOOD)
    before = recipe.digest()
    monkeypatch.setattr(images, "FORMAT", images.FORMAT + 1)
    assert recipe.digest() != before


def test_every_guest_file_exists_and_scripts_are_shell():
    for name, (target, mode) in images.GUEST_FILES.items():
        text = (images.GUEST_DIR / name).read_text()
        assert target.startswith("/")
        if mode & 0o111:
            assert text.startswith("#!/bin/sh\n"), name
    init = (images.GUEST_DIR / "initramfs-init").read_text()
    assert "livepatch-lab: FATAL:" in init
    assert images.GUEST_FILES["lab-init"][0] in init     # the initramfs hands over to it
    assert "livepatch-lab: ready" in (images.GUEST_DIR / "ready").read_text()


@pytest.mark.skipif(not shutil.which("sh"), reason="needs sh")
def test_guest_scripts_parse(tmp_path):
    for name in ("initramfs-init", "lab-init", "rcS", "ready", "shutdown"):
        subprocess.run(["sh", "-n", str(images.GUEST_DIR / name)], check=True)


# the tree ----------------------------------------------------------------------------------
def test_guest_paths_resolve_symlinks_inside_the_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "sbin").symlink_to("usr/sbin")
    (tree / "etc").mkdir()
    (tree / "etc/alt").symlink_to("/usr/sbin")            # absolute: must stay in the tree
    (tree / "etc/escape").symlink_to("../../../../../tmp")
    assert images.guest_path(tree, "/sbin/poweroff") == tree / "usr/sbin/poweroff"
    assert images.guest_path(tree, "/etc/alt/x") == tree / "usr/sbin/x"
    assert images.guest_path(tree, "/etc/escape/x") == tree / "tmp/x"
    assert images.guest_path(tree, "/etc/alt") == tree / "etc/alt"   # the last link is kept


def test_write_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    outside = tmp_path / "host-file"
    outside.write_text("host")
    (tree / "etc/resolv.conf").symlink_to(outside)
    images.write_file(tree, "/etc/resolv.conf", "guest\n", 0o644)
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
    host_pub, client_pub = images.customise(tree, out)

    # scripts in place, executable
    for name, (target, mode) in images.GUEST_FILES.items():
        path = images.guest_path(tree, target)
        assert path.read_bytes() == (images.GUEST_DIR / name).read_bytes()
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
        keys.append(images.customise(tree, out))
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]


# the cache -------------------------------------------------------------------------------------
def fake_built(settings: Settings, recipe: images.Recipe, digest=None) -> Path:
    d = images.image_dir(recipe, settings)
    d.mkdir(parents=True)
    (d / "base.img").write_bytes(b"")
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(d / "client_key"))
    (d / "host_key.pub").write_text("ecdsa-sha2-nistp256 AAAAhost root@lab\n")
    (d / "manifest.json").write_text(json.dumps({"name": recipe.name,
                                                 "digest": digest or recipe.digest()}))
    return d


def test_cached_needs_a_manifest_with_the_same_digest(tmp_path):
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    assert images.cached(recipe, settings) is None
    d = fake_built(settings, recipe)
    image = images.cached(recipe, settings)
    assert image == images.Image("default", d / "base.img", d / "client_key",
                                 "ecdsa-sha2-nistp256 AAAAhost root@lab", recipe.digest())
    assert image.user == "root"
    (d / "manifest.json").write_text(json.dumps({"name": "default", "digest": "0" * 64}))
    assert images.cached(recipe, settings) is None
    (d / "manifest.json").unlink()
    assert images.cached(recipe, settings) is None


def test_build_returns_a_cached_image_without_building(tmp_path, monkeypatch):
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    fake_built(settings, recipe)
    monkeypatch.setattr(images, "_build", lambda *a, **k: pytest.fail("rebuilt a cached image"))
    assert images.build(recipe, settings).digest == recipe.digest()


def test_a_failed_or_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch):
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    seen = []

    def interrupted(recipe, digest, work, settings):
        (work / "rootfs" / "usr").mkdir(parents=True)
        seen.append(work)
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "_build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        images.build(recipe, settings)
    assert seen and not seen[0].exists()
    assert os.listdir(settings.images_dir) == []


def test_a_forced_build_replaces_the_image_atomically(tmp_path, monkeypatch):
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    old = fake_built(settings, recipe)
    (old / "marker").write_text("old")
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)

    def fresh(recipe, digest, work, settings):
        out = work / "image"
        shutil.copytree(old, out)
        (out / "marker").write_text("new")
        return out

    monkeypatch.setattr(images, "_build", fresh)
    image = images.build(recipe, settings, force=True)
    assert (image.path.parent / "marker").read_text() == "new"
    assert sorted(os.listdir(settings.images_dir)) == [old.name]


def test_building_needs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(InfraError, match="root"):
        images.build(load(tmp_path, GOOD), Settings(cache_dir=tmp_path / "cache"))


def test_mmdebstrap_gets_the_recipe_and_the_configured_mirror(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(images.hostcmd, "run", lambda cmd, **kw: calls.append((cmd, kw)) or "")
    recipe = load(tmp_path, GOOD)
    settings = Settings(cache_dir=tmp_path, debian_mirror="http://mirror.example/debian")
    images._mmdebstrap(recipe, tmp_path / "tree", images.debian_mirrors(settings.debian_mirror).archive,
                       settings)
    (cmd, kw), = calls
    assert cmd[0] == "mmdebstrap" and "--variant=minbase" in cmd
    assert "--include=openssh-server,kmod,busybox,iproute2,procps" in cmd
    assert cmd[-3:] == ["bookworm", str(tmp_path / "tree"), "http://mirror.example/debian"]
    assert kw["timeout"] == settings.timeouts.image_build


def test_a_package_the_suite_lacks_is_a_config_error_on_the_packages_line(tmp_path, monkeypatch):
    def fail(cmd, **kw):
        raise HostCommandError("install", cmd, 1, "E: Unable to locate package openssh-servr\n")

    monkeypatch.setattr(images.hostcmd, "run", fail)
    recipe = load(tmp_path, GOOD)
    with pytest.raises(ConfigError) as err:
        images._mmdebstrap(recipe, tmp_path / "t", "http://m/debian", Settings(cache_dir=tmp_path))
    assert (err.value.field, err.value.line) == ("packages", 4)
    assert "openssh-servr" in str(err.value)


def test_remove_tree_removes_plain_trees(tmp_path):
    d = tmp_path / "build"
    (d / "a/b").mkdir(parents=True)
    (d / "a/b/f").write_text("x")
    images.remove_tree(d, Settings(cache_dir=tmp_path))
    assert not d.exists()
    images.remove_tree(d, Settings(cache_dir=tmp_path))  # gone already: fine


def test_remove_tree_refuses_to_cross_a_mount_it_cannot_unmount(tmp_path, monkeypatch):
    d = tmp_path / "build"
    (d / "proc").mkdir(parents=True)
    monkeypatch.setattr(images, "_mount_points", lambda: [str((d / "proc").resolve())])
    monkeypatch.setattr(images.hostcmd, "run", lambda *a, **k: "")
    with pytest.raises(InfraError, match="still mounted"):
        images.remove_tree(d, Settings(cache_dir=tmp_path))
    assert d.exists()


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_an_overlay_is_backed_by_the_base_image(tmp_path):
    base = tmp_path / "base.img"
    with open(base, "wb") as f:
        f.truncate(2**20)
    base.chmod(0o444)
    image = images.Image("x", base, tmp_path / "k", "ecdsa-sha2-nistp256 AAAA", "0" * 64)
    overlay = images.create_overlay(image, tmp_path / "root.qcow2")
    assert overlay == tmp_path / "root.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, check=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info.get("backing-filename-format") == "raw"
