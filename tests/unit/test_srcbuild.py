"""Building a livepatch from a source diff: which kernels are refused up front, how the
kept tree is made to build what Debian built, whose fault each kpatch-build failure is,
and how a diff that does not apply is told, file and hunk."""
from __future__ import annotations

from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError, HostCommandError, InfraError
from livepatch_lab.supply.srcbuild import diff as srcdiff, kpatch, kpatchtool, tree as srctree
from tests.unit.fakes.kernels import fake_kernel

CONFIG_61 = "CONFIG_LIVEPATCH=y\nCONFIG_DEBUG_INFO=y\n# CONFIG_X86_KERNEL_IBT is not set\n"


def kernel(tmp_path, config=CONFIG_61, suites=("bookworm",), **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "config"
    cfg.write_text(config)
    return fake_kernel(tmp_path, config=cfg, suites=suites, **kw)


def test_a_debian_kernel_with_livepatch_and_debug_info_is_buildable(tmp_path):
    assert srctree.refusal(kernel(tmp_path)) is None


@pytest.mark.parametrize("config, says", [
    (CONFIG_61 + "CONFIG_X86_KERNEL_IBT=y\n", "CONFIG_X86_KERNEL_IBT=y: kpatch-build refuses"),
    ("CONFIG_DEBUG_INFO=y\n", "without CONFIG_LIVEPATCH"),
    ("CONFIG_LIVEPATCH=y\n", "without CONFIG_DEBUG_INFO"),
])
def test_a_kernel_the_builder_cannot_serve_is_refused_before_anything_is_fetched(tmp_path, config, says):
    with pytest.raises(ConfigError) as e:
        srctree.check_input(kernel(tmp_path, config))
    assert says in e.value.message and e.value.field == "kernel"


def test_a_local_kernel_has_no_source_package_to_build_from(tmp_path):
    assert "local build" in srctree.refusal(kernel(tmp_path, suites=()))


def test_the_tree_is_made_to_build_debians_release_string_with_no_btf(tmp_path):
    k = kernel(tmp_path, release="6.1.0-57-amd64")
    t = tmp_path / "linux"
    (t / "scripts").mkdir(parents=True)
    (t / "Makefile").write_text("VERSION = 6\nKERNELRELEASE = $(shell cat include/config/kernel.release)\n")
    (t / "scripts/link-vmlinux.sh").write_text('if is_enabled CONFIG_DEBUG_INFO_BTF; then\n')
    (t / "scripts/Makefile.modfinal").write_text("ifdef CONFIG_DEBUG_INFO_BTF_MODULES\n")
    srctree.prepare_tree(t, k)
    assert "KERNELRELEASE = 6.1.0-57-amd64\n" in (t / "Makefile").read_text()
    assert "CONFIG_DEBUG_INFO_BTF" not in (t / "scripts/link-vmlinux.sh").read_text()
    assert "CONFIG_DEBUG_INFO_BTF_MODULES" not in (t / "scripts/Makefile.modfinal").read_text()
    assert (t / ".config").read_text() == CONFIG_61


def test_a_tree_from_before_module_btf_needs_no_modfinal_edit(tmp_path):
    t = tmp_path / "linux"                  # 5.10: BTF for modules came with 5.11
    (t / "scripts").mkdir(parents=True)
    (t / "Makefile").write_text("KERNELRELEASE = $(shell cat include/config/kernel.release)\n")
    (t / "scripts/link-vmlinux.sh").write_text('if [ -n "${CONFIG_DEBUG_INFO_BTF}" ]; then\n')
    (t / "scripts/Makefile.modfinal").write_text("quiet_cmd_ld_ko_o = LD [M]  $@\n")
    srctree.prepare_tree(t, kernel(tmp_path, release="5.10.0-46-amd64"))
    assert (t / "scripts/Makefile.modfinal").read_text() == "quiet_cmd_ld_ko_o = LD [M]  $@\n"


def test_a_tree_whose_makefile_lacks_the_release_line_is_the_labs_error(tmp_path):
    t = tmp_path / "linux"
    t.mkdir()
    (t / "Makefile").write_text("VERSION = 6\n")
    with pytest.raises(InfraError, match="KERNELRELEASE"):
        srctree.prepare_tree(t, kernel(tmp_path))


def test_the_original_build_uses_kpatch_builds_own_flags():
    argv = srctree.make_argv(2, kpatchtool.KCFLAGS + " -gz=none")
    assert "KCFLAGS=-I/opt/kpatch/share/kpatch/patch -ffunction-sections -fdata-sections -gz=none" in argv
    assert "CC=/opt/kpatch/libexec/kpatch/kpatch-cc gcc" in argv and argv[-3:] == ["-j2", "vmlinux", "modules_prepare"]


def test_an_original_build_that_does_not_reproduce_the_kernels_crcs_is_not_trusted(tmp_path):
    k = kernel(tmp_path, release="6.1.0-57-amd64")
    (k.build_dir / "Module.symvers").write_text("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"
                                                "0x2\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n"
                                                "0x9\tfoo\tdrivers/foo\tEXPORT_SYMBOL\t\n")
    t = srctree.Tree(k.name, k.version, k.release, tmp_path / "entry", "linux-source-6.1 6.1.192-2", "x")
    (t.linux / "include/generated").mkdir(parents=True)
    (t.linux / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-57-amd64"\n')
    (t.linux / "vmlinux.symvers").write_text("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"
                                             "0x3\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n")
    with pytest.raises(InfraError, match=r"1 of 2 vmlinux symbols differ.*kfree"):
        srctree.check_build(t, k)
    (t.linux / "vmlinux.symvers").write_text("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"
                                             "0x2\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n")
    srctree.check_build(t, k)
    (t.linux / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "6.1.192"\n')
    with pytest.raises(InfraError, match="not 6.1.0-57-amd64"):
        srctree.check_build(t, k)


# kpatch-build's own output, as it prints it (abridged)
EARLY = """Using source directory at /build/linux
Testing patch file(s)
Reading special section data
Building original source
ERROR: kpatch build failed. Check /build/run/cache/build.log for more details.
"""
REFUSED = """Using source directory at /build/linux
Testing patch file(s)
Reading special section data
Building original source
Building patched source
Extracting new and modified ELF sections
sys.o: changed section .data.overflowuid not selected for inclusion
sys.o: 1 unsupported section change(s)
ERROR: 1 error(s) encountered. Check /build/run/cache/build.log for more details.
"""
UNSUPPORTED = """Using source directory at /build/linux
Testing patch file(s)
WARNING: fix.patch: unsupported patch to lib/: lib/string.c
ERROR: Unsupported changes detected.
"""


MODULE_LINK = """Building original source
Building patched source
Extracting new and modified ELF sections
cmdline.o: changed function: cmdline_proc_show
Patched objects: vmlinux
Building patch module: livepatch-proc_cmdline.ko
ld: cannot open linker script file -o: No such file or directory
ERROR: kpatch build failed. Check /build/run/cache/build.log for more details.
"""


def test_a_failure_before_the_patched_build_is_the_labs_and_after_it_the_diffs():
    assert not kpatch.diff_at_fault(MODULE_LINK)     # linking the module: the tools' (seen here)
    assert kpatch.diff_at_fault(MODULE_LINK.replace("ld: cannot open", "ERROR: Undefined symbols: x\nld: "))
    assert not kpatch.diff_at_fault(EARLY)
    assert kpatch.diff_at_fault(REFUSED)
    assert kpatch.diff_at_fault(UNSUPPORTED)
    assert kpatch.last_phase(REFUSED) == "Extracting new and modified ELF sections"


def test_the_builders_own_words_are_quoted():
    words = kpatch.builder_words(REFUSED)
    assert "changed section .data.overflowuid not selected for inclusion" in words
    assert "Using source directory" not in words


def _diff(tmp_path) -> srcdiff.Diff:
    p = tmp_path / "fix.patch"
    p.write_text("--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -7,2 +7,2 @@\n x\n-a\n+b\n"
                 "@@ -20,1 +20,1 @@\n-c\n+d\n")
    return srcdiff.load(p)


def _raise(d, k, output, rc=1):
    exc = HostCommandError("kpatch-build", ["kpatch-build"], rc, output)
    kpatch._raise_for(exc, output, output, Path("/log"), d, k)


def test_a_refusal_is_the_diffs_build_failure_and_an_early_failure_or_timeout_the_labs(tmp_path):
    d, k = _diff(tmp_path), kernel(tmp_path)
    with pytest.raises(kpatch.BuildRefused) as e:
        _raise(d, k, REFUSED)
    assert e.value.fault == "patch" and "not selected for inclusion" in str(e.value)
    with pytest.raises(InfraError, match="before the diff was built"):
        _raise(d, k, EARLY)
    with pytest.raises(InfraError):
        _raise(d, k, REFUSED, rc=None)    # killed at its deadline: never the diff's fault


def test_a_hunk_that_does_not_apply_is_named_with_its_header_and_line(tmp_path):
    d, k = _diff(tmp_path), kernel(tmp_path)
    out = "checking file fs/proc/cmdline.c\nHunk #2 FAILED at 20.\n1 out of 2 hunks FAILED\n"
    text = kpatch.explain_rejects(out, d, k, "linux-source-6.1 6.1.192-2")
    assert "fs/proc/cmdline.c: hunk #2 (@@ -20,1 +20,1 @@, diff line 7) fails at line 20" in text
    assert "linux-source-6.1 6.1.192-2" in text
    missing = kpatch.explain_rejects("can't find file to patch at input line 3\n", d, k, "src")
    assert "no such file in this kernel's source" in missing


def test_built_modules_are_kept_per_diff_kernel_version_and_targets(tmp_path):
    d, k = _diff(tmp_path), kernel(tmp_path)
    again = srcdiff.load(d.path)                    # the same bytes read again: the same entry
    assert kpatch.cache_key(again, k, ()) == kpatch.cache_key(d, k, ())
    assert kpatch.cache_key(d, k, ()) != kpatch.cache_key(d, k, ("fs/binfmt_misc.ko",))
    other = kernel(tmp_path / "o", version="6.1.192-3")
    assert kpatch.cache_key(d, k, ()) != kpatch.cache_key(d, other, ())


# --- the orchestration, with the build root replaced by a model of kpatch-build ---------
class Orchestration:
    """kpatch.build's world: a kept tree and build root that exist, and a build root whose
    commands are answered here (``patch --dry-run`` and kpatch-build), recording each call."""

    def __init__(self, tmp_path, monkeypatch):
        from livepatch_lab.core.settings import Settings
        from livepatch_lab.supply import buildroot
        self.settings = Settings(cache_dir=tmp_path / "cache")
        self.kernel = kernel(tmp_path / "k")
        self.tree = srctree.Tree(self.kernel.name, self.kernel.version, self.kernel.release, tmp_path / "entry",
                                 "linux-source-6.1 6.1.192-2", "abc", {"seconds": 1400})
        self.calls: list[tuple[list[str], list[str]]] = []
        self.applies, self.builder = True, "ok"
        addon = buildroot.AddOn("kpatch-0.9.10", (), lambda tree: {})
        monkeypatch.setattr(kpatch.srctree, "prepared", lambda k, s: self.tree)
        monkeypatch.setattr(kpatch.srctree, "built", lambda k, s, a: self.tree)
        monkeypatch.setattr(kpatch.kpatchtool, "addon", lambda s, cc: addon)
        monkeypatch.setattr(kpatch.buildroot, "ensure_buildroot", lambda *a, **kw: {})
        monkeypatch.setattr(kpatch.buildroot, "run_in", self.run_in)
        monkeypatch.setattr(kpatch.modinfo, "inspect", lambda path, *a: type("M", (), {"path": path})())

    def run_in(self, tc, binds, argv, *, what, settings, addon=None, timeout=None, setup=()):
        import shlex
        self.calls.append((list(argv), list(setup)))
        run = next(Path(p[2]) for p in map(shlex.split, setup) if p[:2] == ["mount", "--bind"]
                   and p[3].endswith(kpatch.RUN_INSIDE))
        if argv[0] == "patch":
            if not self.applies:
                raise HostCommandError(what, argv, 1, "checking file fs/proc/cmdline.c\nHunk #1 FAILED at 7.\n")
            return ""
        (run / "cache" / "build.log").write_text("make output\n")
        if self.builder == "refuse":
            (run / kpatch.OUTPUT).write_text(REFUSED)
            raise HostCommandError(what, argv, 1, "")
        (run / "out" / "livepatch-fix.ko").write_bytes(b"\x7fELF module")
        (run / kpatch.OUTPUT).write_text("Building patch module: livepatch-fix.ko\nSUCCESS\n")
        return ""

    def kpatch_runs(self):
        """kpatch-build's command lines (the shell's redirection left off)."""
        import shlex
        return [(shlex.split(c[0][2].split(" > ")[0]), c[1]) for c in self.calls if c[0][0] == "sh"]

    def left_over(self):
        return sorted(p.name for p in kpatch.modules_dir(self.settings, self.kernel).glob(".*"))


@pytest.fixture
def world(tmp_path, monkeypatch):
    return Orchestration(tmp_path, monkeypatch)


def test_a_diff_is_built_over_an_overlay_of_the_kept_tree_then_cached(world, tmp_path):
    d = _diff(tmp_path)
    built = kpatch.build(d, world.kernel, world.settings)
    assert built.module.path.name == "livepatch-fix.ko" and not built.cached
    assert built.source == "linux-source-6.1 6.1.192-2" and built.diff_sha256 == d.sha256
    assert "SUCCESS" in built.log.read_text() and "make output" in built.log.read_text()
    (argv, setup), = world.kpatch_runs()
    assert argv[argv.index("-s") + 1] == srctree.INSIDE and argv[argv.index("-v") + 1] == srctree.VMLINUX_INSIDE
    assert argv[argv.index("-t") + 1] == "vmlinux" and argv[-1].endswith("/fix.patch")
    overlay = next(line for line in setup if line.startswith("mount -t overlay"))
    assert f"lowerdir={world.tree.linux}," in overlay and f"upperdir={world.tree.path}" not in overlay
    assert world.left_over() == []                          # the scratch layer went with the run
    again = kpatch.build(d, world.kernel, world.settings)
    assert again.cached and len(world.kpatch_runs()) == 1    # no second kpatch-build


def test_a_module_target_is_passed_on_to_kpatch_build(world, tmp_path):
    kpatch.build(_diff(tmp_path), world.kernel, world.settings, targets=("fs/binfmt_misc.ko",))
    (argv, _), = world.kpatch_runs()
    assert argv[argv.index("fs/binfmt_misc.ko") - 1] == "-t"


def test_a_refused_diff_keeps_the_builders_log_and_caches_nothing(world, tmp_path):
    world.builder = "refuse"
    with pytest.raises(kpatch.BuildRefused) as e:
        kpatch.build(_diff(tmp_path), world.kernel, world.settings)
    assert "not selected for inclusion" in e.value.log_path.read_text()
    assert e.value.log_path.name.endswith(".failed.log") and world.left_over() == []
    with pytest.raises(kpatch.BuildRefused):                  # not cached: built (and refused) again
        kpatch.build(_diff(tmp_path), world.kernel, world.settings)
    assert len(world.kpatch_runs()) == 2


def test_a_diff_that_does_not_apply_fails_before_the_original_build(world, tmp_path, monkeypatch):
    world.applies = False
    monkeypatch.setattr(kpatch.srctree, "built", lambda *a: pytest.fail("no original build for a stale diff"))
    with pytest.raises(kpatch.DiffDoesNotApply, match=r"hunk #1 \(@@ -7,2 \+7,2 @@"):
        kpatch.build(_diff(tmp_path), world.kernel, world.settings)
    assert world.kpatch_runs() == []


def test_an_ibt_kernel_is_refused_before_anything_runs(world, tmp_path):
    world.kernel = kernel(tmp_path / "ibt", CONFIG_61 + "CONFIG_X86_KERNEL_IBT=y\n")
    with pytest.raises(ConfigError, match="IBT"):
        kpatch.build(_diff(tmp_path), world.kernel, world.settings)
    assert world.calls == []
