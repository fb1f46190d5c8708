"""Every kind of bad input, refused the same way: exit 2, one line naming the file and line, the
field or the option, and the value; no traceback; nothing fetched, built or booted."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from livepatch_lab import cli

REPO = Path(__file__).resolve().parents[2]
GOOD = str(REPO / "scenarios" / "patches" / "good")


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    """Fetching, building or booting anything is a test failure here."""
    from livepatch_lab.lab import runner
    from livepatch_lab.machine import session
    from livepatch_lab.supply import images, kbuild
    from livepatch_lab.supply.kernels import fetch as kernelfetch

    def forbidden(*args, **kwargs):
        raise AssertionError("bad input must be refused before anything is fetched, built or booted")
    for module, name in ((kernelfetch, "fetch"), (kernelfetch, "resolve"), (images, "build"),
                         (kbuild, "build"), (session, "boot"), (runner, "run")):
        monkeypatch.setattr(module, name, forbidden)


def refused(capsys, argv, *words):
    try:
        rc = cli.main(argv)
    except SystemExit as exc:     # argparse's own refusals
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def fake_module(path: Path, modinfo: str) -> Path:
    """An ELF object with a .modinfo section: what modinfo reads of a module."""
    if not shutil.which("objcopy") or not shutil.which("cc"):
        pytest.skip("needs cc and objcopy")
    src, obj, info = path.with_suffix(".c"), path.with_suffix(".o"), path.with_suffix(".info")
    src.write_text("int lab_fake;\n")
    info.write_bytes(modinfo.replace(";", "\0").encode() + b"\0")
    subprocess.run(["cc", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["objcopy", "--add-section", f".modinfo={info}", str(obj), str(path)], check=True)
    return path


@pytest.mark.parametrize("argv, words", [
    (["check", GOOD, "--duration", "-5"], ["[--duration]", "-5"]),
    (["check", GOOD, "--duration", "nan"], ["[--duration]", "nan"]),
    (["check", GOOD, "--duration", "inf"], ["[--duration]", "inf"]),
    (["check", GOOD, "--duration", "1e400"], ["[--duration]", "inf"]),
    (["check", GOOD, "--duration", "soon"], ["--duration", "'soon'"]),
    (["check", GOOD, "--duration", "0"], ["[--duration]", "too short"]),
    (["check", GOOD, "--probe", ""], ["[--probe]", "must not be empty"]),
    (["check", GOOD, "--probe", "x", "--expect-patched", "("], ["[--expect-patched]", "regular expression"]),
    (["check", GOOD, "--expect-patched", "x"], ["[--expect-patched]", "need a probe command"]),
    (["check", GOOD, "--serve-file", ""], ["[--serve-file]", "must not be empty"]),
    (["check", GOOD, "--param", "oops"], ["[--param]", "'oops'"]),
    (["check", GOOD, "--param", "a-b=1"], ["[--param]", "'a-b=1'"]),
    (["check", GOOD, "--kernel", "debian-9"], ["unknown kernel 'debian-9'"]),
    (["check", GOOD, "--kernel", "debian-6.1@not-a-version"], ["[pin]", "not-a-version"]),
    (["check", GOOD, "--accel", "warp"], ["--accel", "'warp'"]),
    (["check", GOOD, "--backend", "vmware"], ["--backend", "'vmware'"]),
    (["check", GOOD, "--libvirt-uri", "http://x"], ["[--libvirt-uri]", "http://x"]),
    (["check", GOOD, "--json", "/proc/nope/v.json"], ["[--json]", "/proc/nope"]),
    (["check", GOOD, "--artifacts", "/proc/nope"], ["[--artifacts]", "/proc/nope"]),
    (["check", "/nonexistent/patch"], ["[PATCH]", "/nonexistent/patch", "neither a kbuild directory, a .ko file nor a source diff", "does not exist"]),
    (["check", GOOD, "--upgrade-from", "/nonexistent/old"], ["[--upgrade-from]", "/nonexistent/old"]),
    (["check", GOOD, "--target-module", "/nonexistent/t"], ["[--target-module]", "/nonexistent/t"]),
    (["--cache-dir", "/proc/nope", "check", GOOD], ["[--cache-dir]", "/proc/nope"]),
    (["boot", "debian-6.1", "--memory", "0"], ["[--memory]", "0"]),
    (["boot", "debian-6.1", "--memory", "-64"], ["[--memory]", "-64"]),
    (["boot", "debian-6.1", "--cpus", "0"], ["[--cpus]", "0"]),
    (["boot", "debian-6.1", "--timeout", "-1"], ["[--timeout]", "-1"]),
    (["boot", "debian-6.1", "--timeout", "nan"], ["[--timeout]", "nan"]),
    (["boot", "debian-6.1", "--memory", "lots"], ["--memory", "'lots'"]),
    (["boot", "no-such-kernel"], ["unknown kernel 'no-such-kernel'"]),
    (["boot", "debian-6.1", "--recipe", "/nonexistent.yaml"], ["/nonexistent.yaml", "cannot read"]),
    (["fetch", "debian-6.1@"], ["debian-6.1@"]),
    (["run", "/nonexistent.yaml"], ["/nonexistent.yaml", "cannot read"]),
    (["check", GOOD, "--debug", "kasan"], ["[--debug]", "unknown debug facility 'kasan'"]),
    (["check", GOOD, "--debug", "slub,pagealloc"], ["[--debug]", "'pagealloc'"]),
    (["run", "scenarios/good.yaml", "--debug", "bogus"], ["livepatch-lab run [--debug]", "'bogus'"]),
    (["soak", GOOD, "--debug", "x"], ["[--debug]", "'x'"]),
    (["check", GOOD, "--max-overhead", "-5"], ["[--max-overhead]", "-5"]),
    (["check", GOOD, "--max-overhead", "5"], ["[--overhead]", "needs a command"]),
    (["check", GOOD, "--overhead", ""], ["[--overhead]", "must not be empty"]),
    (["build", "/nonexistent/src"], ["[SOURCE]", "/nonexistent/src", "not a directory"]),
    (["build", "/proc/sys"], ["[SOURCE]", "/proc/sys", "no Kbuild or Makefile"]),
    (["build", GOOD, "--kernel", "debian-9"], ["unknown kernel 'debian-9'"]),
    (["build", GOOD, "--kernel", "debian-6.1@not-a-version"], ["[pin]", "not-a-version"]),
    (["build", GOOD, "--out", "/proc/nope/out"], ["[--out]", "/proc/nope"]),
])
def test_a_bad_option_is_one_line_naming_it(capsys, argv, words):
    refused(capsys, argv, *words)


def test_a_ko_that_is_not_elf_or_not_a_module_or_not_a_livepatch(capsys, tmp_path):
    text = tmp_path / "text.ko"
    text.write_text("not a module\n")
    refused(capsys, ["check", str(text)], "[PATCH]", "not an ELF file")
    notmod = fake_module(tmp_path / "notmod.ko", "")
    notmod.with_suffix(".o").rename(notmod)        # an ELF object without .modinfo
    refused(capsys, ["check", str(notmod)], "[PATCH]", "not a kernel module")
    plain = fake_module(tmp_path / "plain.ko", "name=lab_plain;vermagic=6.1.0-57-amd64 SMP ")
    refused(capsys, ["check", str(plain)], "[PATCH]", "lab_plain", "is not a livepatch module")


def test_a_kbuild_directory_without_kbuild_files(capsys, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.c").write_text("int x;\n")
    refused(capsys, ["check", str(tmp_path / "src")], "[PATCH]", "not a kbuild directory")


@pytest.mark.parametrize("text, where", [
    ("patch: {source: p}\ntimeline: {baseline: -1}\n", ":2 [timeline.baseline]"),
    ("patch: {source: p}\nservice: {rate: .nan}\n", ":2 [service.rate]"),
    ("patch: {source: p}\nprobe: {command: ''}\n", ":2 [probe.command]"),
    ("patch: {source: p}\nservice: {port: 99999}\n", ":2 [service.port]"),
    ("patch: {source: p}\nkernels: nope\n", ":2 [kernels]"),
    ("patch: {source: p}\nstress: {args: 5}\n", ":2 [stress.args]"),
    ("patch: {source: missing}\n", ":1 [patch.source]"),
    ("patch: {source: p}\nbogus: 1\n", ":2 [bogus]"),
    ("patch: {source: p}\nthresholds: {max_latency: 0}\n", ":2 [thresholds.max_latency]"),
    ("patch: {source: p}\nexpect: {verdict: maybe}\n", ":2 [expect.verdict]"),
    ("patch: {source: p}\ndebug: [slub, kasan]\n", ":2 [debug]"),
    ("patch: {source: p}\ndebug: 3\n", ":2 [debug]"),
    ("patch: {source: p}\noverhead: {repeat: 10}\n", ":2 [overhead]"),
    ("patch: {source: p}\noverhead: {command: x, blocks: 2}\n", ":2 [overhead.blocks]"),
    ("patch: {source: p}\nthresholds: {overhead: {max_percent: 0}}\n", ":2 [thresholds.overhead.max_percent]"),
    ("", "the file is empty"),
])
def test_a_bad_scenario_field_is_one_line_naming_file_line_and_field(capsys, tmp_path, text, where):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "Makefile").write_text("obj-m += p.o\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    refused(capsys, ["run", str(path)], str(path), where)


@pytest.mark.parametrize("text, where", [
    ("name: debian-9\nkind: debian\nsuites: [bookworm]\nseries: 6.10\nflavour: amd64\n", ":4 [series]"),
    ("name: debian-9\nkind: debian\nsuites: []\nseries: '9'\nflavour: amd64\n", "[suites]"),
    ("name: debian-9\nkind: floppy\n", ":2 [kind]"),
    ("name: debian-9\nkind: debian\nsuites: [bookworm]\nseries: '9'\nflavour: amd64\npin: ~1\n", ":6 [pin]"),
])
def test_a_bad_kernel_definition_is_one_line_naming_file_line_and_field(capsys, tmp_path, monkeypatch,
                                                                          text, where):
    path = tmp_path / "kernels" / "debian-9.yaml"
    path.parent.mkdir()
    path.write_text(text)
    monkeypatch.setenv("LIVEPATCH_LAB_KERNELS", str(path.parent))
    refused(capsys, ["check", GOOD, "--kernel", "debian-9"], str(path), where)


@pytest.mark.parametrize("text, where", [
    ("name: x\nsuite: bookworm\nsize_mib: -5\n", ":3 [size_mib]"),
    ("name: x\nsuite: bookworm\npackages: openssh-server\n", ":3 [packages]"),
    ("name: x\nsuite: bookworm\nbogus: 1\n", ":3 [bogus]"),
])
def test_a_bad_image_recipe_is_one_line_naming_file_line_and_field(capsys, tmp_path, text, where):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    refused(capsys, ["image", "build", "--recipe", str(path)], str(path), where)
    refused(capsys, ["boot", "debian-6.1", "--recipe", str(path)], str(path), where)


def test_a_refused_build_leaves_no_output_directory(capsys, tmp_path):
    out = tmp_path / "a" / "b"
    refused(capsys, ["build", GOOD, "--kernel", "debian-9", "--out", str(out)], "unknown kernel")
    assert not (tmp_path / "a").exists()


def test_a_source_diff_that_is_not_a_well_formed_diff_is_refused_by_check_build_and_scenario(capsys, tmp_path):
    bad = tmp_path / "fix.patch"
    bad.write_text("--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1,3 +1,3 @@\n x\n-a\n")
    refused(capsys, ["check", str(bad)], "[PATCH]", str(bad), "says -3 +3 lines but has -2 +1")
    refused(capsys, ["build", str(bad)], "[SOURCE]", str(bad), "truncated or was edited by hand")
    prose = tmp_path / "notes.diff"
    prose.write_text("we should fix cmdline\n")
    refused(capsys, ["check", str(prose)], str(prose), "not a unified diff")
    sc = tmp_path / "sc.yaml"
    sc.write_text(f"name: x\npatch:\n  diff: {prose.name}\n")
    refused(capsys, ["run", str(sc)], f"{sc}:3", "[patch.diff]", "not a unified diff")
    sc.write_text("name: x\npatch:\n  diff: fix.patch\n  build_targets: [../x.ko]\n")
    refused(capsys, ["run", str(sc)], "[patch.build_targets]", "../x.ko")
    refused(capsys, ["check", str(GOOD), "--build-target", "fs/x.ko"], "[--build-target]", "goes with a source diff")
