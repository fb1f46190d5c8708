"""The kernel's selftests and samples from a linux-source package (a miniature one, built here)."""
import hashlib
import io
import shutil
import tarfile

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt
from livepatch_lab.supply.kernels import source as kernelsource
from livepatch_lab.supply.apt import PackageRecord
from tests.unit.fakes.kernels import build_deb, fake_kernel, rec


def test_the_package_is_named_after_the_kernels_series():
    assert kernelsource.package_for("6.1.192-3") == "linux-source-6.1"
    assert kernelsource.package_for("6.12.118-1") == "linux-source-6.12"
    assert kernelsource.package_for("7.2.13-1") == "linux-source-7.2"
    assert kernelsource.package_for("6.12.57-1~bpo12+1") == "linux-source-6.12"


def test_the_kernels_own_version_is_chosen_when_the_archive_has_it():
    records = [rec("linux-source-6.1", v) for v in ("6.1.176-1", "6.1.192-3", "6.1.192-2")]
    got, note = kernelsource.choose(records, "linux-source-6.1", "6.1.192-3")
    assert (got.version, note) == ("6.1.192-3", None)


def test_without_an_exact_match_the_closest_older_one_is_used_and_said():
    records = [rec("linux-source-6.1", v) for v in ("6.1.176-1", "6.1.192-2", "6.1.200-1")]
    got, note = kernelsource.choose(records, "linux-source-6.1", "6.1.192-3")
    assert got.version == "6.1.192-2"
    assert "no linux-source-6.1 6.1.192-3" in note and "closest, 6.1.192-2" in note
    got, note = kernelsource.choose(records, "linux-source-6.1", "6.1.100-1")
    assert got.version == "6.1.176-1" and note      # nothing older: the oldest newer one


def test_an_archive_without_the_package_is_an_input_error():
    with pytest.raises(ConfigError, match="no linux-source-6.1 at all"):
        kernelsource.choose([rec("linux-source-5.10", "5.10.1-1")], "linux-source-6.1", "6.1.192-3")


def source_deb(tmp_path, version, new_layout=False):
    """A linux-source-9.9 .deb whose tarball holds the three wanted directories, other kernel
    files, and members that must never be written (a path outside, a symlink)."""
    top = "linux-source-9.9"
    files = {
        "tools/testing/selftests/livepatch/Makefile": "TEST_PROGS := test-a.sh\n",
        "tools/testing/selftests/livepatch/functions.sh": "# functions\n",
        "tools/testing/selftests/livepatch/test-a.sh": 'start_test "a"\n',
        "samples/livepatch/livepatch-sample.c": "/* sample */\n",
        "kernel/livepatch/core.c": "/* not wanted */\n",
    }
    mods = "tools/testing/selftests/livepatch/test_modules" if new_layout else "lib/livepatch"
    files[f"{mods}/test_klp_state2.c"] = "/* two */\n"
    files[f"{mods}/test_klp_state3.c"] = '#include "test_klp_state2.c"\n'
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        def add(name, data=b"", mode=0o644, kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.type, info.linkname = len(data), mode, kind, link
            tar.addfile(info, io.BytesIO(data))
        for rel, text in files.items():
            add(f"{top}/{rel}", text.encode(), 0o755 if rel.endswith(".sh") else 0o644)
        add(f"{top}/tools/testing/selftests/livepatch/../../../../evil", b"x")
        add(f"{top}/samples/livepatch/link", kind=tarfile.SYMTYPE, link="/etc/passwd")
    deb = build_deb(tmp_path / "debs", "linux-source-9.9", version,
                    {"usr/src/linux-source-9.9.tar.xz": buf.getvalue()})
    return deb


@pytest.fixture
def archive(tmp_path, monkeypatch):
    """apt, answered from local .debs; records the downloads."""
    debs = {}
    downloads = []
    monkeypatch.setattr(apt, "update", lambda root, force=False: False)
    monkeypatch.setattr(apt, "packages", lambda root, want=lambda n: True: [
        PackageRecord("linux-source-9.9", v, "linux", "", f"pool/{p.name}",
                      hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for v, p in debs.items()
        if want("linux-source-9.9")])

    def download(root, package, version, dest_dir, *, sha256=None, size=None):
        downloads.append((package, version))
        dest_dir.mkdir(parents=True, exist_ok=True)
        out = dest_dir / debs[version].name
        shutil.copyfile(debs[version], out)
        return apt.Deb(package, version, out, hashlib.sha256(out.read_bytes()).hexdigest(), out.stat().st_size)
    monkeypatch.setattr(apt, "download", download)
    return debs, downloads


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
@pytest.mark.parametrize("new_layout", [False, True], ids=["lib-livepatch", "test_modules"])
def test_fetch_unpacks_only_the_wanted_parts_and_makes_a_kbuild_dir_per_module(tmp_path, archive, new_layout):
    debs, downloads = archive
    debs["9.9.1-1"] = source_deb(tmp_path, "9.9.1-1", new_layout)
    s = Settings(cache_dir=tmp_path / "cache")
    k = fake_kernel(tmp_path, name="fake", version="9.9.1-1", suites=("fakesuite",))
    src = kernelsource.fetch(k, s)
    assert (src.package, src.version, src.exact, src.note) == ("linux-source-9.9", "9.9.1-1", True, None)
    assert (src.selftests_dir / "test-a.sh").read_text() == 'start_test "a"\n'
    assert oct((src.selftests_dir / "test-a.sh").stat().st_mode & 0o777) == "0o755"
    assert not (src.tree / "kernel").exists()                  # not wanted
    assert not (src.tree / "samples/livepatch/link").exists()  # a symlink is never written
    assert not list(tmp_path.rglob("evil"))                    # nor a path leading outside
    assert src.modprobe_layout is (not new_layout)
    mods = src.test_modules()
    assert sorted(mods) == ["test_klp_state2", "test_klp_state3"]
    three = mods["test_klp_state3"]
    assert (three / "Kbuild").read_text().splitlines()[-1] == "obj-m := test_klp_state3.o"
    assert (three / "test_klp_state2.c").is_file()             # what it includes is beside it
    assert src.sample("livepatch-sample") == src.path / "kbuild/samples/livepatch-sample"
    with pytest.raises(ConfigError, match="no sample 'nope'.*livepatch-sample"):
        src.sample("nope")
    assert not list(src.path.rglob("*.deb"))                   # the 140 MB package is not kept
    # again: from the cache, without apt
    assert kernelsource.fetch(k, s) == src and downloads == [("linux-source-9.9", "9.9.1-1")]


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_fetch_without_the_kernels_version_uses_the_closest_and_says_so(tmp_path, archive):
    debs, _ = archive
    debs["9.9.0-1"] = source_deb(tmp_path, "9.9.0-1")
    s = Settings(cache_dir=tmp_path / "cache")
    src = kernelsource.fetch(fake_kernel(tmp_path, name="fake", version="9.9.1-1", suites=("x",)), s)
    assert (src.version, src.exact) == ("9.9.0-1", False)
    assert "closest, 9.9.0-1" in src.note and src.describe()["note"] == src.note


def test_a_local_kernel_has_no_source_package(tmp_path):
    with pytest.raises(ConfigError, match="local build"):
        kernelsource.fetch(fake_kernel(tmp_path, suites=()), Settings(cache_dir=tmp_path))
