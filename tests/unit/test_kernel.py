"""What a ``Kernel`` tells the layers above without them reading the cache."""
from pathlib import Path

from livepatch_lab.supply.kernels.kernel import Kernel, PackageRef


def kernel(packages=(), suites=()) -> Kernel:
    return Kernel(name="debian-6.12", release="6.12.118+deb13-amd64", version="6.12.118-1",
                  vmlinuz=Path("/v"), modules_dir=Path("/m"), build_dir=Path("/b"), config=None,
                  compiler="gcc-14", packages=tuple(packages), suites=tuple(suites))


HEADERS = PackageRef("linux-headers-6.12.118+deb13-amd64", "6.12.118-1", "a",
                     "linux-headers-6.12.118+deb13-common (= 6.12.118-1), gcc-14")
KBUILD = PackageRef("linux-kbuild-6.12.118+deb13", "6.12.118-1", "b", "libc6 (>= 2.38), pahole")
IMAGE = PackageRef("linux-image-6.12.118+deb13-amd64-unsigned", "6.12.118-1", "c", "kmod")


def test_the_suite_is_the_first_one_without_its_pocket():
    assert kernel(suites=["trixie-security", "trixie"]).suite == "trixie"
    assert kernel(suites=["bookworm/updates"]).suite == "bookworm"
    assert kernel().suite is None                       # a local kernel


def test_kbuild_depends_are_those_of_the_headers_and_kbuild_packages():
    assert kernel([IMAGE, HEADERS, KBUILD]).kbuild_depends == (HEADERS.depends, KBUILD.depends)
    assert kernel().kbuild_depends == ()                # a local kernel: nothing to install


def test_kbuild_depends_are_unknown_when_the_cache_did_not_record_them():
    unrecorded = PackageRef(KBUILD.name, KBUILD.version, KBUILD.sha256)
    assert kernel([IMAGE, HEADERS, unrecorded]).kbuild_depends is None
    # the image's Depends do not matter to a build
    assert kernel([PackageRef(IMAGE.name, IMAGE.version, IMAGE.sha256), HEADERS]).kbuild_depends == \
        (HEADERS.depends,)


def test_describe_keeps_its_json_shape():
    d = kernel([HEADERS]).describe()
    assert set(d) == {"name", "release", "version", "compiler", "module_compression", "vmlinuz",
                      "modules_dir", "build_dir", "config", "packages"}
    assert d["packages"] == [{"name": HEADERS.name, "version": "6.12.118-1", "sha256": "a"}]
