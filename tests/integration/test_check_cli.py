"""`livepatch-lab check` end to end: exit status and the JSON a CI job reads."""
import json
import os
import re
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
        [sys.executable, "-m", "harness.cli", "check", str(REPO / "scenarios/patches" / patch),
         "--kernel", "debian-6.1", "--duration", "2", "--json", str(out),
         "--artifacts", str(tmp_path / "art"), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    return proc.returncode, json.loads(out.read_text()), proc.stdout + proc.stderr


def test_a_good_patch_passes_with_exit_0_and_a_complete_json(tmp_path, lab_settings, no_leftovers):
    rc, doc, log = check(tmp_path, lab_settings, "good", "--probe", "cat /proc/cmdline",
                         "--expect-patched", "^livepatch-lab: patched$")
    assert rc == 0, log
    from tests.results_schema import errors
    assert errors(doc) == [] and doc["schema"] == 1
    (result,) = doc["results"]
    assert result["verdict"] == "pass" and result["reasons"] == []
    assert [w["name"] for w in result["windows"]] == ["baseline", "apply", "patched", "revert", "cooldown"]
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", result["kernel_info"]["release"]), result["kernel_info"]
    events = [e["event"] for e in result["timeline"]]
    for step in ("booted", "baseline", "load-patch", "transition-complete", "disable",
                 "unpatch-complete", "unloaded", "verdict"):
        assert step in events
    assert result["measurements"]["requests"] > 0 and result["measurements"]["probe_samples"] > 0
    art = Path(result["artifacts"])
    for name in ("console.log", "dmesg.txt", "requests.jsonl", "probe.jsonl", "timeline.json",
                 "verdict.json"):
        assert (art / name).is_file(), name


def test_a_patch_that_cannot_be_unloaded_fails_with_exit_1_and_says_why(tmp_path, lab_settings,
                                                                       no_leftovers):
    rc, doc, log = check(tmp_path, lab_settings, "pinned")
    assert rc == 1, log
    (result,) = doc["results"]
    assert result["verdict"] == "fail"
    assert any(r["check"] == "revert" and "in use" in r["message"] for r in result["reasons"])
