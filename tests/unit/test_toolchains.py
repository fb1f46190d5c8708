"""Which toolchain builds for a kernel: the host's compiler, a substitute, or a build root of the kernel's suite."""
import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.supply import toolchains
from livepatch_lab.supply.toolchains import Toolchain
from tests.unit.fakes.kernels import fake_kernel as kernel


# toolchain choice --------------------------------------------------------------------------
@pytest.mark.parametrize("compiler, host, suite, runs, expected", [
    ("gcc-12", ["gcc-12"], "bookworm", True, Toolchain("host", "gcc-12")),
    ("gcc-10", ["gcc-12"], "bullseye", True, Toolchain("host", "gcc-12")),       # known-good substitute
    ("gcc-10", ["gcc-10", "gcc-12"], "bullseye", True, Toolchain("host", "gcc-10")),  # exact first
    ("gcc-10", ["gcc-14"], "bullseye", True, Toolchain("buildroot", "gcc-10", "bullseye")),
    ("gcc-14", ["gcc-12"], "trixie", True, Toolchain("buildroot", "gcc-14", "trixie")),
    ("gcc-16", ["gcc-12"], "sid", True, Toolchain("buildroot", "gcc-16", "sid")),
    ("gcc-14", ["gcc-14"], "trixie", True, Toolchain("host", "gcc-14")),
    # the host has the compiler, but the kernel's kbuild binaries do not run here
    ("gcc-14", ["gcc-14"], "trixie", False, Toolchain("buildroot", "gcc-14", "trixie")),
    ("gcc-12", [], "bookworm", True, Toolchain("buildroot", "gcc-12", "bookworm")),
])
def test_choose_toolchain(compiler, host, suite, runs, expected):
    assert toolchains.choose_toolchain(compiler, host, suite, host_runs_kbuild=runs) == expected


def test_toolchain_ids():
    assert Toolchain("host", "gcc-12").id == "host-gcc-12"
    assert Toolchain("buildroot", "gcc-16", "sid").id == "sid-gcc-16"


def test_a_kernel_without_a_known_compiler_uses_the_newest_host_gcc():
    assert toolchains.choose_toolchain(None, ["gcc-11", "gcc-12"], "bookworm") == Toolchain("host", "gcc-12")
    with pytest.raises(ConfigError):
        toolchains.choose_toolchain(None, [], "bookworm")


@pytest.mark.parametrize("compiler", ["clang-16", "icc", "gcc"])
def test_unsupported_compilers_are_refused(compiler):
    with pytest.raises(ConfigError):
        toolchains.choose_toolchain(compiler, ["gcc-12"], "sid")


def test_host_compilers_keeps_what_is_installed():
    assert toolchains.host_compilers(["gcc-14", "gcc-12"], which={"gcc-12": "/usr/bin/gcc-12"}.get) == ["gcc-12"]


def test_the_suite_is_the_kernels_own_without_its_pocket(tmp_path):
    k = kernel(tmp_path, "debian-6.12", "6.12.118+deb13-amd64", "6.12.118-1", "gcc-14", cached=True,
               suites=("trixie-security", "trixie"))
    assert toolchains.kernel_suite(k) == "trixie"


def test_a_kernel_from_no_suite_gets_the_suite_of_its_compiler(tmp_path):
    assert toolchains.kernel_suite(kernel(tmp_path, compiler="gcc-16")) == "sid"
    with pytest.raises(ConfigError):
        toolchains.kernel_suite(kernel(tmp_path, compiler="gcc-99"))
