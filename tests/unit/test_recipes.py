"""Image recipes: validation with file/line/field, defaults, the digest."""
import shutil
import textwrap
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.supply import guestfs, recipes

GOOD = """\
name: default
suite: bookworm
variant: minbase
packages: [openssh-server, kmod, busybox, iproute2, procps]
size_mib: 1024
"""


def recipe_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> recipes.Recipe:
    return recipes.load_recipe(recipe_file(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.source == str(tmp_path / "recipe.yaml")
    return err.value


# loading ------------------------------------------------------------------------------
def test_the_default_recipe_loads_and_has_what_the_guest_init_needs():
    recipe = recipes.load_recipe(recipes.DEFAULT_RECIPE)
    assert recipe.name == "default" and recipe.suite == "bookworm" and recipe.variant == "minbase"
    for pkg in ("openssh-server", "kmod", "busybox", "iproute2", "procps", "stress-ng", "python3"):
        assert pkg in recipe.packages
    assert recipe.size_mib == 2048


def test_a_good_recipe_loads_with_defaults(tmp_path):
    recipe = load(tmp_path, "name: x\nsuite: trixie\npackages: [openssh-server, kmod, busybox, iproute2]\n")
    assert (recipe.variant, recipe.size_mib) == ("minbase", 2048)
    assert recipe.source == tmp_path / "recipe.yaml"


def test_an_unknown_field_names_its_line(tmp_path):
    err = config_error(tmp_path, GOOD + "colour: blue\n")
    assert (err.field, err.line) == ("colour", 6)
    assert "unknown field" in str(err) and "recipe.yaml:6" in str(err)


@pytest.mark.parametrize("line,field,value", [
    (5, "size_mib", "size_mib: big"),
    (5, "size_mib", "size_mib: true"),
    (5, "size_mib", "size_mib: 1.5"),
    (2, "suite", "suite: 12"),
    (4, "packages", "packages: openssh-server"),
])
def test_a_wrong_type_names_field_and_line(tmp_path, line, field, value):
    text = "\n".join(value if l.startswith(field + ":") else l for l in GOOD.splitlines()) + "\n"
    err = config_error(tmp_path, text)
    assert (err.field, err.line) == (field, line)
    assert "must be" in str(err)


def test_a_bad_package_names_the_item_line(tmp_path):
    err = config_error(tmp_path, """\
        name: x
        suite: bookworm
        packages:
          - openssh-server
          - kmod
          - "rm -rf /"
          - busybox
          - iproute2
        """)
    assert (err.field, err.line) == ("packages[2]", 6)           # the third item
    assert "'rm -rf /' is not a Debian package name" in str(err)


def test_the_guest_init_packages_are_required(tmp_path):
    err = config_error(tmp_path, "name: x\nsuite: bookworm\npackages: [kmod, busybox]\n")
    assert err.field == "packages" and err.line == 3
    assert "openssh-server" in str(err) and "iproute2" in str(err)


def test_package_pins_count_as_the_package(tmp_path):
    recipe = load(tmp_path, "name: x\nsuite: bookworm\n"
                            "packages: [openssh-server=1:9.2p1-2, kmod/bookworm, busybox, iproute2]\n")
    assert "openssh-server=1:9.2p1-2" in recipe.packages


@pytest.mark.parametrize("text,field,line,message", [
    ("suite: bookworm\npackages: []\n", "name", 1, "missing"),
    ("name: Bad Name\nsuite: bookworm\n", "name", 1, "not a valid image name"),
    ("name: x\nsuite: Bookworm!\n", "suite", 2, "suite"),
    ("name: x\nsuite: bookworm\nvariant: extract\n", "variant", 3, "variant"),
    ("name: x\nsuite: bookworm\nsize_mib: 100\npackages: [openssh-server, kmod, busybox, iproute2]\n",
     "size_mib", 3, "out of range"),
    ("name: x\nname: y\nsuite: bookworm\n", "name", 2, "twice"),
    ("name: x\nsuite: bookworm\npackages: [kmod, kmod]\n", "packages[1]", 3, "twice"),
])
def test_bad_values(tmp_path, text, field, line, message):
    err = config_error(tmp_path, text)
    assert (err.field, err.line) == (field, line)
    assert message in str(err)


def test_yaml_syntax_errors_name_the_line(tmp_path):
    err = config_error(tmp_path, "name: x\nsuite: [bookworm\nsize_mib: 3\n")
    assert err.line is not None and err.line >= 2


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_recipe_must_be_a_mapping(tmp_path, text):
    config_error(tmp_path, text)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        recipes.load_recipe(tmp_path / "nope.yaml")
    assert err.value.source == str(tmp_path / "nope.yaml")


# digests --------------------------------------------------------------------------------
def test_the_digest_follows_content_not_form(tmp_path):
    a = load(tmp_path, GOOD)
    b = load(tmp_path, "# comment\nsize_mib: 1024\nname: default\nsuite: bookworm\n"
                       "packages: [procps, iproute2, busybox, kmod, openssh-server]\n")
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64
    c = load(tmp_path, GOOD.replace("1024", "1536"))
    d = load(tmp_path, GOOD.replace("procps", "procps, strace"))
    assert len({a.digest(), c.digest(), d.digest()}) == 3


def test_the_digest_changes_when_a_guest_script_changes(tmp_path, monkeypatch):
    guest = tmp_path / "guest"
    shutil.copytree(guestfs.GUEST_DIR, guest)
    monkeypatch.setattr(guestfs, "GUEST_DIR", guest)
    recipe = load(tmp_path, GOOD)
    before = recipe.digest()
    with open(guest / "rcS", "a") as f:
        f.write("# a change\n")
    assert recipe.digest() != before


def test_the_digest_changes_with_the_layout_version(tmp_path, monkeypatch):
    recipe = load(tmp_path, GOOD)
    before = recipe.digest()
    monkeypatch.setattr(recipes, "FORMAT", recipes.FORMAT + 1)
    assert recipe.digest() != before


# what a recipe adds: .deb files and copies ------------------------------------------------------
def test_debs_and_copies_load_and_their_contents_make_the_digest(tmp_path):
    (tmp_path / "agent_1.0_amd64.deb").write_bytes(b"!<arch>\nfake")
    agent = tmp_path / "agent"
    (agent / "bin").mkdir(parents=True)
    (agent / "bin" / "run").write_text("#!/bin/sh\n")
    (agent / "bin" / "run").chmod(0o755)
    text = GOOD + ("debs:\n  - {file: agent_1.0_amd64.deb}\n  - {package: kpatch, suite: trixie}\n"
                   "copy:\n  - {from: agent, to: /opt/agent}\n")
    recipe = load(tmp_path, text)
    local, archive = recipe.debs
    assert local.file == tmp_path / "agent_1.0_amd64.deb" and len(local.sha256) == 64
    assert (archive.package, archive.suite, archive.version) == ("kpatch", "trixie", None)
    copy, = recipe.copies
    assert (copy.source, copy.to) == (agent, "/opt/agent")
    before = recipe.digest()
    (agent / "bin" / "run").chmod(0o644)         # a mode is content: a new image
    assert load(tmp_path, text).digest() != before
    (agent / "bin" / "run").chmod(0o755)
    assert load(tmp_path, text).digest() == before
    (tmp_path / "agent_1.0_amd64.deb").write_bytes(b"!<arch>\nother")
    assert load(tmp_path, text).digest() != before


def test_a_recipe_without_debs_or_copies_keeps_its_digest(tmp_path):
    """Adding the fields must not rebuild every image already cached."""
    assert "debs" not in load(tmp_path, GOOD).content() and "copy" not in load(tmp_path, GOOD).content()


@pytest.mark.parametrize("extra,field,message", [
    ("debs:\n  - {file: nope.deb}\n", "debs[0].file", "is not a .deb file"),
    ("debs:\n  - {package: kpatch}\n", "debs[0].suite", "needs the suite"),
    ("debs:\n  - {}\n", "debs[0]", "exactly one of file"),
    ("debs:\n  - {package: kpatch, suite: trixie, version: 'a b'}\n", "debs[0].version", "not a Debian version"),
    ("copy:\n  - {from: nowhere, to: /opt/x}\n", "copy[0].from", "neither a file nor a directory"),
    ("copy:\n  - {from: ., to: opt/x}\n", "copy[0].to", "not an absolute path"),
    ("copy:\n  - {from: .}\n", "copy[0].to", "required field is missing"),
])
def test_bad_debs_and_copies_name_the_field(tmp_path, extra, field, message):
    err = config_error(tmp_path, GOOD + extra)
    assert err.field == field and message in str(err)
