"""Choosing a kernel's packages from the archive's records: newest or pinned, the headers' closure, the compiler."""
import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.supply.kernels import select as kernelselect
from tests.unit.fakes.kernels import bookworm_archive, debian_kernel, defn, rec


def test_newest_version_of_the_series_wins():
    sel = kernelselect.select(defn(), bookworm_archive())
    assert (sel.release, sel.version, sel.abi) == ("6.1.0-56-amd64", "6.1.192-2", "6.1.0-56")
    assert [p.package for p in sel.packages] == [
        "linux-image-6.1.0-56-amd64-unsigned", "linux-headers-6.1.0-56-amd64",
        "linux-headers-6.1.0-56-common", "linux-kbuild-6.1"]
    assert all(p.version == "6.1.192-2" for p in sel.packages)
    assert sel.compiler == "gcc-12"


def test_series_612_picks_the_backport_and_its_compiler():
    sel = kernelselect.select(defn(series="6.12"), bookworm_archive())
    assert sel.release == "6.12.117+deb12-amd64" and sel.compiler == "gcc-14"
    assert "linux-kbuild-6.12.117+deb12" in [p.package for p in sel.packages]


def test_cloud_and_rt_are_not_the_generic_kernel():
    records = [r for r in bookworm_archive() if "-56-amd64-unsigned" not in r.package
               and "-55-amd64-unsigned" not in r.package and "-50-amd64-unsigned" not in r.package]
    with pytest.raises(ConfigError, match="no amd64 kernel of series 6.1"):
        kernelselect.select(defn(), records)


def test_equal_versions_are_broken_by_abi():
    records = [*debian_kernel("6.1.0-9", "6.1.1-1"), *debian_kernel("6.1.0-10", "6.1.1-1")]
    assert kernelselect.select(defn(), records).abi == "6.1.0-10"


def test_a_pin_selects_that_version():
    sel = kernelselect.select(defn(pin="6.1.176-1"), bookworm_archive())
    assert (sel.release, sel.version) == ("6.1.0-50-amd64", "6.1.176-1")


def test_a_missing_pin_names_it_and_lists_the_series_versions(tmp_path):
    d = defn(tmp_path, pin="6.1.999-1", lines=(("pin", 7),))
    with pytest.raises(ConfigError) as err:
        kernelselect.select(d, bookworm_archive())
    text = str(err.value)
    assert "pin 6.1.999-1" in text
    assert "6.1.192-2, 6.1.192-1, 6.1.176-1" in text and "6.12" not in text
    assert err.value.field == "pin" and err.value.line == 7
    assert err.value.source == str(tmp_path / "debian-6.1.yaml")


def test_a_missing_cli_pin_points_at_the_spec():
    d = defn(pin="6.1.999-1", pin_origin="debian-6.1@6.1.999-1")
    with pytest.raises(ConfigError) as err:
        kernelselect.select(d, bookworm_archive())
    assert err.value.source == "debian-6.1@6.1.999-1"


def test_missing_headers_are_a_config_error_listing_versions():
    records = [r for r in bookworm_archive() if r.package != "linux-headers-6.1.0-56-amd64"]
    with pytest.raises(ConfigError, match=r"linux-headers-6.1.0-56-amd64=6.1.192-2 is not in"):
        kernelselect.select(defn(), records)


def test_kbuild_takes_the_newest_version_meeting_the_relation():
    records = [*debian_kernel("6.1.0-56", "6.1.192-2"), rec("linux-kbuild-6.1", "6.1.192-2+b1"),
               rec("linux-kbuild-6.1", "6.1.176-1")]
    kb = [p for p in kernelselect.select(defn(), records).packages if p.package == "linux-kbuild-6.1"]
    assert [p.version for p in kb] == ["6.1.192-2+b1"]


def test_an_unsatisfiable_dependency_is_named():
    records = [r for r in debian_kernel("6.1.0-56", "6.1.192-2") if "kbuild" not in r.package]
    records.append(rec("linux-kbuild-6.1", "6.1.176-1"))
    with pytest.raises(ConfigError, match=r"depends on linux-kbuild-6.1 \(>= 6.1.192-2\).*6.1.176-1"):
        kernelselect.select(defn(), records)


def sid_archive():
    abi, v = "7.2.13+deb14", "7.2.13-1"
    r = f"{abi}-amd64"
    return [
        rec(f"linux-image-{r}", v, f"dracut | initramfs-tools, linux-base-{r} (= {v}), "
                                   f"linux-binary-{r} (= {v}), linux-modules-{r} (= {v})"),
        rec(f"linux-binary-{r}", v, f"linux-base-{r} (= {v})"),
        rec(f"linux-binary-unsigned-{r}", v, f"linux-base-{r} (= {v})"),
        rec(f"linux-binary-unsigned-{abi}-rt-amd64", v),
        rec(f"linux-modules-{r}", v, f"kmod, linux-base-{r} (= {v})"),
        rec(f"linux-base-{r}", v),
        rec(f"linux-headers-{r}", v, f"gcc-16-for-host, linux-base (>= 4.12~), linux-base-{r} (= {v}), "
                                     f"linux-headers-{abi}-common (= {v}), linux-kbuild-{abi}"),
        rec(f"linux-headers-{abi}-common", v),
        rec(f"linux-kbuild-{abi}", v),
        rec("linux-base", "4.12"),
    ]


def test_split_packaging_of_7x():
    sel = kernelselect.select(defn(name="debian-7", series="7", suites=("sid",)), sid_archive())
    assert sel.release == "7.2.13+deb14-amd64" and sel.compiler == "gcc-16"
    assert sorted(p.package for p in sel.packages) == sorted([
        "linux-binary-unsigned-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64",
        "linux-base-7.2.13+deb14-amd64", "linux-headers-7.2.13+deb14-amd64",
        "linux-headers-7.2.13+deb14-common", "linux-kbuild-7.2.13+deb14"])
    assert sel.packages[0].package == "linux-binary-unsigned-7.2.13+deb14-amd64"


@pytest.mark.parametrize("version,series,want", [
    ("6.1.192-2", "6.1", True), ("6.12.117-1~deb12u1", "6.1", False),
    ("6.12.117-1~deb12u1", "6.12", True), ("7.2.13-1", "7", True), ("70.1-1", "7", False),
    ("6.1-1", "6.1", True), ("5.10.262-1", "6.1", False), ("1:6.1.2-1", "6.1", True),
])
def test_in_series(version, series, want):
    assert kernelselect.in_series(version, series) is want
