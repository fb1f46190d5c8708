"""Debian version comparison with dpkg's semantics, as a pure function.

``[epoch:]upstream[-revision]``: epochs compare as integers; upstream and
revision compare as alternating non-digit and digit runs. In a non-digit run
``~`` sorts before everything (even the end of the string), then the end,
then letters, then every other character; digit runs compare numerically.
So ``1.0~rc1 < 1.0 < 1.0+b1 < 1.0.1`` and ``1.0 == 1.0-0 == 01.0``.

``compare`` follows dpkg's ``verrevcmp`` step by step; ``key`` turns a
version into a tuple that sorts the same way (cheaper than ``cmp_to_key`` when
sorting long package lists).
"""
from __future__ import annotations

import re
from typing import Tuple

_EPOCH = re.compile(r"^\s*(\d+):")
_VALID = re.compile(r"^[A-Za-z0-9.+~:-]+$")

# A run: (orders of its non-digit characters + end marker, value of its digits).
_Run = Tuple[Tuple[int, ...], int]
Key = Tuple[int, Tuple[_Run, ...], Tuple[_Run, ...]]


def parse(version: str) -> tuple[int, str, str]:
    """Split into (epoch, upstream, revision); ``ValueError`` for a malformed version."""
    text = version.strip()
    if not text or not _VALID.match(text):
        raise ValueError(f"not a Debian version: {version!r}")
    epoch = 0
    m = _EPOCH.match(text)
    if m:
        epoch, text = int(m.group(1)), text[m.end():]
    elif ":" in text:
        raise ValueError(f"not a Debian version (bad epoch): {version!r}")
    upstream, sep, revision = text.rpartition("-")
    if not sep:
        upstream, revision = text, ""
    if not upstream:
        raise ValueError(f"not a Debian version (empty upstream): {version!r}")
    if not upstream[0].isdigit():   # Debian policy 5.6.12: the upstream version starts with a digit
        raise ValueError(f"not a Debian version (the upstream part must start with a digit): {version!r}")
    return epoch, upstream, revision


def _order(c: str) -> int:
    # dpkg's order(): digits 0 (never reached here), letters their code,
    # '~' below everything, other characters above all letters.
    if c == "~":
        return -1
    if ("a" <= c <= "z") or ("A" <= c <= "Z"):
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while (i < la and not a[i].isdigit()) or (j < lb and not b[j].isdigit()):
            ac = _order(a[i]) if i < la and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < lb and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        si, sj = i, j
        while i < la and a[i].isdigit():
            i += 1
        while j < lb and b[j].isdigit():
            j += 1
        na, nb = int(a[si:i] or 0), int(b[sj:j] or 0)
        if na != nb:
            return -1 if na < nb else 1
    return 0


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, equal to or after ``b`` (``dpkg --compare-versions``)."""
    ea, ua, ra = parse(a)
    eb, ub, rb = parse(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def _runs(part: str) -> tuple[_Run, ...]:
    runs: list[_Run] = []
    i, n = 0, len(part)
    while i < n:
        start = i
        while i < n and not part[i].isdigit():
            i += 1
        orders = tuple(_order(c) for c in part[start:i]) + (0,)
        start = i
        while i < n and part[i].isdigit():
            i += 1
        runs.append((orders, int(part[start:i] or 0)))
    # The end of a string compares like an empty run worth 0, so trailing runs
    # equal to that ("0" alone) must go, or "" and "0" would differ.
    end: _Run = ((0,), 0)
    while runs and runs[-1] == end:
        runs.pop()
    runs.append(end)
    return tuple(runs)


def key(version: str) -> Key:
    """A sort key ordering versions exactly like ``compare``."""
    epoch, upstream, revision = parse(version)
    return epoch, _runs(upstream), _runs(revision)


def satisfies(version: str, op: str, bound: str) -> bool:
    """Whether ``version`` meets a Depends relation such as ``>= 6.1.192-2``."""
    c = compare(version, bound)
    checks = {"=": c == 0, ">=": c >= 0, "<=": c <= 0, ">>": c > 0, "<<": c < 0,
              ">": c >= 0, "<": c <= 0}  # '>' and '<' are dpkg's deprecated >=, <=
    if op not in checks:
        raise ValueError(f"not a version relation: {op!r}")
    return checks[op]
