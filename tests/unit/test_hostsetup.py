"""What `livepatch-lab setup` installs, per distribution and per flag, and how it reads the host."""
from pathlib import Path

from livepatch_lab.cli.parser import build_parser
from livepatch_lab.supply import hostsetup

RUN = ["qemu-system-x86", "qemu-utils", "mmdebstrap", "debian-archive-keyring", "e2fsprogs", "cpio", "busybox-static",
       "kmod", "dpkg", "file", "gcc", "make", "libelf-dev", "libc6-dev", "openssh-client", "zstd"]
LIBVIRT = ["libvirt-daemon-system", "libvirt-clients", "libvirt-dev", "pkg-config", "python3-dev"]


def test_a_run_needs_only_the_runtime_packages_on_debian_and_ubuntu_alike():
    assert hostsetup.plan("debian") == RUN
    assert hostsetup.plan("ubuntu") == RUN


def test_libvirt_and_the_test_suite_add_theirs_and_ubuntu_gets_no_snap_chromium():
    assert hostsetup.plan("debian", libvirt=True) == RUN + LIBVIRT
    test = ["stress-ng", "openssh-server", "shellcheck"]
    assert hostsetup.plan("debian", test=True) == RUN + LIBVIRT + test + ["chromium", "fonts-dejavu-core"]
    assert hostsetup.plan("ubuntu", test=True) == RUN + LIBVIRT + test + ["fonts-dejavu-core"]
    assert [n.package for n in hostsetup.skipped("ubuntu", test=True)] == ["chromium"]
    assert hostsetup.skipped("debian", test=True) == []


def test_every_package_says_why_it_is_there():
    assert all(n.why for n in (*hostsetup.RUNTIME, *hostsetup.LIBVIRT, *hostsetup.TEST))


def test_the_distribution_comes_from_os_release_derivatives_by_id_like(tmp_path: Path):
    def read(text: str) -> tuple[str, str]:
        (tmp_path / "os-release").write_text(text)
        return hostsetup.distro(tmp_path / "os-release")
    assert read('ID=debian\nVERSION_CODENAME=bookworm\n') == ("debian", "bookworm")
    assert read('ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n') == ("ubuntu", "noble")
    assert read('ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_CODENAME=wilma\n') == ("ubuntu", "wilma")
    assert read('ID=fedora\n') == ("", "")
    assert hostsetup.distro(tmp_path / "missing") == ("", "")


def test_setup_print_lists_the_packages_and_installs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(hostsetup, "distro", lambda: ("debian", "bookworm"))
    monkeypatch.setattr(hostsetup, "apt_install", lambda *a, **k: (_ for _ in ()).throw(AssertionError("installed")))
    args = build_parser().parse_args(["setup", "--print", "--libvirt"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.split() == RUN + LIBVIRT


def test_setup_refuses_a_host_it_does_not_know_naming_what_to_do(monkeypatch):
    import pytest

    from livepatch_lab.core.errors import InfraError
    monkeypatch.setattr(hostsetup, "distro", lambda: ("", ""))
    with pytest.raises(InfraError, match="Debian and Ubuntu.*doctor"):
        hostsetup.setup(libvirt=False, test=False, say=print)
