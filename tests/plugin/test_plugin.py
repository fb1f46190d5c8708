"""The pytest plugin as a user's project sees it (pytester: a fresh pytest in a temp dir)."""
import pytest

pytest_plugins = ["pytester"]


def test_options_and_markers_are_registered(pytester: pytest.Pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*livepatch-lab*", "*--lab-cache-dir*", "*--lab-accel*",
                                 "*--lab-kernel*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.vm:*"])


def test_lab_settings_follow_options_over_ini_over_environment(pytester: pytest.Pytester,
                                                              monkeypatch, tmp_path):
    monkeypatch.setenv("LIVEPATCH_LAB_ACCEL", "kvm")
    monkeypatch.setenv("LIVEPATCH_LAB_CACHE", str(tmp_path / "from-env"))
    pytester.makeini(f"[pytest]\nlab_cache_dir = {tmp_path / 'from-ini'}\n")
    pytester.makepyfile(f"""
        def test_settings(lab_settings):
            assert str(lab_settings.cache_dir) == {str(tmp_path / 'from-ini')!r}
            assert lab_settings.accel == "tcg"
    """)
    pytester.runpytest("--lab-accel", "tcg").assert_outcomes(passed=1)


def test_a_bad_option_value_is_refused_with_its_name(pytester: pytest.Pytester):
    result = pytester.runpytest("--lab-accel", "warp")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--lab-accel*invalid choice*warp*"])


def test_kernel_names_default_to_every_defined_kernel(pytester: pytest.Pytester):
    pytester.makepyfile("""
        def test_names(lab_kernel_names):
            assert {"debian-5.10", "debian-6.1", "debian-6.12", "debian-7"} <= set(lab_kernel_names)
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile("""
        def test_names(lab_kernel_names):
            assert lab_kernel_names == ["debian-6.1"]
    """)
    pytester.runpytest("--lab-kernel", "debian-6.1").assert_outcomes(passed=1)


SCENARIO = """
name: demo
patch:
  source: patch
"""


def _scenario_dir(pytester: pytest.Pytester, text: str = SCENARIO) -> None:
    """scenarios/demo.yaml (found by lab_scenarios' default) and a YAML that is no scenario."""
    pytester.mkdir("scenarios").joinpath("patch").mkdir()
    pytester.path.joinpath("scenarios", "patch", "Makefile").write_text("obj-m += p.o\n")
    pytester.path.joinpath("scenarios", "demo.yaml").write_text(text)
    pytester.path.joinpath("scenarios", "other.yaml").write_text("just: some config\n")


def test_scenario_files_collect_one_item_per_kernel(pytester: pytest.Pytester):
    _scenario_dir(pytester)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([f"scenarios/demo.yaml::demo[[]{k}]"
                                 for k in ("debian-5.10", "debian-6.1", "debian-6.12", "debian-7")])
    assert "other.yaml" not in result.stdout.str()


def test_the_kernel_option_narrows_the_matrix(pytester: pytest.Pytester):
    _scenario_dir(pytester)
    result = pytester.runpytest("--collect-only", "-q", "--lab-kernel", "debian-6.12")
    result.stdout.fnmatch_lines(["scenarios/demo.yaml::demo[[]debian-6.12]", "1 test collected*"])


def test_a_broken_scenario_is_a_collection_error_naming_file_line_and_field(pytester: pytest.Pytester):
    _scenario_dir(pytester, SCENARIO + "timeline:\n  baseline: soon\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*demo.yaml:6 [[]timeline.baseline]: must be a number*"])


def test_backend_and_libvirt_uris_reach_the_settings(pytester: pytest.Pytester):
    pytester.makepyfile("""
        def test_settings(lab_settings):
            assert lab_settings.backend == "libvirt"
            assert lab_settings.libvirt_uris == ("qemu+ssh://root@10.0.0.1/system", "qemu:///system")
            assert lab_settings.libvirt_uri_for("gw3") == "qemu:///system"
    """)
    pytester.runpytest("--lab-backend", "libvirt", "--lab-libvirt-uri", "qemu+ssh://root@10.0.0.1/system",
                       "--lab-libvirt-uri", "qemu:///system").assert_outcomes(passed=1)


def test_a_bad_libvirt_uri_is_refused_naming_it(pytester: pytest.Pytester):
    pytester.makepyfile("def test_settings(lab_settings):\n    pass\n")
    result = pytester.runpytest("--lab-libvirt-uri", "http://example/")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*libvirt_uri*not a libvirt QEMU URI*http://example/*"])


def test_snapshots_follow_the_environment_unless_the_option_turns_them_off(pytester: pytest.Pytester,
                                                                          monkeypatch):
    pytester.makepyfile("""
        import os
        def test_settings(lab_settings):
            assert lab_settings.snapshots is (os.environ["WANT"] == "on")
    """)
    monkeypatch.setenv("WANT", "on")
    pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("WANT", "off")
    pytester.runpytest("--lab-no-snapshots").assert_outcomes(passed=1)
    monkeypatch.setenv("LIVEPATCH_LAB_SNAPSHOTS", "0")
    pytester.runpytest().assert_outcomes(passed=1)


DEBUG_RUNNER = '''
import livepatch_lab.lab.runner as runner
from livepatch_lab.lab.report.outcome import Outcome
from livepatch_lab.lab.judge.verdict import Verdict

def fake_run(sc, kernel, settings, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "debug").write_text(",".join(sc.debug.facilities))
    return Outcome(sc.name, kernel, Verdict("pass", [], {}), {"name": kernel}, [], str(out_dir), 1.0)
'''


@pytest.mark.parametrize("option,facilities", [((), "slub,kfence,poison"), (("--lab-debug", "none"), ""),
                                               (("--lab-debug", "slub"), "slub")])
def test_lab_debug_sets_every_items_memory_debugging(pytester: pytest.Pytester, monkeypatch, option, facilities):
    from .fake_runner import use_fake_runner
    use_fake_runner(pytester, monkeypatch, DEBUG_RUNNER)
    pytester.path.joinpath("demo.yaml").write_text("name: demo\nkernels: [debian-6.1]\npatch:\n  source: patch\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--lab-artifacts", "art", *option)
    result.assert_outcomes(passed=1)
    assert pytester.path.joinpath("art", "demo", "debian-6.1", "debug").read_text() == facilities


def test_an_unknown_lab_debug_facility_is_a_usage_error_naming_it(pytester: pytest.Pytester):
    result = pytester.runpytest("--lab-debug", "slub,kasan")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lab-debug: unknown debug facility 'kasan'*"])
