"""The sign-off report from synthetic artifact folders: what the page says, what the plot
draws, and a manifest that catches every changed, missing or added file."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from livepatch_lab import cli
from livepatch_lab.cli.parser import build_parser
from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.lab.report import signoff
from livepatch_lab.lab.report.signoff import collect, inputs, plot
from livepatch_lab.supply.apt import sha256_file

from .signoff_runs import OOPS, RELEASE, VERSION, make_module, make_run


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """A passing run and a failing one (slow, three failed requests, an Oops); read-only."""
    root = tmp_path_factory.mktemp("runs")
    ko = make_module(root / "built")
    return [make_run(root / "art", ko=ko),
            make_run(root / "art", scenario="slow", verdict="fail", slow=0.2, failed=3, ko=ko, oops=True)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, runs, settings) -> Path:
    dest = tmp_path_factory.mktemp("report") / "r"
    signoff.write(dest, runs, settings)
    return dest


@pytest.fixture
def report(tmp_path, pristine) -> Path:
    """This test's own copy of the two runs' report."""
    shutil.copytree(pristine, tmp_path / "r")
    return tmp_path / "r"


# the page -----------------------------------------------------------------------------
def test_the_page_names_the_exact_kernel_and_the_modules_sha256(report, runs):
    page = (report / "index.html").read_text()
    assert VERSION in page and RELEASE in page
    assert sha256_file(runs[0].parents[2] / "built" / "lab_good.ko") in page
    assert "unsigned" in page


def test_the_matrix_links_each_cell_to_its_run_section(report):
    page = (report / "index.html").read_text()
    matrix = page[page.index('<table class="matrix">'):page.index("</table>", page.index('class="matrix"'))]
    links = re.findall(r'href="#(run-[^"]+)"', matrix)
    assert sorted(links) == ["run-good-debian-6.1", "run-slow-debian-6.1"]
    for anchor in links:
        assert f'id="{anchor}"' in page


def test_every_link_on_the_page_leads_to_a_file_of_the_report_or_a_section(report):
    page = (report / "index.html").read_text()
    links = set(re.findall(r'<a href="([^"]+)"', page))
    files = {link for link in links if not link.startswith("#")}
    assert "runs/good/debian-6.1/modules/lab_good.ko" in files and "runs/slow/debian-6.1/dmesg.txt" in files
    assert [link for link in files if not (report / link).is_file()] == []
    assert [link for link in links - files if f'id="{link[1:]}"' not in page] == []


def test_the_page_is_self_contained_and_needs_no_script(report):
    page = (report / "index.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert page.count("<svg") == 2          # one inline plot per run


def test_a_failing_run_shows_its_reasons_and_its_highlighted_finding(report):
    page = (report / "index.html").read_text()
    slow = page[page.index('id="run-slow-debian-6.1"'):]
    assert "median latency 200 ms" in slow
    line = re.search(r'<span class="finding" title="oops">([^<]*)</span>', slow)
    assert line and "NULL pointer dereference" in line.group(1)
    assert "D</span> kernel died recently" in slow


def test_log_text_is_shown_never_interpreted(tmp_path, settings):
    folder = make_run(tmp_path / "art")
    with open(folder / "dmesg.txt", "a") as fh:
        fh.write("[   30.0] <script>alert(1)</script>\n")
    signoff.write(tmp_path / "r", [folder], settings)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def test_a_run_that_ended_before_its_guest_has_no_plot_but_a_page(tmp_path, settings):
    folder = make_run(tmp_path / "art", scenario="compat", verdict="fail", stop_after="build")
    signoff.write(tmp_path / "r", [folder], settings)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<svg" not in page and "nothing to plot" in page
    assert "the run ended before it recorded its modules" in page


def test_expectations_mark_the_cells_that_are_not_as_expected(tmp_path, runs, settings):
    signoff.write(tmp_path / "r", runs, settings, expected={runs[0]: ("pass", True), runs[1]: ("pass", False)})
    page = (tmp_path / "r" / "index.html").read_text()
    assert "1 not as the scenarios expect" in page and "! expected pass" in page


# what the run's folder says ----------------------------------------------------------
def test_probe_outputs_are_grouped_by_phase(runs):
    run = collect.load(runs[0])
    phases = run.probe_by_phase()
    assert [o.output for o in phases["before"]] == ["console=ttyS0\n"]
    assert [o.output for o in phases["patched"]] == ["livepatch-lab: patched\n"]
    assert [o.output for o in phases["after"]] == ["console=ttyS0\n"]
    assert all(o.exit_codes == [0] for outs in phases.values() for o in outs)


def test_a_phase_that_never_ended_lasts_until_the_run_gave_up(tmp_path):
    run = collect.load(make_run(tmp_path / "art", verdict="fail", stop_after="loaded"))
    assert [(name, done) for name, _, _, _, done in run.windows()] == [("baseline", True), ("apply", False)]


def test_the_report_draws_the_windows_the_verdict_judged(tmp_path):
    folder = make_run(tmp_path / "art", verdict="pass")
    data = json.loads((folder / "verdict.json").read_text())
    data["windows"] = [{"name": "baseline", "kind": "baseline", "start": 100.0, "end": 103.0, "probe_phase": "before"},
                       {"name": "load a", "kind": "transition", "start": 103.0, "end": 104.5, "probe_phase": None}]
    (folder / "verdict.json").write_text(json.dumps(data))
    assert collect.load(folder).windows() == [("baseline", "baseline", 100.0, 103.0, True),
                                              ("load a", "transition", 103.0, 104.5, True)]


def test_dmesg_lines_are_classified(runs):
    lines = collect.load(runs[1]).dmesg
    assert [line.finding for line in lines if line.finding] == ["oops"]
    assert sum(line.livepatch for line in lines) == 3
    assert lines[-1].text == OOPS


def test_the_modules_come_from_the_built_event_with_what_the_user_gave(runs, tmp_path):
    run = collect.load(runs[0])
    ((role, path, given),) = run.modules()
    assert role == "patch" and path.endswith("lab_good.ko") and given is None
    built = run.event("built")
    built.update(targets=["/c/t.ko"], target_sources=["/src/target"], patch_source="/src/good")
    assert run.modules() == [("target", "/c/t.ko", "/src/target"), ("patch", path, "/src/good")]


def test_a_folder_without_a_verdict_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a run's artifact folder"):
        collect.load(tmp_path)


def test_module_facts_from_modinfo_and_the_build_manifest(tmp_path, settings):
    ko = make_module(tmp_path / "m")
    (ko.parent / "manifest.json").write_text(json.dumps({"ko": ko.name, "source": "/src/good",
                                                         "toolchain_version": "host-gcc-12"}))
    facts = inputs.module_facts(str(ko), "patch", settings)
    assert facts["name"] == "lab_good" and facts["sha256"] == sha256_file(ko)
    assert facts["vermagic"].startswith(RELEASE) and facts["signature"] is None
    assert facts["source"] == "/src/good" and facts["built_here"]
    # what the run says it was given wins over where these sources were first built from
    assert inputs.module_facts(str(ko), "patch", settings, "/home/me/patch")["source"] == "/home/me/patch"
    assert inputs.module_facts(str(tmp_path / "gone.ko"), "patch", settings)["missing"]


def test_a_signature_is_read_from_modinfo_fields():
    signed = {"sig_id": "PKCS#7", "signer": "Build time autogenerated kernel key",
              "sig_key": "5E:E1:13", "sig_hashalgo": "sha256"}
    assert inputs.signature(signed) == {"signer": "Build time autogenerated kernel key", "key_id": "5E:E1:13",
                                        "hash_algorithm": "sha256", "type": "PKCS#7"}
    assert inputs.signature({"name": "lab_good"}) is None


# the plot ------------------------------------------------------------------------------
def test_the_plot_draws_phases_events_and_failed_requests(runs):
    svg = plot.timeline_svg(collect.load(runs[1]), salt="a")
    assert svg.startswith("<svg")
    for text in ("baseline", "apply", "patched", "revert", "cooldown", "insmod", "transition complete",
                 "disable", "unpatch complete", "rmmod", "latency (ms)", "failed request (3)", "request (197)"):
        assert f">{text}" in svg or f"> {text}" in svg, text


def test_two_plots_on_one_page_refer_to_no_common_id(runs):
    """Clip paths and markers are referred to by id: on one page, one plot's must not be the other's."""
    svgs = [plot.timeline_svg(collect.load(f), salt=f"{f.parent.name}/{f.name}") for f in runs]
    refs = [set(re.findall(r'(?:url\(#|href="#)([^)"]+)', svg)) for svg in svgs]
    assert refs[0] and refs[1] and not refs[0] & refs[1]
    for svg, ids in zip(svgs, refs):
        assert all(f'id="{i}"' in svg for i in ids)


# the manifest ----------------------------------------------------------------------------
def test_the_manifest_lists_every_file_and_the_runs_inputs(report):
    doc = json.loads((report / "manifest.json").read_text())
    on_disk = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    assert set(doc["files"]) == on_disk - {"manifest.json"}
    assert {"index.html", "runs/good/debian-6.1/dmesg.txt", "runs/good/debian-6.1/modules/lab_good.ko"} \
        <= set(doc["files"])
    run = doc["inputs"]["runs"][0]
    assert run["kernel"]["version"] == VERSION and run["kernel"]["packages"][0]["sha256"] == "ab" * 32
    assert run["modules"][0]["sha256"] == doc["files"]["runs/good/debian-6.1/modules/lab_good.ko"]
    assert len(doc["inputs"]["image"]["digest"]) == 64


def test_verify_passes_an_untouched_report(report):
    check = signoff.verify(report)
    assert check.ok and check.matched == len(json.loads((report / "manifest.json").read_text())["files"])


def test_verify_names_a_changed_a_missing_and_an_added_file(report):
    with open(report / "runs/slow/debian-6.1/dmesg.txt", "ab") as fh:
        fh.write(b"x")
    (report / "runs/good/debian-6.1/requests.jsonl").unlink()
    (report / "runs/good/debian-6.1/extra.txt").write_text("hello")
    check = signoff.verify(report)
    assert check.problems() == ["changed: runs/slow/debian-6.1/dmesg.txt",
                                "missing: runs/good/debian-6.1/requests.jsonl",
                                "unexpected: runs/good/debian-6.1/extra.txt (not in the manifest)"]


def test_verify_catches_a_module_swapped_with_its_file_hash_rewritten(report):
    copy = "runs/good/debian-6.1/modules/lab_good.ko"
    with open(report / copy, "ab") as fh:
        fh.write(b"\0")
    doc = json.loads((report / "manifest.json").read_text())
    doc["files"][copy] = sha256_file(report / copy)
    (report / "manifest.json").write_text(json.dumps(doc))
    (problem,) = signoff.verify(report).problems()
    assert problem.startswith("input differs: good/debian-6.1: patch lab_good was recorded as sha256")


@pytest.mark.parametrize("manifest", [None, "{not json", '{"format": 1, "files": {"../etc/passwd": "00"}}'])
def test_verify_refuses_a_directory_that_is_no_report(tmp_path, manifest):
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(ConfigError):
        signoff.verify(tmp_path)


def test_the_verify_command_exits_0_1_2(report, tmp_path, capsys):
    assert cli.main(["verify", str(report)]) == 0
    assert "all" in capsys.readouterr().out
    with open(report / "runs/good/debian-6.1/dmesg.txt", "ab") as fh:
        fh.write(b"x")
    assert cli.main(["verify", str(report)]) == 1
    assert "changed: runs/good/debian-6.1/dmesg.txt" in capsys.readouterr().out
    assert cli.main(["verify", str(tmp_path / "nowhere")]) == 2


# the report directory --------------------------------------------------------------------
def test_a_new_report_replaces_an_old_one_but_nothing_else(tmp_path, runs, settings):
    signoff.write(tmp_path / "r", runs, settings)
    signoff.write(tmp_path / "r", runs[:1], settings)
    assert not (tmp_path / "r" / "runs" / "slow").exists() and signoff.verify(tmp_path / "r").ok
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        signoff.write(tmp_path / "mine", runs, settings)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no staging left


@pytest.mark.parametrize("report, artifacts", [("a", "a"), ("r", "r/art")])
def test_the_report_never_holds_the_artifacts_it_would_replace(tmp_path, report, artifacts):
    with pytest.raises(ConfigError, match="would hold the artifact folder"):
        signoff.check_destination(tmp_path / report, tmp_path / artifacts)
    signoff.check_destination(tmp_path / "r", tmp_path / "art")      # side by side
    signoff.check_destination(tmp_path / "art" / "r", tmp_path / "art")   # a report among the runs


def test_the_check_and_run_commands_take_report(tmp_path):
    parser = build_parser()
    assert parser.parse_args(["check", "p", "--report", "r"]).report == "r"
    assert parser.parse_args(["run", "s.yaml", "--report", "r"]).report == "r"
