"""Guest images: the cache (digest-matched, atomic, nothing left behind), mmdebstrap's command, overlays."""
import json
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from livepatch_lab.core.errors import ConfigError, HostCommandError, InfraError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import images
from livepatch_lab.supply.apt import sha256_file
from livepatch_lab.supply.recipes import Recipe
from tests.unit.test_recipes import GOOD, load


# the cache -------------------------------------------------------------------------------------
def fake_built(settings: Settings, recipe: Recipe, digest=None) -> Path:
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


def _base_image(tmp_path) -> images.Image:
    """A 1 MiB read-only raw base image."""
    base = tmp_path / "base.img"
    with open(base, "wb") as f:
        f.truncate(2**20)
    base.chmod(0o444)
    return images.Image("x", base, tmp_path / "k", "ecdsa-sha2-nistp256 AAAA", "0" * 64)


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_an_overlay_is_backed_by_the_base_image(tmp_path):
    image = _base_image(tmp_path)
    base = image.path
    overlay = images.create_overlay(image, tmp_path / "root.qcow2")
    assert overlay == tmp_path / "root.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, check=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info.get("backing-filename-format") == "raw"


# corruption: found by the hashes recorded at the build ------------------------------------
BASE = b"\0" * 4096 + b"ext4 superblock and the rest" * 1000


@pytest.fixture
def image_builds(tmp_path, monkeypatch):
    """images.build with mmdebstrap stood in for: each build writes BASE; returns the builds."""
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    builds = []
    template = fake_built(Settings(cache_dir=tmp_path / "template"), recipe)

    def fake_build(recipe, digest, work, settings):
        out = work / "image"
        shutil.copytree(template, out)
        (out / "base.img").write_bytes(BASE)
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "base": images._fingerprint(out / "base.img")}))
        builds.append(out)
        return out
    monkeypatch.setattr(images, "_build", fake_build)
    return lambda: images.build(recipe, settings), builds


def test_a_built_image_is_its_owners_alone(image_builds):
    # base.img holds the guest's SSH host key, client_key logs into the guest as root
    build, _ = image_builds
    image = build()
    assert stat.S_IMODE(image.path.parent.stat().st_mode) == 0o700


def test_an_image_built_before_images_were_private_is_made_so_on_use(tmp_path):
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    d = fake_built(settings, recipe)
    d.chmod(0o755)
    assert images.cached(recipe, settings) is not None
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_a_truncated_base_image_is_found_by_its_hash_and_built_again(image_builds, caplog):
    build, builds = image_builds
    image = build()
    os.truncate(image.path, 4096)   # a disk that filled, a copy cut short
    with caplog.at_level(logging.WARNING):
        again = build()
    assert len(builds) == 2 and again.path.read_bytes() == BASE
    assert f"image {image.path} is corrupt: 4096 bytes" in caplog.text and "building it again" in caplog.text


def test_a_base_image_written_to_in_place_is_found_by_its_hash(image_builds, caplog):
    build, builds = image_builds
    image = build()
    st = image.path.stat()
    image.path.chmod(0o644)
    with open(image.path, "r+b") as fh:    # same size; the mtime put back: only the hash can tell
        fh.seek(4096)
        fh.write(b"EXT4 SUPERBLOCK")
    os.utime(image.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with caplog.at_level(logging.WARNING):
        build()
    assert len(builds) == 2 and "is corrupt" in caplog.text


def test_an_image_copied_with_a_new_mtime_is_hashed_once_and_kept(image_builds):
    build, builds = image_builds
    image = build()
    os.utime(image.path, ns=(0, 1))            # cp without -p: the content is what was built
    assert build() == image and len(builds) == 1
    recorded = json.loads((image.path.parent / "manifest.json").read_text())["base"]
    assert (recorded["mtime_ns"], recorded["sha256"]) == (1, sha256_file(image.path))


def test_an_image_built_before_its_hash_was_recorded_gets_it_on_first_use(tmp_path):
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD)
    d = fake_built(settings, recipe)
    image = images.cached(recipe, settings)
    assert image is not None
    assert json.loads((d / "manifest.json").read_text())["base"]["sha256"] == sha256_file(d / "base.img")


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_a_restored_copys_overlay_is_backed_by_the_saved_disk_which_is_backed_by_the_base(tmp_path):
    image = _base_image(tmp_path)
    base = image.path
    saved = images.create_overlay(image, tmp_path / "saved.qcow2")
    saved.chmod(0o444)   # as a snapshot keeps it
    overlay = images.create_overlay(image, tmp_path / "copy.qcow2", over=saved)
    chain = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", str(overlay)],
                                      capture_output=True, check=True, text=True).stdout)
    assert [(c["filename"], c["format"]) for c in chain] == [
        (str(overlay), "qcow2"), (str(saved), "qcow2"), (str(base), "raw")]


# what a recipe adds ------------------------------------------------------------------------------
def test_a_recipes_debs_local_as_they_are_and_a_suites_package_fetched_verified(tmp_path, monkeypatch):
    from livepatch_lab.supply import apt
    (tmp_path / "agent_1_amd64.deb").write_bytes(b"x")
    asked = []
    monkeypatch.setattr(apt, "update", lambda root: asked.append(("update", root.suites)))
    monkeypatch.setattr(apt, "packages", lambda root, want: [
        apt.PackageRecord(n, v, n, "", f"pool/{n}_{v}.deb", f"sha-{v}", 1)
        for n, v in (("kpatch", "0.9.10-1"), ("kpatch", "0.9.11-1"), ("kpatch-build", "0.9.11-1")) if want(n)])

    def download(root, package, version, dest, sha256=None):
        asked.append(("download", package, version, sha256, dest))
        return apt.Deb(package, version, dest / f"{package}_{version}_amd64.deb", sha256, 1)
    monkeypatch.setattr(apt, "download", download)
    settings = Settings(cache_dir=tmp_path / "cache")
    recipe = load(tmp_path, GOOD + "debs:\n  - {file: agent_1_amd64.deb}\n  - {package: kpatch, suite: sid}\n")
    local, fetched = images.recipe_debs(recipe, settings)
    assert local.path == tmp_path / "agent_1_amd64.deb" and local.sha256 == recipe.debs[0].sha256
    assert (fetched.package, fetched.version) == ("kpatch", "0.9.11-1")    # the newest
    assert asked == [("update", ("sid",)), ("download", "kpatch", "0.9.11-1", "sha-0.9.11-1", settings.downloads_dir)]
    pinned = load(tmp_path, GOOD + "debs:\n  - {package: kpatch, suite: sid, version: 0.9.10-1}\n")
    assert images.recipe_debs(pinned, settings)[0].version == "0.9.10-1"
    monkeypatch.setattr(apt, "missing_error", lambda root, p, v: ConfigError(f"{p}={v} is not in sid"))
    gone = load(tmp_path, GOOD + "debs:\n  - {package: kpatch, suite: sid, version: 9}\n")
    with pytest.raises(ConfigError, match="kpatch=9 is not in sid"):
        images.recipe_debs(gone, settings)
