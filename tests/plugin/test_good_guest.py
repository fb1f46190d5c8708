"""The plugin as a guest in someone else's pytest session: it collects only the YAML files its
patterns (ini ``lab_scenarios``) or the command line name, and only those that are lab files."""
import pytest

# Imported here, not first inside an in-process pytester run, which drops the modules it imported
# when it ends: numpy's C extension (lab.matrix -> judge.overhead) refuses a second load.
import livepatch_lab.lab.matrix  # noqa: F401

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


# inert in a session with no lab items -------------------------------------------------------
# the SIGTERM handler each process sees: in its tests, and the controller's (or the one
# process's) at the session's end
SIGNALS = '''
import signal

def _handler():
    return "default" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else "lab"

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        open("end-sigterm", "w").write(_handler())
'''
CHECKS = '''
import logging
import signal

def test_plain():
    with open("test-sigterm", "a") as fh:
        fh.write("default\\n" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else "lab\\n")
    with open("test-paramiko", "a") as fh:
        fh.write(f"{logging.getLogger('paramiko').level}\\n")
'''


@pytest.fixture
def vendor(pytester: pytest.Pytester, monkeypatch):
    """A project of someone else's: a plain test, a Kustomize file; the lab's cache in it."""
    monkeypatch.setenv("LIVEPATCH_LAB_CACHE", str(pytester.path / "lab-cache"))
    _write(pytester, {"deploy/kustomization.yaml": KUSTOMIZATION, "conftest.py": SIGNALS,
                      "test_app.py": CHECKS})
    return pytester


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_a_session_without_lab_items_shows_nothing_of_the_lab_and_leaves_sigterm_alone(vendor, workers):
    result = vendor.runpytest_subprocess("-p", "no:cacheprovider", "--lab-json", "lab.json", *workers)
    result.assert_outcomes(passed=1)
    said = [line for line in result.stdout.lines + result.stderr.lines if not line.startswith("plugins:")]
    assert [line for line in said if "livepatch-lab" in line] == []
    assert vendor.path.joinpath("test-sigterm").read_text() == "default\n"
    assert vendor.path.joinpath("end-sigterm").read_text() == "default"
    assert vendor.path.joinpath("test-paramiko").read_text() == "0\n"     # logging.NOTSET: untouched
    assert not vendor.path.joinpath("lab-cache").exists()   # no durations, no settings, no reaping
    assert not vendor.path.joinpath("lab.json").exists()


def test_a_session_with_lab_items_turns_sigterm_into_an_interrupt_in_every_process(vendor, monkeypatch):
    from .fake_runner import use_fake_runner
    use_fake_runner(vendor, monkeypatch, FAKE_PASS + SIGNALS)
    vendor.makeini("[pytest]\nlab_scenarios = scenarios/*.yaml\n")
    _write(vendor, {"scenarios/demo.yaml": "name: demo\nkernels: [debian-6.1]\npatch:\n  source: ../patch\n"})
    result = vendor.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=2)
    assert vendor.path.joinpath("test-sigterm").read_text() == "lab\n"     # the worker's
    assert vendor.path.joinpath("end-sigterm").read_text() == "lab"        # the controller's
    assert vendor.path.joinpath("test-paramiko").read_text() == "50\n"     # logging.CRITICAL
    result.stdout.fnmatch_lines(["*livepatch-lab: verdicts (kernel x scenario)*"])


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_a_test_that_uses_a_lab_fixture_makes_a_lab_session(vendor, workers):
    _write(vendor, {"test_uses_lab.py": "def test_settings(lab_settings):\n    assert lab_settings.cache_dir\n"})
    result = vendor.runpytest_subprocess("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=2)
    assert vendor.path.joinpath("end-sigterm").read_text() == "lab"


def test_the_sigterm_handler_before_a_lab_session_is_put_back_at_its_end(pytester: pytest.Pytester):
    import signal
    before = signal.getsignal(signal.SIGTERM)
    _write(pytester, {"scenarios/patch/Makefile": "obj-m += p.o\n", "scenarios/demo.yaml": SCENARIO.format(name="d")})
    result = pytester.runpytest("--co", "-q", "-p", "no:cacheprovider", "--lab-kernel", "debian-6.1")
    assert _collected(result) == ["scenarios/demo.yaml::d[debian-6.1]"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_every_option_is_in_the_plugins_own_group(pytester: pytest.Pytester):
    import re
    with_lab = pytester.runpytest("--help").stdout.lines
    without = pytester.runpytest("--help", "-p", "no:livepatch_lab").stdout.lines
    theirs = set(re.findall(r"(?<![\w-])--[\w-]+", "\n".join(with_lab))) - set(
        re.findall(r"(?<![\w-])--[\w-]+", "\n".join(without)))
    assert theirs and all(o.startswith("--lab-") for o in theirs)
    start = with_lab.index("livepatch-lab:")
    end = next(i for i in range(start + 1, len(with_lab)) if with_lab[i] and not with_lab[i][0].isspace())
    declared = {m for line in with_lab[start:end] for m in re.findall(r"^\s+(--lab-[\w-]+)", line)}
    assert declared == theirs


FAKE_PASS = '''
import livepatch_lab.lab.runner as runner
from livepatch_lab.lab.report.outcome import Outcome
from livepatch_lab.lab.judge.verdict import Verdict

def fake_run(sc, kernel, settings, out_dir):
    return Outcome(sc.name, kernel, Verdict("pass", [], {}), {"name": kernel, "version": "1"}, [], str(out_dir), 1.0)
'''


# kernel definitions beside the built-in ones ----------------------------------------------------
MINE = "kind: local\nvmlinuz: a\nmodules: b\nbuild: c\n"
NAMES = "def test_names(lab_kernel_names):\n    assert lab_kernel_names == {names!r}\n"
BUILT_IN = ["debian-5.10", "debian-6.1", "debian-6.12", "debian-7"]


def test_a_kernels_dir_adds_its_definitions_to_the_built_in_ones(pytester: pytest.Pytester):
    import os

    from livepatch_lab.supply.kernels.defs import ENV_EXTRA_KERNELS
    before = os.environ.get(ENV_EXTRA_KERNELS)
    _write(pytester, {"extra/mine.yaml": MINE, "scenarios/patch/Makefile": "obj-m += p.o\n",
                      "scenarios/demo.yaml": SCENARIO.format(name="demo"),
                      "test_names.py": NAMES.format(names=sorted(BUILT_IN + ["mine"]))})
    result = pytester.runpytest("-p", "no:cacheprovider", "--lab-kernels-dir", "extra", "-k", "mine or names",
                                "--co", "-q")
    assert _collected(result) == ["scenarios/demo.yaml::demo[mine]", "test_names.py::test_names"]
    pytester.runpytest("-p", "no:cacheprovider", "--lab-kernels-dir", "extra", "test_names.py").assert_outcomes(
        passed=1)
    assert os.environ.get(ENV_EXTRA_KERNELS) == before     # put back at the session's end


def test_the_ini_names_kernels_dirs_relative_to_itself(pytester: pytest.Pytester, monkeypatch):
    pytester.makeini("[pytest]\nlab_kernels_dir = lab/kernels lab/more\n")
    _write(pytester, {"lab/kernels/mine.yaml": MINE, "lab/more/theirs.yml": MINE,
                      "tests/test_names.py": NAMES.format(names=sorted(BUILT_IN + ["mine", "theirs"]))
                      + "\ndef test_started_elsewhere():\n    import os\n    assert os.getcwd().endswith('tests')\n"})
    monkeypatch.chdir(pytester.path / "tests")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_kernel_defined_twice_is_a_collection_error_naming_both_files(pytester: pytest.Pytester):
    _write(pytester, {"extra/debian-6.1.yaml": MINE, "scenarios/patch/Makefile": "obj-m += p.o\n",
                      "scenarios/demo.yaml": SCENARIO.format(name="demo")})
    result = pytester.runpytest("-p", "no:cacheprovider", "--lab-kernels-dir", "extra", "--co")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*/extra/debian-6.1.yaml [[]name]: kernel 'debian-6.1' is also defined in "
                                 "*/kernels/debian-6.1.yaml"])


def test_a_kernels_dir_that_is_not_a_directory_is_a_usage_error_naming_it(pytester: pytest.Pytester):
    result = pytester.runpytest("--lab-kernels-dir", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--lab-kernels-dir: not a directory: {pytester.path / 'nope'}*"])
