"""The scenario format: what is accepted, and errors that name file, line and field."""
from pathlib import Path

import pytest

from harness.lab import scenario
from harness.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "p").mkdir(exist_ok=True)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_every_shipped_scenario_loads():
    names = {scenario.load(p).name for p in (REPO / "scenarios").glob("*.yaml")}
    assert {"good", "oops", "warning", "stall", "pinned", "slow", "compat"} <= names


def test_a_minimal_scenario_gets_the_defaults(tmp_path):
    sc = scenario.load(write(tmp_path, "patch:\n  source: p\n"))
    assert sc.name == "s" and sc.patch.source == (tmp_path / "p").resolve()
    assert (sc.baseline, sc.patched, sc.cooldown) == (5.0, 5.0, 3.0)
    assert sc.on_stall == "fail" and sc.expect.verdict == "pass" and sc.kernels is None


@pytest.mark.parametrize("text, line, field, words", [
    ("patch:\n  source: p\nbogus: 1\n", 3, "bogus", "unknown field"),
    ("patch:\n  source: p\n  sauce: x\n", 3, "patch.sauce", "unknown field"),
    ("patch:\n  source: p\ntimeline:\n  baseline: soon\n", 4, "timeline.baseline", "must be a number"),
    ("patch:\n  source: p\ntransition:\n  on_stall: pray\n", 4, "transition.on_stall", "one of fail, signal, force"),
    ("patch:\n  source: p\nprobe:\n  command: x\n  expect:\n    patched: '('\n", 6, "probe.expect.patched",
     "regular expression"),
    ("patch:\n  source: nowhere\n", 2, "patch.source", "does not exist"),
    ("patch:\n  source: p\n  ko: x.ko\n", 1, "patch", "exactly one of"),
    ("description: x\n", 1, "patch", "required"),
    ("patch:\n  source: p\nexpect:\n  checks: [vibes]\n", 4, "expect.checks", "unknown check"),
    ("patch:\n  source: p\nkernels: debian-6.1\n", 3, "kernels", "must be a list"),
    ("patch: [\n", None, None, "not valid YAML"),
])
def test_bad_input_names_file_line_and_field(tmp_path, text, line, field, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        scenario.load(path)
    assert err.value.source == str(path)
    assert words in str(err.value)
    if line:
        assert err.value.line == line
    if field:
        assert err.value.field == field


def test_per_kernel_expectations_override_the_default(tmp_path):
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nexpect:\n  verdict: fail\n  checks: [dmesg]\n"
                                       "  per_kernel:\n    - kernel: debian-5.10\n      verdict: pass\n"
                                       "      reason: the bug is not in 5.10\n"))
    assert sc.expectation("debian-6.1").verdict == "fail"
    assert sc.expectation("debian-5.10").verdict == "pass"


def test_the_check_command_builds_a_scenario_from_flags(tmp_path):
    (tmp_path / "patch").mkdir()
    sc = scenario.from_patch(tmp_path / "patch", probe="cat /proc/cmdline", expect_patched="patched",
                             duration=7)
    assert sc.patch.source == (tmp_path / "patch").resolve() and sc.patched == 7.0
    assert sc.probe_expect == {"patched": "patched"}
    with pytest.raises(ConfigError, match="--expect-patched needs --probe"):
        scenario.from_patch(tmp_path / "patch", expect_patched="x")
    with pytest.raises(ConfigError, match="neither a kbuild directory nor a .ko"):
        scenario.from_patch(tmp_path / "missing")
