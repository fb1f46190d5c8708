"""Building modules: what is source, the cache key, the build with make and modinfo faked, errors."""
import json
import logging
import os
import types
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError, DiskFull, HostCommandError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import kbuild
from livepatch_lab.supply.apt import sha256_file
from livepatch_lab.supply.kbuild import BuildError
from livepatch_lab.supply.modinfo import Module
from livepatch_lab.supply.toolchains import Toolchain
from tests.unit.fakes.kernels import fake_kernel as kernel

RELEASE_61 = "6.1.0-56-amd64"
RELEASE_510 = "5.10.0-46-amd64"


def kbuild_dir(tmp_path: Path, name="src", c_text="int x;\n") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := lab_x.o\nlab_x-y := x.o\n")
    (src / "x.c").write_text(c_text)
    return src


def test_make_command_passes_cc_and_hostcc(tmp_path):
    k = kernel(tmp_path)
    argv = kbuild.make_command(k, Toolchain("buildroot", "gcc-14", "trixie"), Path("/w/src"))
    assert argv == ["make", "-C", str(k.build_dir), "M=/w/src", "CC=gcc-14", "HOSTCC=gcc-14", "modules"]


# source files and the cache key ------------------------------------------------------------
def test_build_output_is_not_source(tmp_path):
    src = kbuild_dir(tmp_path)
    (src / "Makefile").write_text("all:\n")
    (src / "sub").mkdir()
    (src / "sub" / "helper.h").write_text("#define X 1\n")
    for artefact in ("x.o", "lab_x.ko", "lab_x.mod", "lab_x.mod.c", ".x.o.cmd", "Module.symvers",
                     "modules.order", ".lab_x.ko.cmd"):
        (src / artefact).write_text("built")
    (src / ".tmp_versions").mkdir()
    (src / ".tmp_versions" / "lab_x.mod").write_text("built")
    assert list(kbuild.source_files(src)) == ["Kbuild", "Makefile", "sub/helper.h", "x.c"]


def test_cache_key_follows_content_kernel_and_toolchain(tmp_path):
    files = kbuild.source_digest(kbuild_dir(tmp_path))
    key = kbuild.cache_key(files, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0")
    assert key == kbuild.cache_key(dict(reversed(list(files.items()))), RELEASE_61, "6.1.192-2",
                                  "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0")
    others = {
        kbuild.cache_key({**files, "x.c": "0" * 64}, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
        kbuild.cache_key(files, RELEASE_510, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
        kbuild.cache_key(files, RELEASE_61, "6.1.192-3", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
        kbuild.cache_key(files, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-15) 12.2.0"),
        kbuild.cache_key({**files, "extra.h": "1" * 64}, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
    }
    assert key not in others and len(others) == 5


def test_a_manual_build_in_the_source_does_not_change_the_key(tmp_path):
    src = kbuild_dir(tmp_path)
    before = kbuild.source_digest(src)
    (src / "x.o").write_bytes(b"\x7fELF")
    (src / ".x.o.cmd").write_text("cmd")
    assert kbuild.source_digest(src) == before


# building, with make and modinfo faked -------------------------------------------------------
@pytest.fixture
def fake_toolchain(monkeypatch):
    monkeypatch.setattr(kbuild, "toolchain_for", lambda k: Toolchain("host", "gcc-12"))
    monkeypatch.setattr(kbuild, "toolchain_identity", lambda tc, k, s: "host-gcc-12: fake 12.2.0")


def fake_make(calls, output="  CC [M]  x.o\n", fail_rc=None):
    def run(kernel, tc, src, settings):
        calls.append(src)
        assert (src / "x.c").is_file() and (src / "Kbuild").is_file()
        if fail_rc is not None:
            raise HostCommandError("build", ["make"], fail_rc, output)
        (src / "lab_x.ko").write_bytes(b"\x7fELF fake module")
        return output
    return run


def fake_inspect(ko, settings=None):
    return Module(Path(ko), "lab_x", f"{RELEASE_61} SMP preempt mod_unload", True, RELEASE_61)


def test_build_copies_the_source_caches_the_module_and_hits_the_cache(tmp_path, monkeypatch,
                                                                      fake_toolchain):
    calls: list[Path] = []
    monkeypatch.setattr(kbuild, "_run_make", fake_make(calls, "  CC [M]  x.o\nx.c:1: warning: meh\n"))
    monkeypatch.setattr(kbuild, "inspect", fake_inspect)
    settings = Settings(cache_dir=tmp_path / "cache")
    src = kbuild_dir(tmp_path)
    before = sorted(p.name for p in src.iterdir())
    k = kernel(tmp_path)

    mod = kbuild.build(src, k, settings)
    assert len(calls) == 1 and src not in calls[0].parents and calls[0] != src
    assert sorted(p.name for p in src.iterdir()) == before          # nothing written into the source
    assert mod.path.parent.parent == settings.cache_dir / "modules" / RELEASE_61
    assert mod.path.read_bytes() == b"\x7fELF fake module"
    assert (mod.name, mod.kernel_release, mod.livepatch, mod.toolchain) == ("lab_x", RELEASE_61, True,
                                                                            "host-gcc-12")
    info = kbuild.build_info(mod)
    assert info["toolchain"] == "host-gcc-12" and info["warnings"] == 1
    assert info["files"] == kbuild.source_digest(src)
    assert "warning: meh" in (mod.path.parent / "build.log").read_text()
    assert not list((settings.cache_dir / "modules" / RELEASE_61).glob(".work-*"))

    again = kbuild.build(src, k, settings)
    assert again == mod and len(calls) == 1                          # cached: make did not run

    out = kbuild.build(src, k, settings, out_dir=tmp_path / "out")
    assert out.path == tmp_path / "out" / "lab_x.ko" and out.path.read_bytes() == mod.path.read_bytes()
    assert len(calls) == 1

    (src / "x.c").write_text("int y;\n")                             # a change rebuilds
    changed = kbuild.build(src, k, settings)
    assert len(calls) == 2 and changed.path != mod.path


def test_build_error_carries_the_compiler_output(tmp_path, monkeypatch, fake_toolchain):
    out = "x.c:1:1: error: unknown type name 'nope'\nmake[2]: *** [x.o] Error 1\n"
    calls: list[Path] = []
    monkeypatch.setattr(kbuild, "_run_make", fake_make(calls, out, fail_rc=2))
    settings = Settings(cache_dir=tmp_path / "cache")
    src = kbuild_dir(tmp_path, c_text="nope x;\n")
    with pytest.raises(BuildError) as err:
        kbuild.build(src, kernel(tmp_path), settings)
    assert err.value.output == out
    assert (err.value.kernel, err.value.source) == ("debian-6.1", src)
    assert "unknown type name 'nope'" in str(err.value) and "debian-6.1" in str(err.value)
    assert not [p for p in (settings.cache_dir / "modules" / RELEASE_61).iterdir()]  # nothing cached


def test_a_hung_build_is_the_hosts_problem(tmp_path, monkeypatch, fake_toolchain):
    monkeypatch.setattr(kbuild, "_run_make", fake_make([], "", fail_rc=None))

    def hung(kernel, tc, src, settings):
        raise HostCommandError("build", ["make"], None, "(killed after 120s)")
    monkeypatch.setattr(kbuild, "_run_make", hung)
    with pytest.raises(HostCommandError):
        kbuild.build(kbuild_dir(tmp_path), kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))


def test_a_build_without_exactly_one_module_is_a_build_error(tmp_path, monkeypatch, fake_toolchain):
    monkeypatch.setattr(kbuild, "_run_make", lambda k, tc, src, s: "nothing to do\n")
    with pytest.raises(BuildError, match="made no module") as err:
        kbuild.build(kbuild_dir(tmp_path), kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))
    assert err.value.output == "nothing to do\n"


def test_a_directory_without_kbuild_files_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no Kbuild or Makefile"):
        kbuild.build(tmp_path / "empty", kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))
    with pytest.raises(ConfigError, match="not a directory"):
        kbuild.build(tmp_path / "missing", kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))


def test_a_module_build_that_runs_out_of_space_is_the_hosts_fault_not_a_build_failure(
        tmp_path, monkeypatch, fake_toolchain):
    def make(kernel, tc, src, settings):
        raise HostCommandError("build", ["make"], 2, "  CC [M]  x.o\n"
                               "x.c:1: fatal error: error writing to x.o: No space left on device\n")
    monkeypatch.setattr(kbuild, "_run_make", make)
    settings = Settings(cache_dir=tmp_path / "cache")
    k = kernel(tmp_path)
    with pytest.raises(DiskFull, match="while building src for debian-6.1"):
        kbuild.build(kbuild_dir(tmp_path), k, settings)
    assert os.listdir(kbuild.modules_dir(settings, k)) == []     # no work dir, no entry


# corruption: a module changed after its build --------------------------------------------------
@pytest.fixture
def one_build(tmp_path, monkeypatch, fake_toolchain):
    """``build()``: one kbuild dir for one kernel, make and modinfo faked; ``calls``: make's runs."""
    calls: list[Path] = []
    monkeypatch.setattr(kbuild, "_run_make", fake_make(calls))
    monkeypatch.setattr(kbuild, "inspect", fake_inspect)
    settings = Settings(cache_dir=tmp_path / "cache")
    src, k = kbuild_dir(tmp_path), kernel(tmp_path)
    return types.SimpleNamespace(build=lambda: kbuild.build(src, k, settings), calls=calls)


def test_a_module_changed_after_its_build_is_built_again(one_build, caplog):
    mod = one_build.build()
    assert one_build.build() == mod and len(one_build.calls) == 1      # intact: from the cache
    mod.path.write_bytes(b"\x7fELF fake module, edited")
    with caplog.at_level(logging.WARNING):
        again = one_build.build()
    assert len(one_build.calls) == 2 and again.path.read_bytes() == b"\x7fELF fake module"
    assert caplog.text.count(f"cached module {mod.path} changed after its build") == 1


def test_a_module_built_before_its_hash_was_recorded_gets_it_on_first_use(one_build):
    mod = one_build.build()
    manifest = mod.path.parent / kbuild.MANIFEST
    old = {key: v for key, v in json.loads(manifest.read_text()).items() if key != "sha256"}
    manifest.write_text(json.dumps(old))
    assert one_build.build() == mod and len(one_build.calls) == 1
    assert json.loads(manifest.read_text())["sha256"] == sha256_file(mod.path)
