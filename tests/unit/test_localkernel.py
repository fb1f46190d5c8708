"""``kind: local`` kernels: the release derived from the modules dir, every path checked with its key's line."""
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply.kernels import cache as kernelcache, fetch as kernelfetch, local as localkernel
from livepatch_lab.supply.kernels.defs import KernelDef
from tests.unit.fakes.kernels import fake_bzimage


def local_tree(base: Path, release="6.9.0-lab", *, depmod=True, announced=None) -> dict:
    fake_bzimage(base / "out/bzImage", announced or release)
    mods = base / "staging/lib/modules" / release
    (mods / "kernel/fs").mkdir(parents=True)
    (mods / "kernel/fs/x.ko.zst").write_bytes(b"")
    if depmod:
        (mods / "modules.dep").write_text("")
    build = base / "build"
    (build / "include/config").mkdir(parents=True)
    (build / "Makefile").write_text("all:\n")
    (build / "include/config/kernel.release").write_text(release + "\n")
    (build / ".config").write_text('CONFIG_CC_VERSION_TEXT="gcc (GCC) 13.2.1 20230801"\n')
    return {"vmlinuz": base / "out/bzImage", "mods": mods, "build": build}


def local_def(base: Path, **kw) -> KernelDef:
    values = dict(name="mine", kind="local", source=base / "mine.yaml", flavour="",
                  vmlinuz=base / "out/bzImage", modules=base / "staging", build=base / "build",
                  lines=(("vmlinuz", 2), ("modules", 3), ("build", 4), ("release", 5)))
    values.update(kw)
    return KernelDef(**values)


@pytest.mark.parametrize("modules", ["staging", "staging/lib/modules", "staging/lib/modules/6.9.0-lab"])
def test_local_release_is_derived_from_the_modules_dir(tmp_path, modules):
    t = local_tree(tmp_path)
    k = localkernel.local_kernel(local_def(tmp_path, modules=tmp_path / modules))
    assert (k.release, k.version, k.modules_dir) == ("6.9.0-lab", "local", t["mods"])
    assert k.build_dir == t["build"] and k.vmlinuz == t["vmlinuz"]
    assert k.compiler == "gcc-13" and k.module_compression == "zst" and k.packages == ()
    assert k.config == t["build"] / ".config"
    assert kernelfetch.resolve(local_def(tmp_path), Settings(cache_dir=tmp_path / "c")) == \
        ("6.9.0-lab", "local")


def test_local_kernel_is_fetch_and_cached_without_a_cache(tmp_path):
    local_tree(tmp_path)
    s = Settings(cache_dir=tmp_path / "cache")
    assert kernelfetch.fetch(local_def(tmp_path), s) == kernelcache.cached(local_def(tmp_path), s)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("field", ["vmlinuz", "modules", "build"])
def test_local_missing_path_names_field_and_path(tmp_path, field):
    local_tree(tmp_path)
    d = local_def(tmp_path, **{field: tmp_path / "missing"})
    with pytest.raises(ConfigError) as err:
        localkernel.local_kernel(d)
    assert err.value.field == field and str(tmp_path / "missing") in str(err.value)
    assert err.value.source == str(tmp_path / "mine.yaml") and err.value.line is not None
    assert kernelcache.cached(d, Settings(cache_dir=tmp_path / "c")) is None


def test_local_release_mismatch_with_the_bzimage(tmp_path):
    local_tree(tmp_path, announced="6.9.0-other")
    with pytest.raises(ConfigError, match="is release 6.9.0-other") as err:
        localkernel.local_kernel(local_def(tmp_path))
    assert err.value.field == "vmlinuz"


def test_local_explicit_release_picks_among_several(tmp_path):
    local_tree(tmp_path)
    (tmp_path / "staging/lib/modules/6.8.0-old/kernel").mkdir(parents=True)
    with pytest.raises(ConfigError, match="more than one"):
        localkernel.local_kernel(local_def(tmp_path))
    assert localkernel.local_kernel(local_def(tmp_path, release="6.9.0-lab")).release == "6.9.0-lab"
    with pytest.raises(ConfigError) as err:
        localkernel.local_kernel(local_def(tmp_path, release="6.7"))
    assert err.value.field == "modules"


def test_local_modules_need_depmod(tmp_path):
    local_tree(tmp_path, depmod=False)
    with pytest.raises(ConfigError, match="depmod"):
        localkernel.local_kernel(local_def(tmp_path))


def test_local_build_dir_needs_a_makefile(tmp_path):
    local_tree(tmp_path)
    (tmp_path / "build/Makefile").unlink()
    with pytest.raises(ConfigError, match="not a kernel build directory") as err:
        localkernel.local_kernel(local_def(tmp_path))
    assert err.value.field == "build"
