"""The kernel cache: complete, matching, unmoved entries only; the newest or the pinned; no network."""
import json
import logging
import shutil

import pytest

from livepatch_lab.core import hostcmd
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt
from livepatch_lab.supply.kernels import cache as kernelcache, fetch as kernelfetch
from livepatch_lab.supply.kernels.kernel import PackageRef
from tests.unit.fakes.kernels import build_deb, defn, fake_cached


@pytest.fixture
def offline(monkeypatch):
    """Any apt or host command fails the test: the cache must answer alone."""
    def boom(*a, **kw):
        raise AssertionError("network or host command used")
    monkeypatch.setattr(hostcmd, "run", boom)
    monkeypatch.setattr(apt, "update", boom)
    monkeypatch.setattr(apt, "packages", boom)


def test_cached_returns_the_newest_complete_kernel(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    fake_cached(s, d, "6.1.176-1", "6.1.0-50-amd64")
    fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64")
    incomplete = s.kernels_dir / d.name / "6.1.999-1"
    (incomplete / "root").mkdir(parents=True)           # no manifest: an interrupted unpack
    (s.kernels_dir / d.name / ".extract-6.1.999-1-x").mkdir()
    k = kernelcache.cached(d, s)
    assert (k.version, k.release, k.compiler) == ("6.1.192-2", "6.1.0-56-amd64", "gcc-12")
    assert k.modules_dir == s.kernels_dir / d.name / "6.1.192-2/root/lib/modules/6.1.0-56-amd64"
    assert k.packages == (PackageRef("linux-image-x", "6.1.192-2", "ab", "kmod"),)
    assert (k.suites, k.cache_entry) == (("bookworm", "bookworm-security"),
                                         s.kernels_dir / d.name / "6.1.192-2")
    described = json.loads(json.dumps(k.describe()))
    assert described["release"] == "6.1.0-56-amd64"
    assert described["packages"] == [{"name": "linux-image-x", "version": "6.1.192-2", "sha256": "ab"}]
    assert kernelfetch.fetch(d, s) == k


def test_cached_honours_the_pin(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    fake_cached(s, d, "6.1.176-1", "6.1.0-50-amd64")
    fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64")
    assert kernelcache.cached(defn(tmp_path, pin="6.1.176-1"), s).release == "6.1.0-50-amd64"
    assert kernelcache.cached(defn(tmp_path, pin="6.1.1-1"), s) is None


def test_cached_ignores_other_series_and_moved_trees(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    fake_cached(s, d, "6.12.1-1", "6.12.1-amd64", series="6.12")
    fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64", location="/somewhere/else")
    assert kernelcache.cached(d, s) is None


def test_cached_ignores_a_tree_with_missing_files(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    vdir = fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64")
    (vdir / "root/lib/modules/6.1.0-56-amd64/modules.dep").unlink()
    assert kernelcache.cached(d, s) is None


# --- entries from before the packages' Depends were recorded ----------------------------
def old_entry(s: Settings, tmp_path, with_debs: bool):
    """A cache entry as older checkouts wrote it: no Depends in its manifest."""
    d = defn(tmp_path)
    packages = []
    for name, depends in (("linux-headers-6.1.0-56-amd64", "linux-kbuild-6.1 (>= 6.1.192-2), gcc-12"),
                          ("linux-kbuild-6.1", "libc6 (>= 2.34)")):
        deb = build_deb(tmp_path / "debs", name, "6.1.192-2", {}, depends=depends) if with_debs \
            else tmp_path / apt.deb_name(name, "6.1.192-2")
        if with_debs:
            s.downloads_dir.mkdir(parents=True, exist_ok=True)
            deb.rename(s.downloads_dir / deb.name)
        packages.append({"name": name, "version": "6.1.192-2", "sha256": "ab", "size": 1,
                         "file": deb.name})
    return d, fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64", packages=packages)


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_an_old_entry_gets_its_depends_from_its_debs_once(tmp_path, monkeypatch, caplog):
    s = Settings(cache_dir=tmp_path / "cache")
    d, vdir = old_entry(s, tmp_path, with_debs=True)
    with caplog.at_level(logging.INFO, logger="livepatch_lab.supply.kernels.cache"):
        k = kernelcache.cached(d, s)
    assert k.kbuild_depends == ("linux-kbuild-6.1 (>= 6.1.192-2), gcc-12", "libc6 (>= 2.34)")
    assert "predates recorded package Depends" in caplog.text
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert manifest["format"] == 1                   # older checkouts sharing the cache still read it
    assert [p["depends"] for p in manifest["packages"]] == list(k.kbuild_depends)

    def boom(*a, **kw):
        raise AssertionError("read the .debs again")
    monkeypatch.setattr(hostcmd, "run", boom)
    assert kernelcache.cached(d, s) == k


def test_an_old_entry_whose_debs_are_gone_still_serves_but_says_so(tmp_path, caplog):
    s = Settings(cache_dir=tmp_path / "cache")
    d, vdir = old_entry(s, tmp_path, with_debs=False)
    before = (vdir / "manifest.json").read_text()
    with caplog.at_level(logging.WARNING, logger="livepatch_lab.supply.kernels.cache"):
        k = kernelcache.cached(d, s)
    assert k is not None and k.release == "6.1.0-56-amd64"     # boots as before
    assert k.kbuild_depends is None                             # a new build root would refuse it
    assert "records no package Depends" in caplog.text and str(vdir) in caplog.text
    assert (vdir / "manifest.json").read_text() == before
