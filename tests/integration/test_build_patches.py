"""Every patch of scenarios/patches/ builds for every kernel of the matrix, with the right
toolchain, the right vermagic and the right livepatch flag; the cache answers the second time.

Needs the kernels (fetched into the lab cache on first use) and, for kernels whose compiler
the host lacks (6.12: gcc-14, 7.x: gcc-16), a build root made once with mmdebstrap, as root.
Run with ``-s`` (or ``-rP``) to see the table of build times.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import kbuild, modinfo, toolchains
from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch

from .conftest import kernel_params

pytestmark = pytest.mark.network

PATCHES_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "patches"
KERNELS = ("debian-5.10", "debian-6.1", "debian-6.12", "debian-7")
# patch directory -> (module name, is a livepatch)
PATCHES = {"good": ("lab_good", True), "oops": ("lab_oops", True), "warning": ("lab_warn", True),
           "target": ("lab_target", False), "stall": ("lab_stall", True),
           "pinned": ("lab_pinned", True), "slow": ("lab_slow", True)}


def _tree(path: Path) -> dict[str, float]:
    return {str(p.relative_to(path)): p.stat().st_mtime for p in path.rglob("*")}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="module")
def matrix(settings):
    """``matrix(kernel)`` builds every patch for that kernel once (on first use: a line left out
    with ``-m`` costs nothing): {patch: (Kernel, Module, first seconds, second seconds)}."""
    if os.geteuid() != 0:
        pytest.skip("build roots are made with mmdebstrap and used with chroot: run as root")
    before = _tree(PATCHES_DIR)
    results: dict[str, dict] = {}

    def built(kname: str) -> dict:
        if kname not in results:
            k = kernelfetch.fetch(kerneldefs.get_definition(kname), settings)
            kbuild.toolchain_identity(toolchains.toolchain_for(k), k, settings)   # make a build root first
            row = {}
            for patch in PATCHES:
                t0 = time.monotonic()
                mod = kbuild.build(PATCHES_DIR / patch, k, settings)
                first = time.monotonic() - t0
                t0 = time.monotonic()
                again = kbuild.build(PATCHES_DIR / patch, k, settings)
                second = time.monotonic() - t0
                assert again == mod
                row[patch] = (k, mod, first, second)
            results[kname] = row
        return results[kname]
    yield built
    assert _tree(PATCHES_DIR) == before, "a build wrote into scenarios/patches/"
    _print_table(results)


def _print_table(results) -> None:
    kernels = [k for k in KERNELS if k in results]
    head = f"{'patch':<9}" + "".join(f"{k:>22}" for k in kernels)
    lines = ["", "build times, seconds (first call / cached call; the first may itself be cached):",
             head]
    for patch in PATCHES:
        row = f"{patch:<9}"
        for kname in kernels:
            _, mod, first, second = results[kname][patch]
            recorded = kbuild.build_info(mod).get("seconds", first)
            row += f"{f'{recorded:.2f} / {second:.3f}':>22}"
        lines.append(row)
    lines.append("toolchains: " + ", ".join(f"{k}={results[k]['good'][1].toolchain}" for k in kernels))
    print("\n".join(lines))


@pytest.mark.parametrize("patch", list(PATCHES))
@pytest.mark.parametrize("kname", kernel_params(KERNELS))
def test_each_patch_builds_for_each_kernel(matrix, kname, patch):
    k, mod, first, second = matrix(kname)[patch]
    name, is_livepatch = PATCHES[patch]
    assert mod.path.is_file() and mod.path.suffix == ".ko"
    assert mod.name == name
    assert mod.kernel_release == k.release
    assert mod.vermagic.split()[0] == k.release
    modinfo.check_compatible(mod, k)
    assert mod.livepatch is is_livepatch
    if is_livepatch:
        modinfo.require_livepatch(mod)
    else:
        with pytest.raises(ConfigError):
            modinfo.require_livepatch(mod)
    # what modinfo says about the cached file agrees with what the cache recorded
    assert modinfo.inspect(mod.path) == modinfo.Module(mod.path, mod.name, mod.vermagic, mod.livepatch,
                                                   mod.kernel_release)
    assert second < 0.5, f"a cached build took {second:.2f}s"


@pytest.mark.parametrize("kname", kernel_params(KERNELS))
def test_the_toolchain_matches_the_kernels_compiler(matrix, kname):
    k, mod, _, _ = matrix(kname)["good"]
    info = kbuild.build_info(mod)
    assert info["toolchain"] == mod.toolchain
    cc = re.search(r"gcc-\d+$", mod.toolchain).group(0)     # host-gcc-12, trixie-gcc-14
    assert cc == k.compiler or cc in toolchains.SUBSTITUTES.get(k.compiler, ())
    assert info["seconds"] < 30


def test_no_mount_is_left_behind(matrix, settings):
    matrix("debian-6.1")
    mounts = Path("/proc/self/mounts").read_text()
    assert str(settings.toolchains_dir) not in mounts


def test_the_good_patch_built_for_7_does_not_fit_61(matrix):
    k61 = matrix("debian-6.1")["good"][0]
    other = matrix("debian-7")["good"][1]
    with pytest.raises(modinfo.CompatError) as err:
        modinfo.check_compatible(other, k61)
    assert other.kernel_release in str(err.value) and k61.release in str(err.value)
    assert other.kernel_release != k61.release


@pytest.mark.parametrize("kname", ["debian-6.1", "debian-7"])
def test_a_broken_source_is_a_build_error_with_the_compiler_output(matrix, settings, tmp_path, kname):
    k = matrix(kname)["good"][0]
    src = tmp_path / "broken"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := lab_broken.o\n")
    (src / "lab_broken.c").write_text('#include <linux/module.h>\n'
                                      'static int __init b_init(void) { return not_declared; }\n'
                                      'module_init(b_init);\nMODULE_LICENSE("GPL");\n')
    before = sorted(p.name for p in src.iterdir())
    with pytest.raises(kbuild.BuildError) as err:
        kbuild.build(src, k, settings)
    assert re.search(r"[‘']not_declared[’'] undeclared", err.value.output)
    assert "error:" in err.value.output and "error:" in str(err.value)
    assert err.value.kernel == kname and err.value.source == src
    # the output names the user's files, not the build's temporary copy (newer kbuild
    # prints paths relative to the module directory, which it names as the user's)
    assert "lab_broken.c:2:" in err.value.output and ".work-" not in err.value.output
    assert f"{src}/lab_broken.c:2:" in err.value.output or f"directory '{src}'" in err.value.output
    assert sorted(p.name for p in src.iterdir()) == before, "the build wrote into the source"
