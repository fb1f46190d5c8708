"""What a vendor installs: the wheel holds the package under its own import name, the data a run
needs (kernel definitions, image recipes, guest scripts, the TCG wrapper, the report's templates,
the results schema), and its license; nothing under the source tree's directory name."""
import stat

import pytest

from tests import wheel as whl

ROOT = whl.ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    path = whl.build(tmp_path_factory.mktemp("wheel"))
    return path, whl.members(path)


def test_the_package_installs_as_livepatch_lab_not_harness(wheel):
    _, files = wheel
    assert not [f for f in files if f.startswith("harness/")]
    modules = {f for f in files if f.endswith(".py")}
    source = {"livepatch_lab/" + str(p.relative_to(ROOT / "harness")) for p in (ROOT / "harness").rglob("*.py")}
    assert modules == source


def test_the_data_a_run_needs_is_in_the_wheel(wheel):
    _, files = wheel
    data = {f"livepatch_lab/data/{p.relative_to(ROOT)}" for d in ("kernels", "images") for p in (ROOT / d).rglob("*")
            if p.is_file()}
    assert data and data <= set(files)
    for f in ("livepatch_lab/lab/results.schema.json", "livepatch_lab/lab/report/signoff/templates/index.html.j2",
              "livepatch_lab/lab/report/signoff/templates/criteria.html.j2",
              "livepatch_lab/lab/report/signoff/templates/style.css"):
        assert f in files


def test_the_scripts_the_guest_and_libvirt_run_stay_executable(wheel):
    _, files = wheel
    for f in ("livepatch_lab/machine/backends/qemu-tcg-single", "livepatch_lab/data/images/guest/lab-init"):
        src = ROOT / ("harness" + f[len("livepatch_lab"):] if "/data/" not in f else f.split("/data/")[1])
        mode = files[f].external_attr >> 16
        assert mode & stat.S_IXUSR == (src.stat().st_mode & stat.S_IXUSR), f


def test_the_license_is_an_spdx_expression_with_its_text(wheel):
    path, files = wheel
    import zipfile
    meta = zipfile.ZipFile(path).read("livepatch_lab-" + path.name.split("-")[1] + ".dist-info/METADATA").decode()
    assert "License-Expression: GPL-2.0-only" in meta
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()
