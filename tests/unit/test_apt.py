"""The private apt root: its command line, list parsing, freshness, downloads (no network)."""
import gzip
import hashlib
import json
import lzma
import time
from pathlib import Path

import pytest
from tenacity import wait_none

from livepatch_lab.core import retry
from livepatch_lab.core.errors import ConfigError, HostCommandError, InfraError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt, mirror

ARCHIVE = "http://mirror.example/debian"

PACKAGES = """\
Package: linux-image-6.1.0-56-amd64-unsigned
Source: linux (6.1.192-2)
Version: 6.1.192-2
Installed-Size: 400000
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Description: Linux 6.1 for 64-bit PCs
 The Linux kernel 6.1 and modules for use on PCs with AMD64, Intel 64 or
 VIA Nano processors.
Filename: pool/updates/main/l/linux/linux-image-6.1.0-56-amd64-unsigned_6.1.192-2_amd64.deb
Size: 70560688
SHA256: 530631662c9ad84758eca2d7609cf40623309afd4bccbeb563f33e9c7f220bdf

Package: linux-kbuild-6.1
Version: 6.1.192-2
Depends: libc6 (>= 2.34),
 libelf1 (>= 0.142)
Filename: pool/main/l/linux/linux-kbuild-6.1_6.1.192-2_amd64.deb
Size: 1568188
SHA256: 7e852381f1c455a439230ea3261e3669f2307afdbed57db0fc08ed8ffa689f60

Package: hello
Version: 2.10-3
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 1
SHA256: 00

Package: broken-without-version
Filename: pool/x.deb
"""


@pytest.fixture
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache", debian_mirror=ARCHIVE)


@pytest.fixture
def root(settings):
    return apt.root_for(settings, ["bookworm", "bookworm-security", "bookworm-updates"])


@pytest.fixture
def fast_retries(monkeypatch):
    """The real download policy (stop, retry condition), minus its waits."""
    real = retry.download_policy
    monkeypatch.setattr(retry, "download_policy", lambda: real().copy(wait=wait_none()))


class FakeRun:
    """Stands in for hostcmd.run: records argv, answers from a list of callables."""

    def __init__(self, *answers):
        self.calls = []
        self.answers = list(answers)

    def __call__(self, cmd, *, what, timeout, cwd=None, env=None, input=None):
        argv = [str(c) for c in cmd]
        self.calls.append((argv, cwd))
        answer = self.answers.pop(0) if self.answers else ""
        if callable(answer):
            return answer(argv, cwd)
        if isinstance(answer, Exception):
            raise answer
        return answer


# --- sources and options ----------------------------------------------------
def test_security_suites_go_to_the_security_archive_with_the_debian_keyring():
    text = apt.sources_for(["bullseye", "bullseye-security"], mirror.Mirrors.from_archive(ARCHIVE))
    assert text.splitlines() == [
        f"deb [signed-by={mirror.KEYRING}] {ARCHIVE} bullseye main",
        f"deb [signed-by={mirror.KEYRING}] {ARCHIVE}-security bullseye-security main",
    ]


def test_root_is_named_after_its_suites_and_lives_under_apt_dir(root, settings):
    assert root.name == "bookworm+bookworm-security+bookworm-updates"
    assert root.path == settings.apt_dir / root.name
    assert root.suites == ("bookworm", "bookworm-security", "bookworm-updates")


def test_root_needs_suites(settings):
    with pytest.raises(ConfigError):
        apt.root_for(settings, [])


def _opts(argv):
    return {argv[i + 1].split("=", 1)[0]: argv[i + 1].split("=", 1)[1]
            for i, a in enumerate(argv) if a == "-o"}


def test_options_isolate_the_root_from_the_host(root, monkeypatch):
    monkeypatch.setattr(apt.os, "geteuid", lambda: 1000)
    opts = _opts(root.options())
    assert opts["Dir::Etc::SourceList"] == str(root.path / "sources.list")
    assert opts["Dir::Etc::SourceParts"] == "/dev/null"
    assert opts["Dir::State::Status"] == str(root.path / "status")
    assert opts["Dir::State::Lists"] == str(root.path / "lists")
    assert opts["Dir::Cache"] == str(root.path / "cache")
    assert opts["APT::Architecture"] == "amd64"
    assert "APT::Sandbox::User" not in opts
    argv = root.command("apt-get", "update")
    assert argv[0] == "apt-get" and argv[-1] == "update"
    assert argv[1:3] == ["-c", str(root.path / "apt.conf")]


def test_as_root_apt_does_not_drop_to_the_apt_user(root, monkeypatch):
    monkeypatch.setattr(apt.os, "geteuid", lambda: 0)
    assert _opts(root.options())["APT::Sandbox::User"] == "root"


# --- update and freshness ---------------------------------------------------
def test_update_runs_apt_get_update_once_then_trusts_the_stamp(root, monkeypatch):
    fake = FakeRun()
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    assert apt.update(root) is True
    assert fake.calls[0][0][0] == "apt-get" and fake.calls[0][0][-1] == "update"
    assert (root.path / "sources.list").read_text() == root.sources_list
    assert (root.path / "status").read_text() == ""
    conf = (root.path / "apt.conf").read_text()
    assert "#clear APT::Update::Post-Invoke-Success;" in conf
    assert apt.update(root) is False
    assert len(fake.calls) == 1
    assert apt.update(root, force=True) is True
    assert len(fake.calls) == 2


def test_stale_or_foreign_stamp_is_not_fresh(root):
    root.path.mkdir(parents=True)
    stamp = root.path / "updated.json"
    assert not apt.is_fresh(root)
    stamp.write_text(json.dumps({"sources": root.sources_list, "time": time.time()}))
    assert apt.is_fresh(root)
    assert not apt.is_fresh(root, now=time.time() + apt.MAX_AGE + 1)
    stamp.write_text(json.dumps({"sources": "deb other", "time": time.time()}))
    assert not apt.is_fresh(root)
    stamp.write_text("not json")
    assert not apt.is_fresh(root)


def test_failed_update_is_retried_then_raised_with_apts_output(root, monkeypatch, fast_retries):
    err = HostCommandError("apt-get update", ["apt-get", "update"], 100,
                           "E: Failed to fetch .../InRelease  Could not resolve host")
    fake = FakeRun(err, err, err)
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    with pytest.raises(HostCommandError, match="Could not resolve"):
        apt.update(root)
    assert len(fake.calls) == 3
    assert not apt.is_fresh(root)


def test_a_transient_update_failure_recovers(root, monkeypatch, fast_retries):
    err = HostCommandError("apt-get update", ["apt-get"], 100, "E: timeout")
    fake = FakeRun(err, "")
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    assert apt.update(root) is True
    assert apt.is_fresh(root)


# --- reading the lists ------------------------------------------------------
def test_parse_packages_reads_the_fields_the_lab_uses():
    recs = {r.package: r for r in apt.parse_packages(PACKAGES)}
    assert set(recs) == {"linux-image-6.1.0-56-amd64-unsigned", "linux-kbuild-6.1", "hello"}
    img = recs["linux-image-6.1.0-56-amd64-unsigned"]
    assert img.version == "6.1.192-2"
    assert img.source == "linux"
    assert img.size == 70560688
    assert img.sha256.startswith("530631")
    assert img.filename.endswith("_6.1.192-2_amd64.deb")
    assert "linux-base (>= 4.3~)" in img.depends
    assert recs["hello"].source == "hello"        # no Source field: the package itself
    kb = recs["linux-kbuild-6.1"]
    assert [g[0].name for g in apt.parse_depends(kb.depends)] == ["libc6", "libelf1"]


def test_parse_packages_filters_by_name():
    names = [r.package for r in apt.parse_packages(PACKAGES, lambda n: n.startswith("linux-"))]
    assert names == ["linux-image-6.1.0-56-amd64-unsigned", "linux-kbuild-6.1"]


def test_packages_reads_plain_gz_and_xz_lists_and_deduplicates(root):
    root.lists.mkdir(parents=True)
    (root.lists / "m_dists_bookworm_main_binary-amd64_Packages").write_text(PACKAGES)
    (root.lists / "m_dists_bookworm-updates_main_binary-amd64_Packages.gz").write_bytes(
        gzip.compress(PACKAGES.encode()))
    extra = PACKAGES.replace("2.10-3", "2.10-4")
    (root.lists / "s_dists_bookworm-security_main_binary-amd64_Packages.xz").write_bytes(
        lzma.compress(extra.encode()))
    (root.lists / "m_dists_bookworm_InRelease").write_text("not a Packages file")
    recs = apt.packages(root)
    got = sorted((r.package, r.version) for r in recs)
    assert got == [("hello", "2.10-3"), ("hello", "2.10-4"),
                   ("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2"),
                   ("linux-kbuild-6.1", "6.1.192-2")]


def test_packages_without_lists_is_an_infra_error(root):
    with pytest.raises(InfraError, match="no package lists"):
        apt.packages(root)


@pytest.mark.parametrize("text,want", [
    ("a", [[("a", None, None)]]),
    ("a (>= 1.0), b", [[("a", ">=", "1.0")], [("b", None, None)]]),
    ("x (= 1) | y (= 1)", [[("x", "=", "1"), ("y", "=", "1")]]),
    ("gcc-16-for-host, linux-base (>= 4.12~)",
     [[("gcc-16-for-host", None, None)], [("linux-base", ">=", "4.12~")]]),
    ("python3:any (<< 3.12) [amd64] <!nocheck>", [[("python3", "<<", "3.12")]]),
    ("", []),
])
def test_parse_depends(text, want):
    got = [[(r.name, r.op, r.version) for r in group] for group in apt.parse_depends(text)]
    assert got == want


def test_relation_satisfaction_uses_debian_ordering():
    rel = apt.parse_depends("linux-kbuild-6.1 (>= 6.1.192-2)")[0][0]
    assert rel.satisfied_by("6.1.192-2")
    assert rel.satisfied_by("6.1.192-2+b1")
    assert not rel.satisfied_by("6.1.192-2~deb11u1")
    assert apt.Relation("x").satisfied_by("anything-1")


# --- downloads --------------------------------------------------------------
def test_deb_name_quotes_the_epoch():
    assert apt.deb_name("zlib1g", "1:1.2.13") == "zlib1g_1%3a1.2.13_amd64.deb"
    assert apt.deb_name("linux-kbuild-6.1", "6.1.192-2") == "linux-kbuild-6.1_6.1.192-2_amd64.deb"


def _fake_apt_download(content: bytes):
    def run(argv, cwd):
        pkg, _, version = argv[-1].partition("=")
        (Path(cwd) / apt.deb_name(pkg, version)).write_bytes(content)
        return ""
    return run


def test_download_lands_the_deb_with_its_hash(root, tmp_path, monkeypatch):
    content = b"!<arch>\nfake deb"
    fake = FakeRun(_fake_apt_download(content))
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    dest = tmp_path / "downloads"
    deb = apt.download(root, "linux-kbuild-6.1", "6.1.192-2", dest,
                       sha256=hashlib.sha256(content).hexdigest())
    assert deb.path == dest / "linux-kbuild-6.1_6.1.192-2_amd64.deb"
    assert deb.sha256 == hashlib.sha256(content).hexdigest()
    assert deb.size == len(content)
    assert fake.calls[0][0][-2:] == ["download", "linux-kbuild-6.1=6.1.192-2"]
    assert [p.name for p in dest.iterdir()] == [deb.path.name]    # no temp dir left


def test_an_existing_deb_with_the_right_hash_needs_no_network(root, tmp_path, monkeypatch):
    dest = tmp_path / "downloads"
    dest.mkdir()
    f = dest / apt.deb_name("hello", "2.10-3")
    f.write_bytes(b"deb")
    monkeypatch.setattr(apt.hostcmd, "run", FakeRun(AssertionError("network used")))
    deb = apt.download(root, "hello", "2.10-3", dest, sha256=hashlib.sha256(b"deb").hexdigest())
    assert deb.path == f


def test_an_existing_deb_with_a_wrong_hash_is_downloaded_again(root, tmp_path, monkeypatch):
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / apt.deb_name("hello", "2.10-3")).write_bytes(b"truncated")
    fake = FakeRun(_fake_apt_download(b"good"))
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    deb = apt.download(root, "hello", "2.10-3", dest, sha256=hashlib.sha256(b"good").hexdigest())
    assert deb.path.read_bytes() == b"good" and len(fake.calls) == 1


def test_a_hash_mismatch_after_download_is_an_infra_error(root, tmp_path, monkeypatch):
    monkeypatch.setattr(apt.hostcmd, "run", FakeRun(_fake_apt_download(b"evil")))
    with pytest.raises(InfraError, match="sha256"):
        apt.download(root, "hello", "2.10-3", tmp_path / "d", sha256="0" * 64)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_missing_version_is_a_config_error_listing_what_exists(root, tmp_path, monkeypatch,
                                                                 fast_retries):
    missing = HostCommandError("download", ["apt-get"], 100,
                               "E: Version '9.9-9' for 'hello' was not found")
    madison = (" hello |   2.10-3 | http://mirror.example/debian bookworm/main amd64 Packages\n"
               " hello |   2.10-2 | http://mirror.example/debian bookworm/main amd64 Packages\n")
    fake = FakeRun(missing, madison)
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    with pytest.raises(ConfigError) as err:
        apt.download(root, "hello", "9.9-9", tmp_path / "d")
    assert "hello=9.9-9" in str(err.value)
    assert "2.10-3, 2.10-2" in str(err.value)
    assert len(fake.calls) == 2          # not retried: a missing version is not transient
    assert fake.calls[1][0][-2:] == ["madison", "hello"]


def test_an_unknown_package_is_a_config_error(root, tmp_path, monkeypatch, fast_retries):
    missing = HostCommandError("download", ["apt-get"], 100, "E: Unable to locate package nope")
    monkeypatch.setattr(apt.hostcmd, "run", FakeRun(missing, ""))
    with pytest.raises(ConfigError, match="available versions of nope: none"):
        apt.download(root, "nope", "1", tmp_path / "d")


def test_transient_download_failures_are_retried_three_times(root, tmp_path, monkeypatch,
                                                             fast_retries):
    err = HostCommandError("download", ["apt-get"], 100, "E: Failed to fetch ... 503")
    fake = FakeRun(err, err, err)
    monkeypatch.setattr(apt.hostcmd, "run", fake)
    with pytest.raises(HostCommandError, match="503"):
        apt.download(root, "hello", "2.10-3", tmp_path / "d")
    assert len(fake.calls) == 3
    assert list((tmp_path / "d").iterdir()) == []
