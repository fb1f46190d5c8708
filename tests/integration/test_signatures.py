"""Module signatures on a real guest: under module.sig_enforce=1 (what Secure Boot or lockdown
imposes) a module signed by Debian loads and the lab's unsigned patch does not; a patch signed
with a key the kernel does not trust is refused too, and the verdict names its signer."""
import shutil
import subprocess
from pathlib import Path

import pytest

from livepatch_lab.lab import runner
from livepatch_lab.lab.scenario import loader as scenario

pytestmark = [pytest.mark.vm, pytest.mark.network]
REPO = Path(__file__).resolve().parents[2]


def test_under_enforcement_a_debian_signed_module_loads_and_the_lab_unsigned_patch_does_not(lab_boot,
                                                                                           lab_settings,
                                                                                           no_leftovers):
    from livepatch_lab.supply import kbuild
    with lab_boot("debian-6.1", append="module.sig_enforce=1") as guest:
        patch = kbuild.build(REPO / "scenarios/patches/good", guest.kernel, lab_settings)
        assert guest.run("cat /sys/module/module/parameters/sig_enforce", check=True).stdout.strip() == "Y"
        signer = guest.run("modinfo -F signer dummy", check=True).stdout.strip()
        assert signer, "Debian's own modules are signed"
        assert guest.run("modprobe dummy && grep -q '^dummy ' /proc/modules").ok, signer
        guest.upload(patch.path, "/root/lab_good.ko")
        refused = guest.run("insmod /root/lab_good.ko")
        assert refused.rc != 0 and "Key was rejected by service" in refused.stderr, refused
        assert not guest.run("test -e /sys/kernel/livepatch/lab_good").ok


@pytest.fixture
def signer(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    key, cert = tmp_path / "signer.key", tmp_path / "signer.pem"
    subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "3650", "-batch", "-x509",
                    "-subj", "/CN=livepatch-lab test signer/", "-outform", "PEM", "-out", str(cert),
                    "-keyout", str(key)], check=True, capture_output=True)
    return key, cert


def test_a_patch_signed_with_an_untrusted_key_fails_on_signature_naming_the_signer(tmp_path, lab_settings,
                                                                                   signer, no_leftovers):
    key, cert = signer
    sc = scenario.from_options(REPO / "scenarios/patches/good", duration=2,
                               security={"sig_enforce": True, "sign_key": str(key), "sign_cert": str(cert)})
    outcome = runner.run(sc, "debian-6.1", lab_settings, tmp_path / "out")
    assert outcome.verdict.verdict == "fail", outcome.verdict.reasons
    (reason,) = [r for r in outcome.verdict.reasons if r.check == "signature"]
    assert "refused lab_good (signed by livepatch-lab test signer (key " in reason.message
    assert "Loading of module with unavailable key is rejected" in reason.message   # the kernel's words
    assert outcome.modules == [{"role": "patch", "name": "lab_good", "path": outcome.modules[0]["path"],
                                "signature": outcome.modules[0]["signature"]}]
    assert outcome.modules[0]["signature"].startswith("signed by livepatch-lab test signer (key ")
    assert "/signed/" in outcome.modules[0]["path"]     # the signed copy; the cache's build stays as it was
