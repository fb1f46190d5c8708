"""Which files are lab files. A YAML file is one when its path matches the ``lab_scenarios``
patterns (or it is named on the command line, as pytest collects a ``.py`` file named there
whatever ``python_files`` says) and it says what it is: a scenario has a top-level ``patch:``
(``patches:`` for a lifecycle), a selftests file a top-level ``selftests:``. Any other file,
however it is named and whatever it holds, is not the plugin's: it is not even read unless
its path matches.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Optional, Sequence

import pytest

PATTERNS_INI = "lab_scenarios"
DEFAULT_PATTERNS = ("scenarios/*.yaml", "scenarios/*.yml")
SCENARIO, SELFTESTS = "scenario", "selftests"
_SUFFIXES = (".yaml", ".yml")
_SCENARIO_KEYS = ("patch:", "patches:")


def matches(path: Path, patterns: Sequence[str], rootpath: Path) -> bool:
    """Whether ``path`` matches one of the glob ``patterns``: a pattern with a ``/`` is matched
    against the path relative to the rootdir (``*`` crosses directories, as in ``fnmatch``), a
    pattern without one against the file's name."""
    try:
        rel = path.relative_to(rootpath).as_posix()
    except ValueError:   # outside the rootdir
        rel = path.as_posix()
    for pattern in patterns:
        pattern = pattern[2:] if pattern.startswith("./") else pattern
        if fnmatch.fnmatch(rel if "/" in pattern else path.name, pattern):
            return True
    return False


def kind_of(text: str) -> Optional[str]:
    """``SELFTESTS``, ``SCENARIO`` or None, from the top-level keys of a file's text."""
    from .selftest_items import is_selftests_file
    if is_selftests_file(text):
        return SELFTESTS
    if any(line.startswith(_SCENARIO_KEYS) for line in text.splitlines()):
        return SCENARIO
    return None


def lab_file(path: Path, session: pytest.Session) -> Optional[str]:
    """What the plugin collects ``path`` as (``SCENARIO`` or ``SELFTESTS``), or None."""
    if path.suffix not in _SUFFIXES:
        return None
    config = session.config
    if not (session.isinitpath(path) or matches(path, config.getini(PATTERNS_INI), config.rootpath)):
        return None
    return sniff(path)


def sniff(path: Path) -> Optional[str]:
    """What a YAML file says it is (``kind_of``); None for one that cannot be read."""
    try:
        return kind_of(path.read_text(errors="replace"))
    except OSError:
        return None
