"""An end-to-end fetch from local .debs (dpkg-deb, dpkg -x, depmod; no network)."""
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from livepatch_lab.core import hostcmd
from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt
from livepatch_lab.supply.kernels import fetch as kernelfetch, tree as kerneltree
from livepatch_lab.supply.apt import PackageRecord
from tests.unit.fakes.kernels import bookworm_archive, build_deb, defn, fake_bzimage


def fake_archive(workdir: Path, downloads: Path, split: bool) -> list:
    """A tiny kernel in 6.1 packaging (split=False) or 7.x packaging (split=True)."""
    abi, v, release = "9.9.0-1", "9.9.1-1", "9.9.0-1-amd64"
    bz = workdir / "bz"
    fake_bzimage(bz, release)
    config = 'CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"\n'
    mods = "usr/lib/modules" if split else "lib/modules"
    debs = []
    if split:
        debs.append((f"linux-binary-unsigned-{release}", {
            f"{mods}/{release}/vmlinuz.unsigned": bz.read_bytes()}, {}, f"linux-base-{release} (= {v})"))
        debs.append((f"linux-modules-{release}", {f"{mods}/{release}/kernel/README": "x"}, {}, ""))
        debs.append((f"linux-base-{release}", {f"{mods}/{release}/config": config,
                                               f"{mods}/{release}/modules.order": ""}, {}, ""))
    else:
        debs.append((f"linux-image-{release}-unsigned", {
            f"boot/vmlinuz-{release}": bz.read_bytes(), f"boot/config-{release}": config,
            f"{mods}/{release}/kernel/README": "x", f"{mods}/{release}/modules.order": ""}, {}, ""))
    debs.append((f"linux-headers-{release}", {
        f"usr/src/linux-headers-{release}/Makefile": f"include /usr/src/linux-headers-{abi}-common/Makefile\n"},
        {f"lib/modules/{release}/build": f"/usr/src/linux-headers-{release}",
         f"usr/src/linux-headers-{release}/scripts": "../../lib/linux-kbuild-9.9/scripts"},
        f"linux-headers-{abi}-common (= {v}), linux-kbuild-9.9 (>= {v}), linux-compiler-gcc-12-x86"))
    debs.append((f"linux-headers-{abi}-common", {
        f"usr/src/linux-headers-{abi}-common/Makefile": "modules:\n\t@echo built\n"}, {}, ""))
    debs.append(("linux-kbuild-9.9", {"usr/lib/linux-kbuild-9.9/scripts/.keep": ""}, {}, ""))
    records = []
    downloads.mkdir(parents=True, exist_ok=True)
    for package, files, links, depends in debs:
        path = build_deb(workdir, package, v, files, links)
        shutil.copy(path, downloads / path.name)
        records.append(PackageRecord(package, v, "linux", depends, f"pool/{path.name}",
                                     hashlib.sha256(path.read_bytes()).hexdigest(),
                                     path.stat().st_size))
    return records


@pytest.mark.skipif(not (shutil.which("dpkg-deb") and shutil.which("depmod")),
                    reason="needs dpkg-deb and depmod")
@pytest.mark.parametrize("split", [False, True], ids=["image-unsigned", "split-7x"])
def test_fetch_unpacks_fixes_up_and_then_serves_from_the_cache(tmp_path, monkeypatch, split):
    s = Settings(cache_dir=tmp_path / "cache", debian_mirror="http://mirror.example/debian")
    records = fake_archive(tmp_path / "work", s.downloads_dir, split)
    d = defn(tmp_path, name="fake", series="9.9")
    updates = []
    monkeypatch.setattr(apt, "update", lambda root, force=False: updates.append(force))
    monkeypatch.setattr(apt, "packages", lambda root, want=None: records)
    real_run = hostcmd.run

    def no_apt(cmd, **kw):
        assert not str(cmd[0]).startswith("apt"), "the .debs were already downloaded"
        return real_run(cmd, **kw)
    monkeypatch.setattr(hostcmd, "run", no_apt)

    assert kernelfetch.resolve(d, s) == ("9.9.0-1-amd64", "9.9.1-1")
    k = kernelfetch.fetch(d, s)
    vdir = s.kernels_dir / "fake" / "9.9.1-1"
    assert (k.release, k.version, k.compiler) == ("9.9.0-1-amd64", "9.9.1-1", "gcc-12")
    assert k.vmlinuz == vdir / "root/boot/vmlinuz-9.9.0-1-amd64"     # 7.x's moved out of modules/
    assert kerneltree.bzimage_release(k.vmlinuz) == k.release
    assert (k.modules_dir / "modules.dep").is_file()
    assert (k.modules_dir / "kernel/README").is_file()
    assert k.modules_dir == vdir / "root" / ("usr/lib/modules" if split else "lib/modules") / k.release
    assert (vdir / "root/lib/modules" / k.release / "build").resolve() == k.build_dir.resolve()
    assert k.build_dir == vdir / "root/usr/src/linux-headers-9.9.0-1-amd64"
    assert (k.build_dir / "Makefile").read_text() == \
        f"include {vdir}/root/usr/src/linux-headers-9.9.0-1-common/Makefile\n"
    out = subprocess.run(["make", "-s", "-C", k.build_dir, "modules"], capture_output=True, text=True)
    assert out.stdout.strip() == "built", out.stderr
    assert k.config is not None and k.config.is_file()
    assert len(k.packages) == (6 if split else 4)
    assert {p.name: p.sha256 for p in k.packages} == {r.package: r.sha256 for r in records}
    # what a build root needs travels with the kernel: the suites and the archive's Depends
    assert (k.suites, k.suite, k.cache_entry) == (d.suites, "bookworm", vdir)
    assert {p.name: p.depends for p in k.packages} == {r.package: r.depends for r in records}
    assert "linux-compiler-gcc-12-x86" in " ".join(k.kbuild_depends)
    assert oct(vdir.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in (s.kernels_dir / "fake").iterdir()] == ["9.9.1-1"]

    # again: straight from the cache, no apt, no host command at all
    def boom(*a, **kw):
        raise AssertionError("used the network or a host command")
    monkeypatch.setattr(hostcmd, "run", boom)
    monkeypatch.setattr(apt, "packages", boom)
    assert kernelfetch.fetch(d, s) == k
    assert updates == [False, False]

    # refresh re-resolves (forced update) and finds nothing newer
    monkeypatch.setattr(apt, "packages", lambda root, want=None: records)
    assert kernelfetch.fetch(d, s, refresh=True) == k
    assert updates[-1] is True


def test_fetch_of_a_pin_missing_from_the_archive_names_it(tmp_path, monkeypatch):
    s = Settings(cache_dir=tmp_path, debian_mirror="http://mirror.example/debian")
    monkeypatch.setattr(apt, "update", lambda root, force=False: False)
    monkeypatch.setattr(apt, "packages", lambda root, want=None: bookworm_archive())
    with pytest.raises(ConfigError, match=r"pin 6.1.5-1 is not in bookworm, bookworm-security"):
        kernelfetch.fetch(defn(tmp_path, pin="6.1.5-1"), s)
