"""`livepatch-lab check` end to end: exit status and the JSON a CI job reads (a good patch's pass:
tests/integration/test_installed_wheel.py, from the installed wheel)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.network]
REPO = Path(__file__).resolve().parents[2]


def check(tmp_path: Path, settings, patch: str, *extra: str) -> tuple[int, dict, str]:
    out = tmp_path / "verdict.json"
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(settings.cache_dir),
               LIVEPATCH_LAB_RUNS=str(settings.runs_dir))
    proc = subprocess.run(
        [sys.executable, "-m", "livepatch_lab.cli", "check", str(REPO / "scenarios/patches" / patch),
         "--kernel", "debian-6.1", "--duration", "2", "--json", str(out),
         "--artifacts", str(tmp_path / "art"), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    return proc.returncode, json.loads(out.read_text()), proc.stdout + proc.stderr


def test_a_patch_that_cannot_be_unloaded_fails_with_exit_1_and_says_why(tmp_path, lab_settings,
                                                                       no_leftovers):
    rc, doc, log = check(tmp_path, lab_settings, "pinned")
    assert rc == 1, log
    (result,) = doc["results"]
    assert result["verdict"] == "fail"
    assert any(r["check"] == "revert" and "in use" in r["message"] for r in result["reasons"])
