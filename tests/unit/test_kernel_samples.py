"""The kernel's own samples as scenario modules: `source: kernel-sample:NAME`, built from the
kernel line's linux-source package at run time, never from this repository."""
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.lab.run import prepare
from livepatch_lab.lab.scenario import loader as scenario
from livepatch_lab.supply import kbuild, modinfo
from livepatch_lab.supply.kernels import source as kernelsource
from tests.unit.fakes.kernels import fake_kernel

REPO = Path(__file__).resolve().parents[2]


def load(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return scenario.load(path)


def test_a_kernel_sample_is_a_module_by_name_with_its_parameters(tmp_path):
    sc = load(tmp_path, "patch:\n  source: kernel-sample:livepatch-callbacks-demo\n"
                        "  params: {pre_patch_ret: -19}\n"
                        "target_modules:\n  - source: kernel-sample:livepatch-callbacks-mod\n")
    assert (sc.patch.sample, sc.patch.source, sc.patch.params) == (
        "livepatch-callbacks-demo", None, (("pre_patch_ret", "-19"),))
    assert sc.patch.label == "kernel-sample:livepatch-callbacks-demo"
    assert sc.targets[0].sample == "livepatch-callbacks-mod"


def test_a_sample_name_that_is_no_plain_name_is_refused_with_file_line_and_field(tmp_path):
    with pytest.raises(ConfigError, match=r"s.yaml:2 \[patch.source\]: not a sample name: '../x'"):
        load(tmp_path, "patch:\n  source: kernel-sample:../x\n")


def test_check_takes_a_kernel_sample_as_the_patch():
    sc = scenario.from_options(Path("kernel-sample:livepatch-sample"), probe="cat /proc/cmdline",
                               expect_patched="live patched", targets=["kernel-sample:livepatch-shadow-mod"])
    assert (sc.patch.sample, sc.targets[0].sample) == ("livepatch-sample", "livepatch-shadow-mod")


def test_every_shipped_sample_scenario_loads_and_names_only_kernel_samples():
    loaded = [scenario.load(p) for p in sorted((REPO / "scenarios/samples").glob("*.yaml"))]
    assert {sc.name for sc in loaded} >= {"sample-livepatch", "sample-callbacks-demo", "sample-callbacks-busymod",
                                          "sample-callbacks-refused", "sample-shadow-fix"}
    for sc in loaded:
        mods = [sc.patch, *sc.targets, *sc.patches.values(), *([sc.upgrade_from] if sc.upgrade_from else [])]
        assert all(m.sample for m in mods), sc.name


def test_prepare_builds_a_sample_from_the_kernels_own_source(tmp_path, monkeypatch):
    k = fake_kernel(tmp_path)
    sample_dir = tmp_path / "src/kbuild/samples/livepatch-sample"
    fetched, built = [], []

    class Source:
        def sample(self, name):
            assert name == "livepatch-sample"
            return sample_dir
    monkeypatch.setattr(kernelsource, "fetch", lambda kernel, settings: fetched.append(kernel) or Source())

    def build(source, kernel, settings):
        built.append(source)
        return modinfo.Module(tmp_path / "livepatch-sample.ko", "livepatch_sample", f"{k.release} SMP", True,
                              k.release)
    monkeypatch.setattr(kbuild, "build", build)
    sc = load(tmp_path, "patch:\n  source: kernel-sample:livepatch-sample\n")
    mods = prepare.prepare(sc, k, Settings(cache_dir=tmp_path / "cache"))
    assert (mods.patch, fetched, built) == ("livepatch_sample", [k], [sample_dir])
