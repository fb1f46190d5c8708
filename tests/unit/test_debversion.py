"""Debian version ordering: dpkg's rules, by table and against dpkg itself."""
import functools
import random
import shutil
import subprocess

import pytest

from livepatch_lab.supply import debversion
from livepatch_lab.supply.debversion import compare, key, parse, satisfies

# (a, b, expected compare(a, b))
CASES = [
    # plain numbers compare numerically, not as text
    ("1.0", "1.0", 0),
    ("1.2", "1.10", -1),
    ("1.10", "1.9", 1),
    ("01.0", "1.0", 0),
    ("1.0", "1.00", 0),
    ("1.0.1", "1.0", 1),
    ("1", "1.0", -1),
    ("1.", "1.0", 0),
    # tilde sorts before everything, even the end of the string
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~", -1),
    ("1.0~", "1.0", -1),
    ("1~", "1", -1),
    ("6.1.192-1~deb11u1", "6.1.192-1", -1),
    ("6.12.117-1~deb12u1", "6.12.117-1", -1),
    # plus sorts after the end and after letters
    ("1.0+b1", "1.0", 1),
    ("1.0+dfsg", "1.0a", 1),
    ("1.0+1", "1.0.1", -1),  # '+' (43+256) sorts before '.' (46+256)
    ("6.12.118+deb13", "6.12.118", 1),
    # letters sort before non-letters, after the end
    ("1.0a", "1.0", 1),
    ("1.0a", "1.0+", -1),
    ("1.0a", "1.0b", -1),
    ("1.0A", "1.0a", -1),
    ("1.0a", "1.0.", -1),
    # revisions
    ("1.0-1", "1.0-2", -1),
    ("1.0-10", "1.0-9", 1),
    ("1.0", "1.0-0", 0),
    ("1.0-0", "1.0-00", 0),
    ("1.0", "1.0-1", -1),
    ("1.0-1", "1.0-1.1", -1),
    ("1.0-1+b1", "1.0-1", 1),
    ("2.0-1-1", "2.0-1", 1),         # only the last hyphen starts the revision
    ("6.1.192-2", "6.1.192-1", 1),
    ("6.1.192-1", "6.1.190-1", 1),
    ("5.10.262-1", "5.10.223-1", 1),
    # epochs outrank everything
    ("1:1.0", "2.0", 1),
    ("0:1.0", "1.0", 0),
    ("1:1.0", "1:1.1", -1),
    ("2:0.1", "10:0.0", -1),
    ("1:1.2.3.3", "1:1.2.3.4", -1),
]


@pytest.mark.parametrize("a,b,want", CASES)
def test_compare_table(a, b, want):
    assert compare(a, b) == want
    assert compare(b, a) == -want


@pytest.mark.parametrize("a,b,want", CASES)
def test_key_orders_like_compare(a, b, want):
    ka, kb = key(a), key(b)
    assert (ka > kb) - (ka < kb) == want


def test_sorting_with_key_and_cmp_to_key_agree():
    versions = [a for a, _, _ in CASES] + [b for _, b, _ in CASES]
    by_key = sorted(versions, key=key)
    by_cmp = sorted(versions, key=functools.cmp_to_key(compare))
    assert [key(v) for v in by_key] == [key(v) for v in by_cmp]
    for earlier, later in zip(by_key, by_key[1:]):
        assert compare(earlier, later) <= 0


def test_kernel_versions_sort_newest_last():
    got = sorted(["6.1.192-2", "6.1.170-3", "6.1.192-1", "6.1.176-1~deb11u1", "6.1.176-1"], key=key)
    assert got == ["6.1.170-3", "6.1.176-1~deb11u1", "6.1.176-1", "6.1.192-1", "6.1.192-2"]


def test_parse_splits_epoch_upstream_revision():
    assert parse("1:2.3-4") == (1, "2.3", "4")
    assert parse("2.3") == (0, "2.3", "")
    assert parse("2.3-4-5") == (0, "2.3-4", "5")
    assert parse("7.2.13-1") == (0, "7.2.13", "1")


@pytest.mark.parametrize("bad", ["", " ", "a:1.0", "1.0 beta", "-1", "1.0_1", ":1.0"])
def test_malformed_versions_raise(bad):
    with pytest.raises(ValueError):
        compare(bad, "1.0")
    with pytest.raises(ValueError):
        key(bad)


@pytest.mark.parametrize("version,op,bound,want", [
    ("6.1.192-2", ">=", "6.1.192-2", True),
    ("6.1.192-2", ">=", "6.1.192-3", False),
    ("6.1.192-2", "=", "6.1.192-2", True),
    ("6.1.192-2", ">>", "6.1.192-2", False),
    ("6.1.192-2", "<<", "6.1.192-3", True),
    ("6.1.192-2", "<=", "6.1.192-2", True),
    ("4.12", ">=", "4.12~", True),
])
def test_satisfies(version, op, bound, want):
    assert satisfies(version, op, bound) is want


def test_satisfies_rejects_unknown_operator():
    with pytest.raises(ValueError):
        satisfies("1.0", "!=", "1.0")


def _random_version(rng: random.Random) -> str:
    def part(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
    upstream = rng.choice("0123456789") + part("0123456789.~+a")
    text = upstream
    if rng.random() < 0.5:
        text += "-" + part("0123456789.~+b")
    if rng.random() < 0.2:
        text = f"{rng.randint(0, 2)}:" + text
    return text


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg not installed")
def test_agrees_with_dpkg_on_random_versions():
    rng = random.Random(20261127)
    for _ in range(150):
        a, b = _random_version(rng), _random_version(rng)
        if rng.random() < 0.3:     # near-misses are where the rules bite
            b = a + rng.choice(["~", "+", "a", ".0", "0", "-0", "~1"])
        said = [value for op, value in (("lt", -1), ("eq", 0), ("gt", 1))
                if subprocess.run(["dpkg", "--compare-versions", a, op, b],
                                  stderr=subprocess.DEVNULL).returncode == 0]
        assert len(said) == 1, (a, b, said)   # dpkg accepted both versions
        want = said[0]
        assert compare(a, b) == want, (a, b)
        ka, kb = key(a), key(b)
        assert (ka > kb) - (ka < kb) == want, (a, b)


def test_module_exposes_documented_names():
    assert callable(debversion.compare) and callable(debversion.key)
