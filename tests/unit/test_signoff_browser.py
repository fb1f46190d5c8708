"""The sign-off page as a reader sees it: opened in headless Chromium with the network off,
it loads nothing but itself, logs no error, and shows the matrix and the plots. The
screenshot is kept under the lab's artifacts (``<--lab-artifacts>/screenshots/``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.settings import Settings
from harness.lab.report import signoff
from tests.browser import open_page, require_chromium, screenshot_dir

from .signoff_runs import VERSION, make_module, make_run

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


def test_the_check_sees_a_page_that_reaches_for_the_network(browser, tmp_path):
    """The test above can fail: a remote image and a console error are both reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><img src="https://example.invalid/x.png">'
                   "<script>console.error('broken')</script>")
    page = open_page(bad, tmp_path / "bad.png", {})
    assert "https://example.invalid/x.png" in page.requests
    assert "console.error: broken" in page.console_errors
    assert any("ERR_INTERNET_DISCONNECTED" in e for e in page.console_errors)
