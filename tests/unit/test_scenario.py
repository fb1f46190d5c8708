"""The scenario format and check's options: what is accepted, and errors that name file, line
and field (or the option), refused before anything is fetched or booted."""
import math
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.lab.scenario import loader as scenario
from livepatch_lab.lab.scenario.specs import ProbeSpec, ReleaseSpec, ServiceSpec, Thresholds, TimelineSpec

REPO = Path(__file__).resolve().parents[2]


def kbuild(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "Makefile").write_text("obj-m += p.o\n")
    return directory


def write(tmp_path: Path, text: str) -> Path:
    kbuild(tmp_path / "p")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_every_shipped_scenario_loads():
    names = {scenario.load(p).name for p in (REPO / "scenarios").glob("*.yaml")}
    assert {"good", "oops", "warning", "stall", "pinned", "slow", "compat"} <= names


def test_a_minimal_scenario_gets_the_defaults(tmp_path):
    sc = scenario.load(write(tmp_path, "patch:\n  source: p\n"))
    assert sc.name == "s" and sc.patch.source == (tmp_path / "p").resolve()
    assert sc.timeline == TimelineSpec(5.0, 5.0, 3.0)
    assert sc.service == ServiceSpec() and sc.probe == ProbeSpec() and sc.thresholds == Thresholds()
    assert sc.transition.on_stall == "fail" and sc.expect.verdict == "pass" and sc.kernels is None


def test_the_yaml_becomes_typed_specs(tmp_path):
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nprobe:\n  command: cat /proc/cmdline\n"
                                       "  interval: 0.25\n  expect: {patched: '^x$'}\n"
                                       "service: {rate: 10, serve_file: /proc/cmdline}\n"
                                       "stress: {enabled: false}\ntimeline: {baseline: 3}\n"))
    assert sc.probe == ProbeSpec("cat /proc/cmdline", 0.25, (("patched", "^x$"),))
    assert sc.service.rate == 10.0 and sc.service.serve_file == "/proc/cmdline"
    assert sc.stress.enabled is False and sc.timeline.baseline == 3.0


@pytest.mark.parametrize("text, line, field, words", [
    ("patch:\n  source: p\nbogus: 1\n", 3, "bogus", "unknown field"),
    ("patch:\n  source: p\n  sauce: x\n", 3, "patch.sauce", "unknown field"),
    ("patch:\n  source: p\ntimeline:\n  baseline: soon\n", 4, "timeline.baseline", "must be a number"),
    ("patch:\n  source: p\ntimeline:\n  cooldown: -1\n", 4, "timeline.cooldown", "must not be negative"),
    ("patch:\n  source: p\ntimeline:\n  patched: .inf\n", 4, "timeline.patched", "finite"),
    ("patch:\n  source: p\ntimeline:\n  patched: .nan\n", 4, "timeline.patched", "nan"),
    ("patch:\n  source: p\ntransition:\n  on_stall: pray\n", 4, "transition.on_stall", "one of fail, signal, force"),
    ("patch:\n  source: p\ntransition:\n  timeout: 0\n", 4, "transition.timeout", "positive"),
    ("patch:\n  source: p\nprobe:\n  command: x\n  expect:\n    patched: '('\n", 6, "probe.expect.patched",
     "regular expression"),
    ("patch:\n  source: p\nprobe:\n  command: '  '\n", 4, "probe.command", "must not be empty"),
    ("patch:\n  source: p\nprobe:\n  command: x\n  interval: 0\n", 5, "probe.interval", "positive"),
    ("patch:\n  source: p\nprobe:\n  expect: {patched: x}\n", 4, "probe.expect", "need a probe command"),
    ("patch:\n  source: nowhere\n", 2, "patch.source", "does not exist"),
    ("patch:\n  source: p\n  ko: x.ko\n", 1, "patch", "exactly one of"),
    ("description: x\n", None, "patch", "required"),
    ("patch:\n  source: p\nexpect:\n  checks: [vibes]\n", 4, "expect.checks", "unknown check"),
    ("patch:\n  source: p\nkernels: debian-6.1\n", 3, "kernels", "must be a list"),
    ("patch:\n  source: p\nservice:\n  rate: 0\n", 4, "service.rate", "positive"),
    ("patch:\n  source: p\nservice:\n  rate: .inf\n", 4, "service.rate", "finite"),
    ("patch:\n  source: p\nservice:\n  timeout: -1\n", 4, "service.timeout", "positive"),
    ("patch:\n  source: p\nservice:\n  port: 0\n", 4, "service.port", "not a TCP port"),
    ("patch:\n  source: p\nservice:\n  port: 70000\n", 4, "service.port", "not a TCP port"),
    ("patch:\n  source: p\nservice:\n  path: x\n", 4, "service.path", "absolute URL path"),
    ("patch:\n  source: p\nservice:\n  path: /a b\n", 4, "service.path", "absolute URL path"),
    ("patch:\n  source: p\nservice:\n  command: ''\n", 4, "service.command", "must not be empty"),
    ("patch:\n  source: p\nname: a/b\n", 3, "name", "plain name"),
    ("patch:\n  source: p\nrelease:\n  owner: me\n", 4, "release.owner", "unknown field"),
    ("patch:\n  source: p\nrelease:\n  version: 1.10\n", 4, "release.version", 'quote it: release.version: "1.10"'),
    ("patch:\n  source: p\nrelease:\n  ticket: ' '\n", 4, "release.ticket", "must not be empty"),
    ("patch:\n  source: p\nrelease:\n  approver: \"A\\nB\"\n", 4, "release.approver", "must be one line"),
    ("patch:\n  source: p\nrelease:\n  name: [a]\n", 4, "release.name", "must be a string"),
    (f"patch:\n  source: p\nrelease:\n  name: {'x' * 201}\n", 4, "release.name", "at most 200 characters"),
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
        assert str(err.value).startswith(f"{path}:{line} ")
    if field:
        assert err.value.field == field
        assert f"[{field}]" in str(err.value)


def test_a_release_names_the_patch_signed_off_each_field_optional(tmp_path):
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nrelease:\n  name: CVE-2025-1 fix\n  version: 3\n"
                                       "  ticket: 1234\n  approver: A. Person <a@example.org>\n"))
    assert sc.release == ReleaseSpec("CVE-2025-1 fix", "3", "1234", "A. Person <a@example.org>")
    assert scenario.load(write(tmp_path, "patch: {source: p}\nrelease: {ticket: SEC-9}\n")).release.as_dict() == {
        "ticket": "SEC-9"}
    assert scenario.load(write(tmp_path, "patch: {source: p}\n")).release.as_dict() == {}


def test_a_directory_without_kbuild_files_or_a_ko_that_is_not_elf_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.ko").write_text("not a module")
    (tmp_path / "s.yaml").write_text("patch: {source: empty}\n")
    with pytest.raises(ConfigError, match=r"not a kbuild directory \(no Kbuild or Makefile\)"):
        scenario.load(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("patch: {ko: fake.ko}\n")
    with pytest.raises(ConfigError, match="not a kernel module"):
        scenario.load(tmp_path / "s.yaml")


@pytest.mark.parametrize("timeline, field, words", [
    ("{baseline: 0, patched: 0, cooldown: 0}", "timeline.baseline", "too short to judge the service"),
    ("{baseline: 0.4}", "timeline.baseline", "the baseline needs at least 1 s (10 requests at 20/s)"),
    ("{patched: 1}", "timeline.patched", "at least 1.5 s"),
])
def test_windows_too_short_to_judge_are_refused_when_loaded(tmp_path, timeline, field, words):
    with pytest.raises(ConfigError) as err:
        scenario.load(write(tmp_path, f"patch: {{source: p}}\ntimeline: {timeline}\n"))
    assert err.value.field == field and words in str(err.value)


def test_a_slow_service_needs_a_longer_baseline_and_probe_phases_need_two_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"baseline needs at least 10 s \(10 requests at 1/s\)"):
        scenario.load(write(tmp_path, "patch: {source: p}\nservice: {rate: 1}\n"))
    with pytest.raises(ConfigError, match="too short to check the probe's 'after' output: at least 3 s") as err:
        scenario.load(write(tmp_path, "patch: {source: p}\nprobe: {command: x, interval: 1, "
                                      "expect: {after: x}}\ntimeline: {cooldown: 2}\n"))
    assert err.value.field == "timeline.cooldown"
    # without a service and a probe there is nothing to judge in the windows: any length will do
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nservice: {enabled: false}\n"
                                       "timeline: {baseline: 0, patched: 0, cooldown: 0}\n"))
    assert sc.timeline == TimelineSpec(0.0, 0.0, 0.0)


def test_per_kernel_expectations_override_the_default(tmp_path):
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nexpect:\n  verdict: fail\n  checks: [dmesg]\n"
                                       "  per_kernel:\n    - kernel: debian-5.10\n      verdict: pass\n"
                                       "      reason: the bug is not in 5.10\n"))
    assert sc.expectation("debian-6.1").verdict == "fail"
    assert sc.expectation("debian-5.10").verdict == "pass"
    assert sc.expectation("debian-5.10@5.10.1-1").verdict == "pass"


def test_the_check_command_builds_a_scenario_from_its_options(tmp_path):
    patch = kbuild(tmp_path / "patch")
    sc = scenario.from_options(patch, probe="cat /proc/cmdline", expect_patched="patched", duration=7,
                               serve_file="/proc/version")
    assert sc.patch.source == patch.resolve() and sc.timeline.patched == 7.0
    assert sc.probe.patterns == {"patched": "patched"} and sc.service.serve_file == "/proc/version"
    assert sc.path is None and sc.name == "patch"


@pytest.mark.parametrize("options, option, words", [
    ({"duration": -5}, "--duration", "must not be negative (and finite), not -5"),
    ({"duration": math.nan}, "--duration", "nan"),
    ({"duration": math.inf}, "--duration", "finite"),
    ({"duration": 0.5}, "--duration", "too short to judge the service while patched"),
    ({"probe": ""}, "--probe", "must not be empty"),
    ({"probe": "x", "expect_patched": "("}, "--expect-patched", "not a valid regular expression"),
    ({"expect_patched": "x"}, "--expect-patched", "probe expectations need a probe command"),
    ({"serve_file": ""}, "--serve-file", "must not be empty"),
])
def test_bad_check_options_name_the_option_and_the_value(tmp_path, options, option, words):
    with pytest.raises(ConfigError) as err:
        scenario.from_options(kbuild(tmp_path / "patch"), **options)
    assert err.value.field == option and err.value.line is None
    assert str(err.value).startswith(f"livepatch-lab check [{option}]: ") and words in str(err.value)


def test_check_refuses_what_is_neither_a_kbuild_directory_nor_a_ko(tmp_path):
    with pytest.raises(ConfigError, match=r"\[PATCH\]: .* is neither a kbuild directory, a .ko file nor a source diff"):
        scenario.from_options(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"\[--target-module\]: .*neither"):
        scenario.from_options(kbuild(tmp_path / "patch"), targets=(tmp_path / "nope",))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"\[PATCH\]: .*not a kbuild directory"):
        scenario.from_options(tmp_path / "empty")


# lifecycles -----------------------------------------------------------------------------------
def lifecycle(tmp_path: Path, text: str) -> Path:
    for d in ("v1", "v2", "late"):
        kbuild(tmp_path / d)
    return write(tmp_path, "patches:\n  v1: {source: v1}\n  v2: {source: v2, params: {pre_patch_ret: -19}}\n"
                           "target_modules:\n  - {source: late, name: late, params: {sleep_secs: 30}}\n"
                           "probe: {command: cat /proc/cmdline}\n" + text)


def test_a_lifecycle_is_named_patches_and_steps_over_them(tmp_path):
    sc = scenario.load(lifecycle(tmp_path, "steps:\n  - load: v1\n  - hold: 3\n    probe: v1\n"
                                           "  - load: v2\n    expect: refused\n  - load_target: late\n"
                                           "  - unload_target: late\n  - disable: v1\n  - unload: v1\n"))
    assert [(s.action, s.subject) for s in sc.steps] == [
        ("load", "v1"), ("hold", None), ("load", "v2"), ("load_target", "late"), ("unload_target", "late"),
        ("disable", "v1"), ("unload", "v1")]
    assert sc.steps[1].seconds == 3.0 and sc.steps[1].probe == "v1" and sc.steps[2].expect == "refused"
    assert sc.patch is sc.patches["v2"] and sc.patches["v2"].params == (("pre_patch_ret", "-19"),)
    assert sc.targets[0].key == "late" and sc.targets[0].late and sc.targets[0].params == (("sleep_secs", "30"),)


@pytest.mark.parametrize("steps, field, words", [
    ("steps:\n  - load: v3\n", "steps[0].load", "no patch called 'v3' (known: v1, v2)"),
    ("steps:\n  - load: v1\n    hold: 2\n", "steps[0]", "a step is exactly one of load, disable"),
    ("steps:\n  - {}\n", "steps[0]", "a step is exactly one of"),
    ("steps:\n  - disable: v1\n    expect: refused\n", "steps[0].expect", "only a load can be expected"),
    ("steps:\n  - load: v1\n    probe: x\n  - load: v2\n", "steps[0].probe", "judged in a hold"),
    ("steps:\n  - load: v1\n    probe: x\n  - hold: 1\n", "steps[1].hold", "too short to check the probe"),
    ("steps:\n  - load_target: nope\n", "steps[0].load_target", "no target module"),
    ("steps:\n  - hold: 1\n", "steps", "loads at least one patch"),
    ("steps:\n  - load: v1\n    expect: maybe\n", "steps[0].expect", "one of ok, refused"),
])
def test_a_lifecycle_that_cannot_run_is_refused_when_loaded(tmp_path, steps, field, words):
    with pytest.raises(ConfigError) as err:
        scenario.load(lifecycle(tmp_path, steps))
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_patch_and_lifecycle_forms_do_not_mix(tmp_path):
    kbuild(tmp_path / "v1")
    with pytest.raises(ConfigError, match=r"\[patch\]: give one patch under test"):
        scenario.load(write(tmp_path, "patch: {source: p}\npatches: {v1: {source: v1}}\nsteps: [{load: v1}]\n"))
    with pytest.raises(ConfigError, match=r"\[patches\]: named patches need `steps`"):
        scenario.load(write(tmp_path, "patches: {v1: {source: v1}}\n"))
    with pytest.raises(ConfigError, match=r"\[upgrade_from\]: upgrade_from goes with a single `patch`"):
        scenario.load(write(tmp_path, "upgrade_from: {source: v1}\npatches: {v1: {source: v1}}\n"
                                      "steps: [{load: v1}]\n"))
    with pytest.raises(ConfigError, match=r"\[patch.params\]: not a module parameter name: 'a-b'"):
        scenario.load(write(tmp_path, "patch: {source: p, params: {a-b: 1}}\n"))


def test_check_takes_an_upgrade_and_module_parameters(tmp_path):
    new, old, target = kbuild(tmp_path / "new"), kbuild(tmp_path / "old"), kbuild(tmp_path / "busy")
    sc = scenario.from_options(new, upgrade_from=old, params=["pre_patch_ret=-19", "msg=a b"],
                               targets=[f"{target}:sleep_secs=30,verbose=1"])
    assert sc.upgrade_from.source == old.resolve() and sc.patch.params == (("pre_patch_ret", "-19"), ("msg", "a b"))
    assert sc.targets[0].params == (("sleep_secs", "30"), ("verbose", "1"))
    with pytest.raises(ConfigError, match=r"livepatch-lab check \[--param\]: not NAME=VALUE .*'oops'"):
        scenario.from_options(new, params=["oops"])
    with pytest.raises(ConfigError, match=r"\[--upgrade-from\]: .* is neither"):
        scenario.from_options(new, upgrade_from=tmp_path / "missing")


def test_security_settings_sign_with_both_key_and_cert_and_refuse_one_alone(tmp_path):
    (tmp_path / "k.pem").write_text("key")
    (tmp_path / "c.pem").write_text("cert")
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nsecurity: {sig_enforce: true, sign_key: k.pem, "
                                       "sign_cert: c.pem}\n"))
    assert sc.security.sig_enforce and sc.security.sign_key == (tmp_path / "k.pem").resolve()
    with pytest.raises(ConfigError, match=r"\[security.sign_cert\]: give both sign_key and sign_cert"):
        scenario.load(write(tmp_path, "patch: {source: p}\nsecurity: {sign_key: k.pem}\n"))
    with pytest.raises(ConfigError, match=r"\[--sign-cert\]: .*nope.pem does not exist"):
        scenario.from_options(kbuild(tmp_path / "patch"), security={"sign_key": str(tmp_path / "k.pem"),
                                                                    "sign_cert": str(tmp_path / "nope.pem")})


# applying through a tool or a hook -----------------------------------------------------------
def test_a_tool_brings_its_own_image_unless_the_scenario_names_one(tmp_path):
    from livepatch_lab.lab.scenario.specs import ApplySpec
    sc = scenario.load(write(tmp_path, "patch: {source: p}\n"))
    assert (sc.apply, sc.image) == (ApplySpec("insmod"), None)
    sc = scenario.load(write(tmp_path, "patch: {source: p}\napply: {tool: kpatch}\n"))
    assert (sc.apply, sc.image) == (ApplySpec("kpatch"), REPO / "images" / "kpatch.yaml")
    sc = scenario.load(write(tmp_path, "patch: {source: p}\napply: {tool: kpatch}\nimage: hooks\n"))
    assert sc.image == REPO / "images" / "hooks.yaml"
    (tmp_path / "mine.yaml").write_text((REPO / "images" / "default.yaml").read_text())
    sc = scenario.load(write(tmp_path, "patch: {source: p}\nimage: ./mine.yaml\n"))
    assert sc.image == tmp_path / "mine.yaml"


def test_a_command_hook_with_its_revert(tmp_path):
    from livepatch_lab.lab.scenario.specs import ApplySpec
    sc = scenario.load(write(tmp_path, "patch: {source: p}\napply:\n  command: agent load {module}\n"
                                       "  revert: agent unload {name}\n"))
    assert sc.apply == ApplySpec("command", "agent load {module}", "agent unload {name}") and sc.image is None


@pytest.mark.parametrize("text, line, field, words", [
    ("apply: {tool: ksplice}\n", 2, "apply.tool", "must be one of insmod, kpatch"),
    ("apply: {tool: kpatch, command: \"x {module}\"}\n", 2, "apply.command", "a tool or a command hook, not both"),
    ("apply: {revert: \"x {name}\"}\n", 2, "apply.revert", "goes with a `command` hook"),
    ("apply: {command: \"x {modul}\"}\n", 2, "apply.command", "unknown placeholder {modul}"),
    ("apply: {command: \"x '{module}'\"}\n", 2, "apply.command", "without quotes"),
    ("image: nowhere\n", 2, "image", "no image recipe"),
    ("apply: {tool: kpatch}\npatch: {source: p, params: {n: 1}}\n", 1, "apply", "module parameters need"),
])
def test_a_bad_apply_or_image_is_refused_naming_the_field(tmp_path, text, line, field, words):
    body = text if text.startswith("apply: {tool: kpatch}\npatch") else "patch: {source: p}\n" + text
    with pytest.raises(ConfigError) as err:
        scenario.load(write(tmp_path, body))
    assert err.value.field == field and words in str(err.value)
    assert err.value.line == line


def test_check_applies_with_a_tool_when_asked(tmp_path):
    sc = scenario.from_options(kbuild(tmp_path / "patch"), apply_with="kpatch")
    assert sc.apply.tool == "kpatch" and sc.image == REPO / "images" / "kpatch.yaml"
    with pytest.raises(ConfigError) as err:
        scenario.from_options(kbuild(tmp_path / "patch"), apply_with="kpatch", params=["n=1"])
    assert err.value.field == "--apply-with"
