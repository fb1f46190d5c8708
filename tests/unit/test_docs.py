"""The documentation's shape: a short README, the rest under docs/, and no link that leads nowhere.

Every relative link in README.md and docs/*.md must name a file that exists and, with a
``#anchor``, a heading of that file, by GitHub's rule for heading anchors (lowercase, spaces to
``-``, punctuation other than ``-`` and ``_`` dropped, a repeated heading numbered ``-1``, ``-2``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target), the text possibly over several lines; not images' ![..](..) (none here anyway)
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", re.S)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """``text`` with its fenced code blocks blanked (their lines kept, so line numbers hold)."""
    out, fence = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fence = not fence
            out.append("")
            continue
        out.append("" if fence else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                      # \w: letters, digits, _ (unicode)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    text = prose(path.read_text())
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _LINK.finditer(text)]


def test_slug_follows_githubs_rule():
    assert slug("Quiet damage: the kernel's memory debugging") == "quiet-damage-the-kernels-memory-debugging"
    assert slug("Livepatch transitions on debian-6.12") == "livepatch-transitions-on-debian-612"
    assert slug("What is judged without `--probe`") == "what-is-judged-without---probe"
    assert slug("Results on this machine (TCG, 2 vCPUs, 2 cores shared)") == \
        "results-on-this-machine-tcg-2-vcpus-2-cores-shared"


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (f"README.md has {n} lines, more than {MAX_README_LINES}: move the detail "
                                   "into a page under docs/ and link it")


def test_every_docs_page_is_listed_in_the_index():
    index = (DOCS / "README.md").read_text()
    unlisted = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and f"]({p.name})" not in index]
    assert not unlisted, f"docs/README.md does not list {unlisted}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page: Path):
    broken = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"line {line}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"line {line}: {target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


# bench/mdtable.py: the benchmark tables docs/benchmarks.md holds between markers ---------------
def _mdtable():
    import importlib.util
    spec = importlib.util.spec_from_file_location("mdtable", ROOT / "bench" / "mdtable.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_benchmark_table_replaces_only_what_lies_between_its_markers(tmp_path: Path):
    md = _mdtable()
    begin, end = md.markers("speed")
    doc = tmp_path / "b.md"
    doc.write_text(f"# B\n\nbefore\n{begin}\n| old |\n|---|\n{end}\nafter\n")
    md.write(str(doc), "speed", md.table(("target", "measured"), [("a | b", "**1.00**")]) + "\n")
    assert doc.read_text() == (f"# B\n\nbefore\n{begin}\n| target | measured |\n|---|---|\n"
                               f"| a \\| b | **1.00** |\n{end}\nafter\n")


def test_a_document_without_the_markers_is_refused_and_left_alone(tmp_path: Path):
    md = _mdtable()
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\n| hand | made |\n")
    with pytest.raises(SystemExit, match="bench:speed begin"):
        md.write(str(doc), "speed", "| x |")
    assert doc.read_text() == "# B\n\n| hand | made |\n"
    assert [p.name for p in tmp_path.iterdir()] == ["b.md"]


def test_the_speed_table_in_docs_can_be_regenerated():
    md = _mdtable()
    lines = (DOCS / "benchmarks.md").read_text().splitlines()
    begin, end = md.markers("speed")
    assert lines.count(begin) == 1 and lines.count(end) == 1, "bench/speed.py --markdown writes between these"
    assert lines[lines.index(begin) + 1] == "| target | measured | goal |"
    md.replace_block("\n".join(lines), "speed", "| x |")   # raises if the markers would not do
