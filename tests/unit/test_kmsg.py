"""Console/dmesg classification, golden-file style: a console log in, findings out.

Each ``data/console/<name>.log`` is a realistic kernel console excerpt; the
``<name>.expected`` next to it lists every finding the scanner must report,
one per line: ``<lineno> <kind> [fatal] | <line without its timestamp>``.
An empty ``.expected`` means the log is clean. To regenerate after a
deliberate rule change, run with ``LIVEPATCH_LAB_REGEN_GOLDEN=1`` and review
the diff.
"""
import os
from pathlib import Path

import pytest

from livepatch_lab.machine import kmsg

DATA = Path(__file__).parent / "data" / "console"
SAMPLES = sorted(p.stem for p in DATA.glob("*.log"))


def render(findings) -> str:
    return "".join(f"{f.lineno} {f.kind}{' fatal' if f.fatal else ''} | {f.line}\n"
                   for f in findings)


def expected(name: str) -> str:
    lines = (DATA / f"{name}.expected").read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("#"))


def test_every_sample_has_an_expectation():
    assert len(SAMPLES) >= 10
    for name in SAMPLES:
        assert (DATA / f"{name}.expected").exists(), f"{name}.log has no {name}.expected"


@pytest.mark.parametrize("name", SAMPLES)
def test_golden_console_sample(name):
    lines = (DATA / f"{name}.log").read_text().splitlines()
    got = render(kmsg.scan(lines))
    if os.environ.get("LIVEPATCH_LAB_REGEN_GOLDEN"):
        header = "# lineno kind [fatal] | line as classified (timestamp stripped)\n" if got else ""
        (DATA / f"{name}.expected").write_text(header + got)
    assert got == expected(name)


# The goldens above cover the realistic cases; the tests below pin single rules.

@pytest.mark.parametrize("name", ["debian-boot", "livepatch-cycle", "sysrq-stack-dump"])
def test_normal_output_is_clean(name):
    assert list(kmsg.scan((DATA / f"{name}.log").read_text().splitlines())) == []


@pytest.mark.parametrize("line", [
    "livepatch: enabling patch 'x'",
    "livepatch: 'x': starting patching transition",
    "livepatch: 'x': patching complete",
    "livepatch: 'x': starting unpatching transition",
    "livepatch: 'x': unpatching complete",
    "x: tainting kernel with TAINT_LIVEPATCH",
    "[   14.204107] livepatch_sample: tainting kernel with TAINT_LIVEPATCH",
    "RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!",
    "Call Trace:",   # alone, a deliberate stack dump: it only confirms some other finding
    "livepatch-lab: ready",
])
def test_lines_that_are_not_trouble(line):
    assert kmsg.classify(line) is None


@pytest.mark.parametrize("line, kind, fatal", [
    ("Kernel panic - not syncing: Fatal exception", "panic", True),
    ("livepatch-lab: FATAL: no root", "lab-fatal", True),
    ("Oops: 0000 [#1] PREEMPT SMP NOPTI", "oops", False),
    ("general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP", "oops", False),
    ("BUG: unable to handle page fault for address: ffffffffc0a01000", "oops", False),
    ("BUG: kernel NULL pointer dereference, address: 0000000000000000", "oops", False),
    ("BUG: KASAN: use-after-free in klp_free_patch+0x10/0x20", "kasan", False),
    # the memory detectors a validation guest boots with (lab/run/memdebug.py); SLUB's object reports
    # name the cache before the parenthesis, without "BUG:"'s colon
    ("BUG lab_overflow (Tainted: G           OE K   ): Right Redzone overwritten", "slub", False),
    ("BUG kmalloc-64 (Not tainted): Poison overwritten", "slub", False),
    ("BUG kmalloc-128 (Tainted: G    B      OE K   ): Object already free", "slub", False),
    ("BUG dentry (Not tainted): Freepointer corrupt", "slub", False),
    ("BUG lab_overflow (Tainted: G           OE K    ): Object corrupt", "slub", False),
    ("BUG: KFENCE: out-of-bounds write in lab_f+0x1a/0x40 [lab_x]", "kfence", False),
    ("BUG: KFENCE: use-after-free read in lab_uaf_cmdline_show+0x60/0xb0 [lab_uaf]", "kfence", False),
    ("BUG: KFENCE: invalid free in kfree+0x1/0x2", "kfence", False),
    ("BUG: KFENCE: memory corruption in kfree+0x1/0x2", "kfence", False),
    ("pagealloc: memory corruption", "page-poison", False),
    ("Unpatched return thunk in use. This should not happen!", "return-thunk", False),
    ("Missing ENDBR: lab_new_func+0x0/0x40 [lab_x]", "endbr", False),
    ("WARNING: CPU: 1 PID: 1 at lib/refcount.c:28 refcount_warn_saturate+0x97/0x110", "warning", False),
    ("INFO: task kworker/0:1:12 blocked for more than 122 seconds.", "hung-task", False),
    ("watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [insmod:390]", "soft-lockup", False),
    ("watchdog: Watchdog detected hard LOCKUP on cpu 0", "hard-lockup", False),
])
def test_each_kind_of_trouble(line, kind, fatal):
    assert kmsg.classify(line) == (kind, fatal)


@pytest.mark.parametrize("prefix", ["", "[    1.234567] ", "[12345.000001] ", "<4>", "<4>[    1.234567] "])
def test_timestamp_and_level_prefixes_are_stripped_before_matching(prefix):
    # anchored rules (^WARNING:, ^livepatch-lab: FATAL:) must still match behind a prefix
    assert kmsg.classify(prefix + "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1") == ("warning", False)
    assert kmsg.classify(prefix + "livepatch-lab: FATAL: boom") == ("lab-fatal", True)
    assert kmsg.strip_prefix(prefix + "text\r\n") == "text"


def test_the_first_linux_version_is_the_boot_and_records_the_release():
    scanner = kmsg.Scanner()
    assert scanner.feed("[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)") is None
    assert scanner.release == "6.1.0-18-amd64"
    finding = scanner.feed("[    0.000000] Linux version 6.12.9-amd64 (debian-kernel@lists.debian.org)")
    assert finding == kmsg.Finding("reboot", True, finding.line, 2)
    assert scanner.release == "6.1.0-18-amd64"   # still the release we booted first
    assert scanner.boots == 2


def test_line_numbers_count_every_fed_line():
    lines = ["a", "b", "Kernel panic - not syncing: x", "c", "Oops: 0002 [#2] SMP"]
    assert [(f.lineno, f.kind) for f in kmsg.scan(lines)] == [(3, "panic"), (5, "oops")]


def test_a_report_names_a_frame_of_the_runs_own_modules_first_then_its_own_words():
    slub = (DATA / "slub-redzone.log").read_text().splitlines()
    at = next(i for i, line in enumerate(slub) if "Right Redzone" in line)
    assert kmsg.report_function(slub, at, ["lab_overflow"]) == "lab_overflow_cmdline_show+0x4b/0x62 [lab_overflow]"
    kfence = (DATA / "kfence-use-after-free.log").read_text().splitlines()
    at = next(i for i, line in enumerate(kfence) if "KFENCE" in line)
    assert kmsg.report_function(kfence, at) == "lab_uaf_cmdline_show+0x60/0xb0 [lab_uaf]"
    oops = ["BUG: unable to handle page fault for address: ffffffffc0275728", "RIP: 0010:__run_timers+0xd3/0x2c0"]
    assert kmsg.report_function(oops, 0, ["lab_timer"]) == "__run_timers+0xd3/0x2c0"
    assert kmsg.report_function(["WARNING: something"], 0) is None
