"""The plugin as a guest in someone else's pytest session: it collects only the YAML files its
patterns (ini ``lab_scenarios``) or the command line name, and only those that are lab files."""
import pytest

# Imported here, not first inside an in-process pytester run, which drops the modules it imported
# when it ends: numpy's C extension (lab.matrix -> judge.overhead) refuses a second load.
import harness.lab.matrix  # noqa: F401

pytest_plugins = ["pytester"]

SCENARIO = "name: {name}\npatch:\n  source: patch\n"
KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
patch: |-
  - op: replace
    path: /spec/replicas
    value: 3
"""
PLAIN_TEST = "def test_plain():\n    pass\n"


def _write(pytester: pytest.Pytester, files: dict) -> None:
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)


def _collected(result) -> list[str]:
    return sorted(line for line in result.stdout.lines if "::" in line)


def test_a_kustomize_file_with_a_patch_line_outside_the_patterns_is_not_collected(pytester: pytest.Pytester):
    _write(pytester, {"deploy/kustomization.yaml": KUSTOMIZATION, "test_app.py": PLAIN_TEST})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "kustomization" not in result.stdout.str()


def test_the_default_patterns_collect_the_yaml_files_under_the_rootdirs_scenarios(pytester: pytest.Pytester):
    _write(pytester, {"scenarios/patch/Makefile": "obj-m += p.o\n",
                      "scenarios/top.yaml": SCENARIO.format(name="top"),
                      "scenarios/lines/deeper.yml": SCENARIO.format(name="deeper").replace("patch\n", "../patch\n"),
                      "elsewhere.yaml": SCENARIO.format(name="elsewhere"),
                      "lib/scenarios-old/old.yaml": SCENARIO.format(name="old")})
    result = pytester.runpytest("--co", "-q", "--lab-kernel", "debian-6.1")
    assert _collected(result) == ["scenarios/lines/deeper.yml::deeper[debian-6.1]",
                                  "scenarios/top.yaml::top[debian-6.1]"]


def test_a_yaml_the_patterns_match_that_is_no_lab_file_is_left_alone(pytester: pytest.Pytester):
    _write(pytester, {"scenarios/notes.yaml": "owner: someone\nreview: weekly\n",
                      "scenarios/binary.yaml": b"\xff\xfe\x00patch\x00\x81",
                      "scenarios/values.yml": "image:\n  patch: 3\n",
                      "test_app.py": PLAIN_TEST})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


def test_the_ini_patterns_choose_the_files(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nlab_scenarios = lab/*.yaml *.lab.yaml\n")
    _write(pytester, {"patch/Makefile": "obj-m += p.o\n", "lab/patch/Makefile": "obj-m += p.o\n",
                      "lab/a.yaml": SCENARIO.format(name="a"),
                      "b.lab.yaml": SCENARIO.format(name="b"),
                      "scenarios/patch/Makefile": "obj-m += p.o\n",
                      "scenarios/c.yaml": SCENARIO.format(name="c")})
    result = pytester.runpytest("--co", "-q", "--lab-kernel", "debian-6.1")
    assert _collected(result) == ["b.lab.yaml::b[debian-6.1]", "lab/a.yaml::a[debian-6.1]"]


def test_a_file_named_on_the_command_line_is_collected_whatever_the_patterns(pytester: pytest.Pytester):
    _write(pytester, {"patch/Makefile": "obj-m += p.o\n", "mine.yaml": SCENARIO.format(name="mine"),
                      "other.yaml": SCENARIO.format(name="other")})
    result = pytester.runpytest("--co", "-q", "--lab-kernel", "debian-6.1", "mine.yaml")
    assert _collected(result) == ["mine.yaml::mine[debian-6.1]"]
