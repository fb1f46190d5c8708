"""The sign-off report of a real run, as its readers use it: the release manager opens the
page (offline, in headless Chromium), the auditor runs ``livepatch-lab verify`` and sees a
changed byte named."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import open_page, require_chromium, screenshot_dir

from .test_check_cli import REPO, check

pytestmark = [pytest.mark.vm, pytest.mark.network]


def verify(report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livepatch_lab.cli", "verify", str(report)], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=dict(os.environ))


def test_a_real_runs_report_opens_offline_and_its_evidence_verifies(tmp_path, lab_settings, no_leftovers,
                                                                   request, record_property):
    require_chromium()
    report = tmp_path / "r"
    rc, doc, log = check(tmp_path, lab_settings, "good", "--probe", "cat /proc/cmdline",
                         "--expect-patched", "^livepatch-lab: patched$", "--report", str(report))
    (result,) = doc["results"]
    assert rc in (0, 1) and "report: " in log, log     # a busy host may fail the good patch: still reported
    page = (report / "index.html").read_text()
    manifest = json.loads((report / "manifest.json").read_text())
    (module,) = manifest["inputs"]["runs"][0]["modules"]
    assert result["kernel_info"]["version"] in page and module["sha256"] in page
    assert module["name"] == "lab_good" and module["signature"] is None and "unsigned" in page
    assert "<svg" in page and "<script" not in page

    shot = screenshot_dir(request.config) / "signoff-real-run.png"
    seen = open_page(report / "index.html", shot, {
        "matrix": "[...document.querySelectorAll('table.matrix td a')].map(a => a.textContent.trim())",
        "plots": "document.querySelectorAll('figure.plot svg').length"})
    record_property("screenshot", str(shot))
    assert seen.console_errors == [] and seen.requests == [(report / "index.html").as_uri()]
    assert seen.facts == {"matrix": [result["verdict"].upper()], "plots": 1}

    ok = verify(report)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (dmesg,) = report.glob("runs/**/dmesg.txt")
    with open(dmesg, "ab") as fh:
        fh.write(b"\n")
    bad = verify(report)
    assert bad.returncode == 1
    assert f"changed: {dmesg.relative_to(report).as_posix()}" in bad.stdout.splitlines()
