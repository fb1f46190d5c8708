"""Build roots: their packages from the archive's Depends, the host's apt options, the chroot script, what is bound."""
import textwrap
from pathlib import Path

import pytest

from livepatch_lab.core.errors import InfraError
from livepatch_lab.supply import buildroot
from livepatch_lab.supply.kernels.kernel import PackageRef
from livepatch_lab.supply.toolchains import Toolchain
from tests.unit.fakes.kernels import fake_kernel as kernel


def test_a_kernel_outside_the_cache_exposes_its_build_and_source_trees(tmp_path):
    src_tree = tmp_path / "linux"
    src_tree.mkdir()
    k = kernel(tmp_path / "elsewhere")
    (k.build_dir / "source").symlink_to(src_tree)
    assert buildroot.kernel_trees(k) == [k.build_dir, src_tree]


# build roots ---------------------------------------------------------------------------------
def test_kbuild_depends_from_the_archive_records():
    # Depends of linux-headers-6.12.118+deb13-amd64 and linux-kbuild-6.12.118+deb13 (trixie)
    fields = ["linux-base (>= 4.12~), linux-headers-6.12.118+deb13-common (= 6.12.118-1), "
              "linux-image-6.12.118+deb13-amd64 (= 6.12.118-1) | "
              "linux-image-6.12.118+deb13-amd64-unsigned (= 6.12.118-1), "
              "linux-kbuild-6.12.118+deb13, gcc-14",
              "libc6 (>= 2.38), libelf1t64 (>= 0.144), libssl3t64 (>= 3.0.0), "
              "zlib1g (>= 1:1.2.3.4), pahole"]
    deps = buildroot.depends_packages(fields)
    assert deps == ["gcc-14", "libelf1t64", "libssl3t64", "zlib1g", "pahole"]
    assert buildroot.buildroot_packages("gcc-14", deps) == ["gcc-14", "libelf1t64", "libssl3t64",
                                                        "zlib1g", "pahole", "make", "libc6-dev"]


def test_sid_headers_name_gcc_for_host_and_the_plain_compiler_is_added_first():
    deps = buildroot.depends_packages(["gcc-16-for-host, linux-base (>= 4.12~)", "pahole, libc6 (>= 2.38)"])
    assert buildroot.buildroot_packages("gcc-16", deps) == ["gcc-16", "gcc-16-for-host", "pahole",
                                                        "make", "libc6-dev"]


def test_forwarded_apt_options():
    dump = textwrap.dedent("""\
        Acquire::AllowInsecureRepositories "0";
        Acquire::Check-Valid-Until "false";
        Acquire::http::Proxy "http://proxy:3128";
        Acquire::https::Proxy "";
        APT::Architecture "amd64";
        """)
    assert buildroot.forwarded_apt_options(dump) == ['--aptopt=Acquire::Check-Valid-Until "false"',
                                                 '--aptopt=Acquire::http::Proxy "http://proxy:3128"']


def test_the_chroot_script_binds_paths_at_their_own_place_and_kernel_trees_read_only():
    root = Path("/cache/toolchains/trixie-gcc-14/root")
    script = buildroot.chroot_script(root, [(Path("/cache/kernels/k/v"), False),
                                        (Path("/cache/modules/r"), True)],
                                 ["make", "-C", "/cache/kernels/k/v/root/usr/src/h", "M=/cache/modules/r/w/src"])
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert "mount --bind /cache/kernels/k/v /cache/toolchains/trixie-gcc-14/root/cache/kernels/k/v" in lines
    assert "mount -o remount,bind,ro /cache/toolchains/trixie-gcc-14/root/cache/kernels/k/v" in lines
    assert "mount --bind /cache/modules/r /cache/toolchains/trixie-gcc-14/root/cache/modules/r" in lines
    assert not any("remount" in l and "modules/r" in l for l in lines)
    assert lines[-1].startswith("exec chroot /cache/toolchains/trixie-gcc-14/root env -i ")
    assert lines[-1].endswith("make -C /cache/kernels/k/v/root/usr/src/h M=/cache/modules/r/w/src")


def test_a_cached_kernel_exposes_its_whole_cache_entry(tmp_path):
    k = kernel(tmp_path, cached=True)
    assert buildroot.kernel_trees(k) == [tmp_path / "kernels/debian-6.1/6.1.192-2"]


def test_a_build_roots_packages_come_from_the_kernels_recorded_depends(tmp_path):
    headers = PackageRef("linux-headers-6.12.118+deb13-amd64", "6.12.118-1", "a",
                         "linux-headers-6.12.118+deb13-common (= 6.12.118-1), gcc-14")
    kbuild = PackageRef("linux-kbuild-6.12.118+deb13", "6.12.118-1", "b", "libc6 (>= 2.38), pahole")
    k = kernel(tmp_path, "debian-6.12", compiler="gcc-14", packages=(headers, kbuild))
    tc = Toolchain("buildroot", "gcc-14", "trixie")
    assert buildroot.packages_for(tc, k) == ["gcc-14", "pahole", "make", "libc6-dev"]


def test_a_kernel_without_recorded_depends_cannot_get_a_build_root(tmp_path):
    k = kernel(tmp_path, "debian-6.12", compiler="gcc-14", cached=True,
               packages=(PackageRef("linux-kbuild-6.12.118+deb13", "6.12.118-1", "b"),))
    with pytest.raises(InfraError, match="records no Depends") as err:
        buildroot.packages_for(Toolchain("buildroot", "gcc-14", "trixie"), k)
    assert str(k.cache_entry) in str(err.value)       # what to remove to fetch it again
