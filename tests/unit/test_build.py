"""harness.supply.build: toolchain choice, cache keys, modinfo/vermagic parsing, errors, the cache."""
import json
import textwrap
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, HostCommandError, LivepatchError
from harness.core.settings import Settings
from harness.supply import build, kernels
from harness.supply.build import BuildError, CompatError, Module, Toolchain

RELEASE_61 = "6.1.0-56-amd64"
RELEASE_510 = "5.10.0-46-amd64"


def kernel(tmp_path: Path, name="debian-6.1", release=RELEASE_61, version="6.1.192-2",
           compiler="gcc-12", manifest=None) -> kernels.Kernel:
    vdir = tmp_path / "kernels" / name / version
    build_dir = vdir / "root/usr/src" / f"linux-headers-{release}"
    build_dir.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (vdir / "manifest.json").write_text(json.dumps(manifest))
    return kernels.Kernel(name=name, release=release, version=version, vmlinuz=vdir / "vmlinuz",
                          modules_dir=vdir / "modules", build_dir=build_dir, config=None,
                          compiler=compiler, packages=())


def module(release=RELEASE_510, name="lab_good", livepatch=True, path="/x/lab_good.ko") -> Module:
    return Module(path=Path(path), name=name, vermagic=f"{release} SMP mod_unload modversions",
                  livepatch=livepatch, kernel_release=release)


def kbuild_dir(tmp_path: Path, name="src", c_text="int x;\n") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := lab_x.o\nlab_x-y := x.o\n")
    (src / "x.c").write_text(c_text)
    return src


# vermagic and modinfo ---------------------------------------------------------------
@pytest.mark.parametrize("vermagic, release", [
    ("6.1.0-56-amd64 SMP preempt mod_unload modversions ", "6.1.0-56-amd64"),
    ("7.2.13+deb14-amd64 SMP preempt mod_unload", "7.2.13+deb14-amd64"),
    ("  5.10.0-46-amd64   SMP mod_unload", "5.10.0-46-amd64"),
    ("", ""),
])
def test_vermagic_release_is_the_first_word(vermagic, release):
    assert build.vermagic_release(vermagic) == release


def test_modinfo_nul_output_is_parsed():
    # what kmod 30's `modinfo -0` printed for the lab's good patch
    text = ("filename:       /cache/modules/x/lab_good.ko\0livepatch=Y\0license=GPL\0"
            "description=livepatch-lab: good patch of cmdline_proc_show\0depends=\0retpoline=Y\0"
            "name=lab_good\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0")
    info = build.parse_modinfo(text)
    assert info["filename"] == "/cache/modules/x/lab_good.ko"
    assert info["livepatch"] == "Y" and info["name"] == "lab_good" and info["depends"] == ""
    assert info["vermagic"] == "6.1.0-56-amd64 SMP preempt mod_unload modversions"
    assert info["description"] == "livepatch-lab: good patch of cmdline_proc_show"


def test_modinfo_keeps_the_first_of_repeated_keys_and_values_with_equals_signs():
    info = build.parse_modinfo("parm=a:int\0parm=b:int\0alias=x=y\0")
    assert info == {"parm": "a:int", "alias": "x=y"}


def test_inspect_reads_modinfo(monkeypatch, tmp_path):
    ko = tmp_path / "lab-good.ko"
    ko.write_bytes(b"\x7fELF")
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return "filename: x\0vermagic=6.1.0-56-amd64 SMP preempt \0livepatch=Y\0"
    monkeypatch.setattr(build.hostcmd, "run", fake_run)
    mod = build.inspect(ko)
    assert seen["cmd"][:2] == ["modinfo", "-0"]
    # no name field (older kmod/kernels): the file stem, as the kernel spells module names
    assert mod == Module(ko, "lab_good", "6.1.0-56-amd64 SMP preempt", True, "6.1.0-56-amd64")


def test_inspect_of_a_non_module_is_a_config_error(monkeypatch, tmp_path):
    ko = tmp_path / "junk.ko"
    ko.write_text("junk")

    def fake_run(cmd, **kw):
        raise HostCommandError("modinfo", cmd, 1, "modinfo: ERROR: could not get modinfo")
    monkeypatch.setattr(build.hostcmd, "run", fake_run)
    with pytest.raises(ConfigError, match="not a kernel module"):
        build.inspect(ko)
    with pytest.raises(ConfigError, match="does not exist"):
        build.inspect(tmp_path / "missing.ko")


# compatibility and livepatch checks -----------------------------------------------------
def test_compat_error_names_both_versions(tmp_path):
    k = kernel(tmp_path)
    with pytest.raises(CompatError) as err:
        build.check_compatible(module(RELEASE_510), k)
    text = str(err.value)
    assert RELEASE_510 in text and RELEASE_61 in text and "debian-6.1" in text
    assert (err.value.module_release, err.value.kernel_release) == (RELEASE_510, RELEASE_61)


def test_compat_error_for_a_module_without_vermagic(tmp_path):
    mod = Module(Path("/x/a.ko"), "a", "", False, "")
    with pytest.raises(CompatError, match=r"\(no vermagic\).*6\.1\.0-56-amd64"):
        build.check_compatible(mod, kernel(tmp_path))


def test_a_matching_module_is_compatible(tmp_path):
    build.check_compatible(module(RELEASE_61), kernel(tmp_path))


def test_require_livepatch():
    build.require_livepatch(module())
    with pytest.raises(LivepatchError, match=r"lab_target .* is not a livepatch module "
                                             r"\(modinfo livepatch != Y\)"):
        build.require_livepatch(module(name="lab_target", livepatch=False))


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
    assert build.choose_toolchain(compiler, host, suite, host_runs_kbuild=runs) == expected


def test_toolchain_ids():
    assert Toolchain("host", "gcc-12").id == "host-gcc-12"
    assert Toolchain("buildroot", "gcc-16", "sid").id == "sid-gcc-16"


def test_a_kernel_without_a_known_compiler_uses_the_newest_host_gcc():
    assert build.choose_toolchain(None, ["gcc-11", "gcc-12"], "bookworm") == Toolchain("host", "gcc-12")
    with pytest.raises(ConfigError):
        build.choose_toolchain(None, [], "bookworm")


@pytest.mark.parametrize("compiler", ["clang-16", "icc", "gcc"])
def test_unsupported_compilers_are_refused(compiler):
    with pytest.raises(ConfigError):
        build.choose_toolchain(compiler, ["gcc-12"], "sid")


def test_host_compilers_keeps_what_is_installed():
    assert build.host_compilers(["gcc-14", "gcc-12"], which={"gcc-12": "/usr/bin/gcc-12"}.get) == ["gcc-12"]


def test_the_kernel_suite_comes_from_the_kernel_manifest(tmp_path):
    k = kernel(tmp_path, "debian-6.12", "6.12.118+deb13-amd64", "6.12.118-1", "gcc-14",
               manifest={"suites": ["trixie-security", "trixie"]})
    assert build.kernel_suite(k) == "trixie"
    assert build.kernel_trees(k) == [tmp_path / "kernels/debian-6.12/6.12.118-1"]


def test_a_kernel_outside_the_cache_exposes_its_build_and_source_trees(tmp_path):
    src_tree = tmp_path / "linux"
    src_tree.mkdir()
    k = kernel(tmp_path / "elsewhere")
    (k.build_dir / "source").symlink_to(src_tree)
    assert build.kernel_trees(k) == [k.build_dir, src_tree]


def test_without_a_manifest_the_suite_follows_the_compiler(tmp_path):
    assert build.kernel_suite(kernel(tmp_path, compiler="gcc-16")) == "sid"
    with pytest.raises(ConfigError):
        build.kernel_suite(kernel(tmp_path, compiler="gcc-99"))


# build roots ---------------------------------------------------------------------------------
def test_kbuild_depends_from_the_archive_records():
    # Depends of linux-headers-6.12.118+deb13-amd64 and linux-kbuild-6.12.118+deb13 (trixie)
    fields = ["linux-base (>= 4.12~), linux-headers-6.12.118+deb13-common (= 6.12.118-1), "
              "linux-image-6.12.118+deb13-amd64 (= 6.12.118-1) | "
              "linux-image-6.12.118+deb13-amd64-unsigned (= 6.12.118-1), "
              "linux-kbuild-6.12.118+deb13, gcc-14",
              "libc6 (>= 2.38), libelf1t64 (>= 0.144), libssl3t64 (>= 3.0.0), "
              "zlib1g (>= 1:1.2.3.4), pahole"]
    deps = build.kbuild_depends(fields)
    assert deps == ["gcc-14", "libelf1t64", "libssl3t64", "zlib1g", "pahole"]
    assert build.buildroot_packages("gcc-14", deps) == ["gcc-14", "libelf1t64", "libssl3t64",
                                                        "zlib1g", "pahole", "make", "libc6-dev"]


def test_sid_headers_name_gcc_for_host_and_the_plain_compiler_is_added_first():
    deps = build.kbuild_depends(["gcc-16-for-host, linux-base (>= 4.12~)", "pahole, libc6 (>= 2.38)"])
    assert build.buildroot_packages("gcc-16", deps) == ["gcc-16", "gcc-16-for-host", "pahole",
                                                        "make", "libc6-dev"]


def test_forwarded_apt_options():
    dump = textwrap.dedent("""\
        Acquire::AllowInsecureRepositories "0";
        Acquire::Check-Valid-Until "false";
        Acquire::http::Proxy "http://proxy:3128";
        Acquire::https::Proxy "";
        APT::Architecture "amd64";
        """)
    assert build.forwarded_apt_options(dump) == ['--aptopt=Acquire::Check-Valid-Until "false"',
                                                 '--aptopt=Acquire::http::Proxy "http://proxy:3128"']


def test_the_chroot_script_binds_paths_at_their_own_place_and_kernel_trees_read_only():
    root = Path("/cache/toolchains/trixie-gcc-14/root")
    script = build.chroot_script(root, [(Path("/cache/kernels/k/v"), False),
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


def test_make_command_passes_cc_and_hostcc(tmp_path):
    k = kernel(tmp_path)
    argv = build.make_command(k, Toolchain("buildroot", "gcc-14", "trixie"), Path("/w/src"))
    assert argv == ["make", "-C", str(k.build_dir), "M=/w/src", "CC=gcc-14", "HOSTCC=gcc-14", "modules"]


def test_mounts_under():
    info = textwrap.dedent("""\
        22 1 0:21 / / rw - ext4 /dev/vda rw
        90 22 0:50 / /cache/toolchains/sid-gcc-16/root/tmp rw - tmpfs lab-tmp rw
        91 22 0:51 / /cache/toolchains/sid-gcc-16/root/with\\040space rw - tmpfs x rw
        92 22 0:52 / /cache/toolchains/sid-gcc-16-other rw - tmpfs y rw
        """)
    assert build.mounts_under(Path("/cache/toolchains/sid-gcc-16/root"), info) == [
        "/cache/toolchains/sid-gcc-16/root/tmp", "/cache/toolchains/sid-gcc-16/root/with space"]


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
    assert list(build.source_files(src)) == ["Kbuild", "Makefile", "sub/helper.h", "x.c"]


def test_cache_key_follows_content_kernel_and_toolchain(tmp_path):
    files = build.source_digest(kbuild_dir(tmp_path))
    key = build.cache_key(files, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0")
    assert key == build.cache_key(dict(reversed(list(files.items()))), RELEASE_61, "6.1.192-2",
                                  "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0")
    others = {
        build.cache_key({**files, "x.c": "0" * 64}, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
        build.cache_key(files, RELEASE_510, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
        build.cache_key(files, RELEASE_61, "6.1.192-3", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
        build.cache_key(files, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-15) 12.2.0"),
        build.cache_key({**files, "extra.h": "1" * 64}, RELEASE_61, "6.1.192-2", "host-gcc-12: gcc-12 (Debian 12.2.0-14) 12.2.0"),
    }
    assert key not in others and len(others) == 5


def test_a_manual_build_in_the_source_does_not_change_the_key(tmp_path):
    src = kbuild_dir(tmp_path)
    before = build.source_digest(src)
    (src / "x.o").write_bytes(b"\x7fELF")
    (src / ".x.o.cmd").write_text("cmd")
    assert build.source_digest(src) == before


# building, with make and modinfo faked -------------------------------------------------------
@pytest.fixture
def fake_toolchain(monkeypatch):
    monkeypatch.setattr(build, "toolchain_for", lambda k: Toolchain("host", "gcc-12"))
    monkeypatch.setattr(build, "toolchain_identity", lambda tc, k, s: "host-gcc-12: fake 12.2.0")


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
    monkeypatch.setattr(build, "_run_make", fake_make(calls, "  CC [M]  x.o\nx.c:1: warning: meh\n"))
    monkeypatch.setattr(build, "inspect", fake_inspect)
    settings = Settings(cache_dir=tmp_path / "cache")
    src = kbuild_dir(tmp_path)
    before = sorted(p.name for p in src.iterdir())
    k = kernel(tmp_path)

    mod = build.build(src, k, settings)
    assert len(calls) == 1 and src not in calls[0].parents and calls[0] != src
    assert sorted(p.name for p in src.iterdir()) == before          # nothing written into the source
    assert mod.path.parent.parent == settings.cache_dir / "modules" / RELEASE_61
    assert mod.path.read_bytes() == b"\x7fELF fake module"
    assert (mod.name, mod.kernel_release, mod.livepatch, mod.toolchain) == ("lab_x", RELEASE_61, True,
                                                                            "host-gcc-12")
    info = build.build_info(mod)
    assert info["toolchain"] == "host-gcc-12" and info["warnings"] == 1
    assert info["files"] == build.source_digest(src)
    assert "warning: meh" in (mod.path.parent / "build.log").read_text()
    assert not list((settings.cache_dir / "modules" / RELEASE_61).glob(".work-*"))

    again = build.build(src, k, settings)
    assert again == mod and len(calls) == 1                          # cached: make did not run

    out = build.build(src, k, settings, out_dir=tmp_path / "out")
    assert out.path == tmp_path / "out" / "lab_x.ko" and out.path.read_bytes() == mod.path.read_bytes()
    assert len(calls) == 1

    (src / "x.c").write_text("int y;\n")                             # a change rebuilds
    changed = build.build(src, k, settings)
    assert len(calls) == 2 and changed.path != mod.path


def test_build_error_carries_the_compiler_output(tmp_path, monkeypatch, fake_toolchain):
    out = "x.c:1:1: error: unknown type name 'nope'\nmake[2]: *** [x.o] Error 1\n"
    calls: list[Path] = []
    monkeypatch.setattr(build, "_run_make", fake_make(calls, out, fail_rc=2))
    settings = Settings(cache_dir=tmp_path / "cache")
    src = kbuild_dir(tmp_path, c_text="nope x;\n")
    with pytest.raises(BuildError) as err:
        build.build(src, kernel(tmp_path), settings)
    assert err.value.output == out
    assert (err.value.kernel, err.value.source) == ("debian-6.1", src)
    assert "unknown type name 'nope'" in str(err.value) and "debian-6.1" in str(err.value)
    assert not [p for p in (settings.cache_dir / "modules" / RELEASE_61).iterdir()]  # nothing cached


def test_a_hung_build_is_the_hosts_problem(tmp_path, monkeypatch, fake_toolchain):
    monkeypatch.setattr(build, "_run_make", fake_make([], "", fail_rc=None))

    def hung(kernel, tc, src, settings):
        raise HostCommandError("build", ["make"], None, "(killed after 120s)")
    monkeypatch.setattr(build, "_run_make", hung)
    with pytest.raises(HostCommandError):
        build.build(kbuild_dir(tmp_path), kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))


def test_a_build_without_exactly_one_module_is_a_build_error(tmp_path, monkeypatch, fake_toolchain):
    monkeypatch.setattr(build, "_run_make", lambda k, tc, src, s: "nothing to do\n")
    with pytest.raises(BuildError, match="made no module") as err:
        build.build(kbuild_dir(tmp_path), kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))
    assert err.value.output == "nothing to do\n"


def test_a_directory_without_kbuild_files_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no Kbuild or Makefile"):
        build.build(tmp_path / "empty", kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))
    with pytest.raises(ConfigError, match="not a directory"):
        build.build(tmp_path / "missing", kernel(tmp_path), Settings(cache_dir=tmp_path / "c"))


