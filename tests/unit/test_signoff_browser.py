"""The sign-off page as a reader sees it: opened in headless Chromium with the network off,
it loads nothing but itself, logs no error, and shows the matrix and the plots, the patch's
identity, the banner of an emulated CPU in the first screenful, and each verdict's criteria
beside it. The screenshot is kept under the lab's artifacts (``<--lab-artifacts>/screenshots/``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from livepatch_lab.core.settings import Settings
from livepatch_lab.lab.report import signoff
from tests.browser import open_page, require_chromium, screenshot_dir

from .signoff_runs import LOGGED, PATCHED, PROBE, VERSION, make_module, make_run

# what the page must show, asked of the browser's DOM
QUERIES = {
    "matrix": "[...document.querySelectorAll('table.matrix td a')].map(a => a.textContent.trim())",
    "headers": "[...document.querySelectorAll('table.matrix thead th')].map(th => th.innerText)",
    "plots": "document.querySelectorAll('figure.plot svg').length",
    "plot_width": "Math.round(document.querySelector('figure.plot svg').getBoundingClientRect().width)",
    "points": "document.querySelectorAll('figure.plot svg use').length",
    "links_resolve": "[...document.querySelectorAll('table.matrix td a')]"
                     ".every(a => document.getElementById(a.hash.slice(1)) !== null)",
}
# what a signer must see: the patch, the emulated CPU, what each verdict was measured against
SIGNOFF = {
    "title": "[document.title, document.querySelector('h1').innerText]",
    "identity": "document.querySelector('#identity table').innerText",
    "note": "document.querySelector('#note').innerText",
    "banner": "document.querySelector('.banner.emulated').innerText",
    # where it is drawn: its top and height, and the matrix's top (the banner is above, in the first screen)
    "banner_box": "[document.querySelector('.banner.emulated').getBoundingClientRect().top,"
                  " document.querySelector('.banner.emulated').getBoundingClientRect().height,"
                  " document.querySelector('#matrix').getBoundingClientRect().top].map(Math.round)",
    "banner_background": "getComputedStyle(document.querySelector('.banner.emulated')).backgroundColor",
    "tcg_cells": "document.querySelectorAll('table.matrix td .accel').length",
    "criteria": "[...document.querySelectorAll('section.run div.criteria')].map(c => c.innerText)",
    # each run's criteria are drawn between its heading (the verdict) and its reasons
    "criteria_beside_verdict": "[...document.querySelectorAll('section.run')].every(s => {"
                               " const y = e => e.getBoundingClientRect().top;"
                               " const reasons = [...s.querySelectorAll('h3')].find(h => h.innerText === 'Reasons');"
                               " const c = s.querySelector('div.criteria');"
                               " return y(s.querySelector('h2')) < y(c) && y(c) + c.offsetHeight <= y(reasons); })",
}
RELEASE = {"name": "CVE-2025-1234 fix", "version": "1.2-3", "ticket": "SEC-42", "approver": "A. Person"}


@pytest.fixture
def screenshots(request) -> Path:
    return screenshot_dir(request.config)


@pytest.fixture
def browser() -> None:
    require_chromium()


def test_the_report_opens_offline_with_no_error_and_shows_matrix_and_plots(browser, tmp_path, screenshots,
                                                                           record_property):
    ko = make_module(tmp_path / "built")
    runs = [make_run(tmp_path / "art", ko=ko),
            make_run(tmp_path / "art", scenario="slow", verdict="fail", slow=0.2, failed=3, ko=ko, oops=True)]
    signoff.write(tmp_path / "r", runs, Settings(cache_dir=tmp_path / "cache"))
    shot = screenshots / "signoff-synthetic.png"
    page = open_page(tmp_path / "r" / "index.html", shot, QUERIES)
    record_property("screenshot", str(shot))
    assert page.console_errors == []
    assert page.requests == [(tmp_path / "r" / "index.html").as_uri()]   # nothing but itself
    assert page.facts["matrix"] == ["PASS", "FAIL"] and page.facts["links_resolve"] is True
    assert any(VERSION in h for h in page.facts["headers"])
    assert page.facts["plots"] == 2 and page.facts["plot_width"] > 1000
    assert page.facts["points"] >= 2 * 200       # every request drawn
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_shows_the_patch_the_emulated_cpu_and_each_verdicts_criteria(browser, tmp_path, screenshots):
    ko = make_module(tmp_path / "built")
    runs = [make_run(tmp_path / "art", ko=ko, release=RELEASE),
            make_run(tmp_path / "art", scenario="slow", verdict="fail", slow=0.2, ko=ko, release=RELEASE)]
    signoff.write(tmp_path / "r", runs, Settings(cache_dir=tmp_path / "cache"), title="CVE-2025-1234 livepatch",
                  note="Signed off for the March update.")
    facts = open_page(tmp_path / "r" / "index.html", screenshots / "signoff-criteria.png", SIGNOFF).facts
    assert facts["title"][1] == "CVE-2025-1234 livepatch" and facts["title"][0].startswith("CVE-2025-1234 livepatch:")
    assert facts["identity"].split("\n")[1].split("\t") == ["CVE-2025-1234 fix", "1.2-3", "SEC-42", "A. Person"]
    assert facts["note"] == "Signed off for the March update."
    assert "Emulated CPU (TCG): every run ran on QEMU's software-emulated CPU" in facts["banner"]
    assert "overhead figures as upper bounds" in facts["banner"]
    top, height, matrix_top = facts["banner_box"]
    assert 0 < top < 200 and height > 60 and top + height < matrix_top     # first, and above the verdicts
    assert facts["banner_background"] not in ("rgba(0, 0, 0, 0)", "transparent", "rgb(255, 255, 255)")
    assert facts["tcg_cells"] == 2
    good, slow = facts["criteria"]
    for words in (f"probe\t{PROBE}, every 0.4 s", f"exit 0 and output matching /{PATCHED}/",
                  "at 20 requests/s", "1000 ms (baseline 30 ms) in this run", "above +5 %", LOGGED,
                  "patched\thold\t3.00 s\texit 0 and output matching"):
        assert words in good, words
    assert "The scenario expects FAIL with service among the failed checks" in slow
    assert facts["criteria_beside_verdict"] is True


def test_the_check_sees_a_page_that_reaches_for_the_network(browser, tmp_path):
    """The test above can fail: a remote image and a console error are both reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><img src="https://example.invalid/x.png">'
                   "<script>console.error('broken')</script>")
    page = open_page(bad, tmp_path / "bad.png", {})
    assert "https://example.invalid/x.png" in page.requests
    assert "console.error: broken" in page.console_errors
    assert any("ERR_INTERNET_DISCONNECTED" in e for e in page.console_errors)
