"""The sign-off page says what each verdict was measured against (the criteria a run keeps in its
verdict.json), which patch is signed off (a scenario's `release:`, the page's title and note),
and, in a banner at its top, that timings came from an emulated CPU; and it is made from saved
artifact folders (``write_saved``, what `livepatch-lab report` calls)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.lab import matrix
from livepatch_lab.lab.judge.verdict import Verdict
from livepatch_lab.lab.report import criteria
from livepatch_lab.lab.report.outcome import Outcome
from livepatch_lab.lab.report.signoff import acceptance, collect
from livepatch_lab.lab.run.plans import plan
from livepatch_lab.lab.scenario import loader
from livepatch_lab.lab.report import signoff

from .signoff_runs import LOGGED, PATCHED, PROBE, make_module, make_run

RELEASE = {"name": "CVE-2025-1234 fix", "version": "1.2-3", "ticket": "SEC-42", "approver": "A. Person"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def ko(tmp_path_factory) -> Path:
    return make_module(tmp_path_factory.mktemp("built"))


def section(page: str, anchor: str) -> str:
    """One run's section of the page."""
    start = page.index(f'<section class="run" id="{anchor}"')
    return page[start:page.index("</section>", start)]


def text(html: str) -> str:
    """What a reader reads: tags dropped, entities of quotes and ampersands back, spaces folded."""
    plain = re.sub(r"<[^>]+>", " ", html).replace("&#39;", "'").replace("&#34;", '"').replace("&amp;", "&")
    return re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s+", " ", plain))


# what a run keeps ----------------------------------------------------------------------
def test_a_run_keeps_what_its_scenario_and_plan_judge_it_against(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "Makefile").write_text("obj-m += p.o\n")
    (tmp_path / "s.yaml").write_text(
        "patch: {source: p}\nprobe:\n  command: cat /proc/cmdline\n  expect: {patched: '^x$'}\n"
        "service: {rate: 10}\nthresholds: {max_latency: 0.5, overhead: {max_percent: 7}}\n"
        "dmesg: {expect: ['lab: hello']}\ntimeline: {patched: 6}\noverhead: {repeat: 30}\n"
        "expect: {verdict: fail, checks: [overhead]}\n"
        "release: {name: fix, version: 2, ticket: SEC-1, approver: Ann}\n")
    sc = loader.load(tmp_path / "s.yaml")
    c = criteria.record(sc, plan(sc, "p", None, {}).expect, "debian-6.1")
    assert json.loads(json.dumps(c)) == c
    assert c["form"] == "single" and c["expect"] == {"verdict": "fail", "checks": ["overhead"], "reason": ""}
    assert c["probe"] == {"command": "cat /proc/cmdline", "interval": 0.5, "patterns": {"patched": "^x$"},
                          "same_as": {}}
    assert c["service"]["rate"] == 10.0 and c["thresholds"]["max_latency"] == 0.5
    assert c["thresholds"]["overhead_max_percent"] == 7.0 and c["overhead"]["repeat"] == 30
    assert c["dmesg"] == ["lab: hello"] and c["timeline"]["patched"] == 6.0 and c["soak"] is None
    assert sc.release.as_dict() == {"name": "fix", "version": "2", "ticket": "SEC-1", "approver": "Ann"}


def test_the_results_document_with_criteria_and_release_meets_its_schema():
    from tests.results_schema import errors
    sc = loader.load(Path(__file__).resolve().parents[2] / "scenarios" / "stacked.yaml")
    expect = plan(sc, "lab_stack_b", None, {"a": "lab_stack_a", "b": "lab_stack_b"}).expect
    out = Outcome("stacked", "debian-6.1", Verdict("pass", [], {}), {"name": "debian-6.1"}, [], "/art", 1.0, [],
                  criteria.record(sc, expect, "debian-6.1"), RELEASE)
    doc = matrix.document([matrix.judge(matrix.Cell(sc, "debian-6.1"), out).as_dict()])
    assert errors(json.loads(json.dumps(doc))) == []
    assert doc["results"][0]["criteria"]["probe"]["patterns"]["after load a"].startswith("^lab-stack: a")
    doc["results"][0]["release"]["owner"] = "x"
    doc["results"][0]["criteria"]["form"] = "twice"
    found = errors(doc)
    assert [e.split(":")[0] for e in found] == ["results/0/criteria", "results/0/release"]
    assert found[0].endswith("is not valid under any of the given schemas") and "'owner' was unexpected" in found[1]


# the criteria beside the verdict -----------------------------------------------------------
def test_each_verdict_has_its_criteria_beside_it(tmp_path, ko, settings):
    signoff.write(tmp_path / "r", [make_run(tmp_path / "art", ko=ko)], settings)
    run = section((tmp_path / "r" / "index.html").read_text(), "run-good-debian-6.1")
    assert run.index("What the verdict was measured against") < run.index("<h3>Reasons")
    said = text(run)
    for words in (f"probe {PROBE}, every 0.4 s", f"exit 0 and output matching /{PATCHED}/",
                  "the unpatched output again (the revert check)",
                  "at 20 requests/s, open loop, each failing after 2 s; stress-ng --cpu 1",
                  "the larger of 1000 ms and 5 x the baseline's max: 1000 ms (baseline 30 ms) in this run",
                  "3 x the baseline's median: 60 ms (baseline 20 ms) in this run",
                  "at most 1024 KiB of SUnreclaim growth", "above +5 %", LOGGED,
                  "baseline 5 s, patched 5 s, cool-down 3 s",
                  "patched hold 3.00 s exit 0 and output matching", "cooldown cooldown 2.00 s"):
        assert words in said, words


def test_a_run_saved_before_criteria_were_kept_shows_its_judged_windows(tmp_path, ko, settings):
    signoff.write(tmp_path / "r", [make_run(tmp_path / "art", ko=ko, judged=False)], settings)
    said = text(section((tmp_path / "r" / "index.html").read_text(), "run-good-debian-6.1"))
    assert "saved before the lab kept its criteria" in said and "patched hold 3.00 s" in said
    assert "requests/s" not in said


def test_phases_that_must_show_the_same_share_a_row():
    rows = [("patched", "x")] + [(f"patched {i}", "x") for i in range(2, 21)] + [("after", "y")]
    assert acceptance.grouped(rows) == [("the patched, patched 2 ... patched 20 phases (20)", "x"),
                                        ("the after phase", "y")]


def test_a_regular_expression_spanning_lines_is_shown_on_one():
    c = {"probe": {"command": "cat a b", "patterns": {"before": "^a\nb$"}, "same_as": {"old again": "before"}}}
    assert acceptance.probe_phases(c) == [("before", "exit 0 and output matching /^a\\nb$/"),
                                          ("old again", "the same output as in the before phase"),
                                          ("after", "the unpatched output again (the revert check)")]


def test_what_the_scenario_expects_comes_with_the_run_unless_the_caller_says(tmp_path, ko, settings):
    slow = make_run(tmp_path / "art", scenario="slow", verdict="fail", slow=0.2, ko=ko, expected=("fail", ("service",)))
    bad = make_run(tmp_path / "art", scenario="bad", verdict="fail", slow=0.2, ko=ko, expected=("pass", ()))
    assert (collect.load(slow).expected, collect.load(slow).as_expected) == ("fail", True)
    assert (collect.load(bad).expected, collect.load(bad).as_expected) == ("pass", False)
    assert collect.load(make_run(tmp_path / "art", judged=False)).as_expected is None
    signoff.write(tmp_path / "r", [slow, bad], settings, expected={slow: ("pass", False)})
    page = text((tmp_path / "r" / "index.html").read_text())
    assert "2 not as the scenarios expect" in page
    assert "The scenario expects FAIL with service among the failed checks on this kernel" in page


# the patch's identity ------------------------------------------------------------------------
def test_the_page_names_the_patch_its_title_and_note(tmp_path, ko, settings):
    runs = [make_run(tmp_path / "art", ko=ko, release=RELEASE),
            make_run(tmp_path / "art", kernel="debian-7", ko=ko, release=RELEASE)]
    signoff.write(tmp_path / "r", runs, settings, title="CVE-2025-1234 livepatch", note="Checked <twice>.\nBy CI.")
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<title>CVE-2025-1234 livepatch: livepatch-lab sign-off: PASS (2 runs)</title>" in page
    assert '<h1 id="title">CVE-2025-1234 livepatch</h1>' in page
    assert "Checked &lt;twice&gt;.\nBy CI." in page
    identity = page[page.index('<section id="identity">'):page.index("</section>", page.index('id="identity"'))]
    assert text(identity).split() == ("Patch under sign-off patch version ticket approver "
                                      "CVE-2025-1234 fix 1.2-3 SEC-42 A. Person").split()
    assert "Patch CVE-2025-1234 fix version 1.2-3, ticket SEC-42, approver A. Person." in text(
        section(page, "run-good-debian-7"))
    doc = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert doc["inputs"]["page"] == {"title": "CVE-2025-1234 livepatch", "note": "Checked <twice>.\nBy CI."}
    assert [r["release"] for r in doc["inputs"]["runs"]] == [RELEASE, RELEASE]


def test_runs_of_different_patches_each_name_theirs_and_none_says_so(tmp_path, ko, settings):
    other = {"name": "other fix", "ticket": "SEC-7"}
    runs = [make_run(tmp_path / "art", ko=ko, release=RELEASE), make_run(tmp_path / "art", "b", ko=ko, release=other),
            make_run(tmp_path / "art", "c", ko=ko)]
    signoff.write(tmp_path / "r", runs, settings)
    page = (tmp_path / "r" / "index.html").read_text()
    identity = text(page[page.index('<section id="identity">'):page.index("</section>", page.index('id="identity"'))])
    assert "CVE-2025-1234 fix 1.2-3 SEC-42 A. Person good on debian-6.1" in identity
    assert "other fix - SEC-7 - b on debian-6.1" in identity and "Runs not listed here name no patch" in identity
    signoff.write(tmp_path / "r2", runs[2:], settings)
    assert "No patch identity given" in (tmp_path / "r2" / "index.html").read_text()


# emulated CPUs -------------------------------------------------------------------------------
def test_a_banner_at_the_top_says_when_timings_come_from_an_emulated_cpu(tmp_path, ko, settings):
    runs = [make_run(tmp_path / "art", ko=ko), make_run(tmp_path / "art", "fast", ko=ko, accel="kvm")]
    signoff.write(tmp_path / "r", runs, settings)
    page = (tmp_path / "r" / "index.html").read_text()
    banner = page[page.index('<div class="banner emulated"'):page.index("</div>", page.index("banner emulated"))]
    assert page.index("banner emulated") < page.index('id="matrix"')
    said = text(banner)
    assert "Emulated CPU (TCG): 1 of 2 runs ran on QEMU's software-emulated CPU" in said
    assert "overhead figures as upper bounds" in said and "Emulated: good on debian-6.1." in said
    assert "Emulated CPU (TCG)" in section(page, "run-good-debian-6.1")
    assert "Emulated CPU" not in section(page, "run-fast-debian-6.1")
    signoff.write(tmp_path / "r2", runs[1:], settings)
    assert "banner emulated" not in (tmp_path / "r2" / "index.html").read_text()


# a report from saved runs ---------------------------------------------------------------------
def test_a_report_is_made_from_saved_artifact_folders(tmp_path, ko, settings):
    art = tmp_path / "art"
    runs = [make_run(art, ko=ko, release=RELEASE), make_run(art, "slow", "debian-7", "fail", slow=0.2, ko=ko)]
    (art / "notes").mkdir()
    digest = signoff.write_saved(art / "report", [art], settings, title="t")
    assert signoff.verify(art / "report").ok and len(digest) == 64
    assert signoff.find_runs([art], art / "report") == [r.absolute() for r in sorted(runs)]
    # again, with the first report among the runs: its copies are not runs of their own
    signoff.write_saved(art / "report", [art, runs[0]], settings)
    assert sorted(p.parent.name for p in (art / "report" / "runs").glob("*/*/verdict.json")) == ["debian-6.1",
                                                                                                "debian-7"]
    shutil.rmtree(art / "report")
    assert signoff.find_runs([runs[1]]) == [runs[1].absolute()]


def test_a_report_from_nothing_or_into_someones_files_is_refused(tmp_path, ko, settings):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no run's artifact folder .* under .*empty"):
        signoff.write_saved(tmp_path / "r", [tmp_path / "empty"], settings)
    with pytest.raises(ConfigError, match="is not a directory"):
        signoff.write_saved(tmp_path / "r", [tmp_path / "nowhere"], settings)
    run = make_run(tmp_path / "art", ko=ko)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        signoff.write_saved(tmp_path / "mine", [run], settings)
    assert not (tmp_path / "r").exists()
