"""Module identity from modinfo (vermagic, name, livepatch flag) and the fit to a kernel."""
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError, HostCommandError
from livepatch_lab.supply import modinfo
from livepatch_lab.supply.modinfo import CompatError, Module
from tests.unit.fakes.kernels import fake_kernel as kernel

RELEASE_61 = "6.1.0-56-amd64"
RELEASE_510 = "5.10.0-46-amd64"


def module(release=RELEASE_510, name="lab_good", livepatch=True, path="/x/lab_good.ko") -> Module:
    return Module(path=Path(path), name=name, vermagic=f"{release} SMP mod_unload modversions",
                  livepatch=livepatch, kernel_release=release)


# vermagic and modinfo ---------------------------------------------------------------
@pytest.mark.parametrize("vermagic, release", [
    ("6.1.0-56-amd64 SMP preempt mod_unload modversions ", "6.1.0-56-amd64"),
    ("7.2.13+deb14-amd64 SMP preempt mod_unload", "7.2.13+deb14-amd64"),
    ("  5.10.0-46-amd64   SMP mod_unload", "5.10.0-46-amd64"),
    ("", ""),
])
def test_vermagic_release_is_the_first_word(vermagic, release):
    assert modinfo.vermagic_release(vermagic) == release


def test_modinfo_nul_output_is_parsed():
    # what kmod 30's `modinfo -0` printed for the lab's good patch
    text = ("filename:       /cache/modules/x/lab_good.ko\0livepatch=Y\0license=GPL\0"
            "description=livepatch-lab: good patch of cmdline_proc_show\0depends=\0retpoline=Y\0"
            "name=lab_good\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0")
    info = modinfo.parse_modinfo(text)
    assert info["filename"] == "/cache/modules/x/lab_good.ko"
    assert info["livepatch"] == "Y" and info["name"] == "lab_good" and info["depends"] == ""
    assert info["vermagic"] == "6.1.0-56-amd64 SMP preempt mod_unload modversions"
    assert info["description"] == "livepatch-lab: good patch of cmdline_proc_show"


def test_modinfo_keeps_the_first_of_repeated_keys_and_values_with_equals_signs():
    info = modinfo.parse_modinfo("parm=a:int\0parm=b:int\0alias=x=y\0")
    assert info == {"parm": "a:int", "alias": "x=y"}


def test_inspect_reads_modinfo(monkeypatch, tmp_path):
    ko = tmp_path / "lab-good.ko"
    ko.write_bytes(b"\x7fELF")
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return "filename: x\0vermagic=6.1.0-56-amd64 SMP preempt \0livepatch=Y\0"
    monkeypatch.setattr(modinfo.hostcmd, "run", fake_run)
    mod = modinfo.inspect(ko)
    assert seen["cmd"][:2] == ["modinfo", "-0"]
    # no name field (older kmod/kernels): the file stem, as the kernel spells module names
    assert mod == Module(ko, "lab_good", "6.1.0-56-amd64 SMP preempt", True, "6.1.0-56-amd64")


def test_inspect_of_a_non_module_is_a_config_error(monkeypatch, tmp_path):
    ko = tmp_path / "junk.ko"
    ko.write_text("junk")

    def fake_run(cmd, **kw):
        raise HostCommandError("modinfo", cmd, 1, "modinfo: ERROR: could not get modinfo")
    monkeypatch.setattr(modinfo.hostcmd, "run", fake_run)
    with pytest.raises(ConfigError, match="not a kernel module"):
        modinfo.inspect(ko)
    with pytest.raises(ConfigError, match="does not exist"):
        modinfo.inspect(tmp_path / "missing.ko")


# compatibility and livepatch checks -----------------------------------------------------
def test_compat_error_names_both_versions(tmp_path):
    k = kernel(tmp_path)
    with pytest.raises(CompatError) as err:
        modinfo.check_compatible(module(RELEASE_510), k)
    text = str(err.value)
    assert RELEASE_510 in text and RELEASE_61 in text and "debian-6.1" in text
    assert (err.value.module_release, err.value.kernel_release) == (RELEASE_510, RELEASE_61)


def test_compat_error_for_a_module_without_vermagic(tmp_path):
    mod = Module(Path("/x/a.ko"), "a", "", False, "")
    with pytest.raises(CompatError, match=r"\(no vermagic\).*6\.1\.0-56-amd64"):
        modinfo.check_compatible(mod, kernel(tmp_path))


def test_a_matching_module_is_compatible(tmp_path):
    modinfo.check_compatible(module(RELEASE_61), kernel(tmp_path))


def test_require_livepatch():
    modinfo.require_livepatch(module())
    with pytest.raises(ConfigError, match=r"lab_target .* is not a livepatch module "
                                             r"\(modinfo livepatch != Y\)"):
        modinfo.require_livepatch(module(name="lab_target", livepatch=False))


def test_a_signature_is_read_from_modinfo_and_described():
    sig = modinfo.signature({"signer": "Debian Secure Boot CA", "sig_key": "4B:6E", "sig_hashalgo": "sha256",
                             "sig_id": "PKCS#7"})
    assert sig == modinfo.Signature("Debian Secure Boot CA", "4B:6E", "sha256")
    assert sig.describe() == "signed by Debian Secure Boot CA (key 4B:6E, sha256)"
    assert modinfo.signature({"name": "lab_good"}) is None
