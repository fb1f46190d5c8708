"""The shared YAML validator: every error names file, line and field; the checks it offers."""
import textwrap
from pathlib import Path

import pytest

from livepatch_lab.core import yamlconf
from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.yamlconf import Field, Variants, matches, one_of


def load(tmp_path: Path, text: str, schema, **kw) -> yamlconf.Loaded:
    path = tmp_path / "conf.yaml"
    path.write_text(textwrap.dedent(text))
    return yamlconf.load(path, schema, **kw)


def error(tmp_path: Path, text: str, schema, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text, schema, **kw)
    assert err.value.source == str(tmp_path / "conf.yaml")
    return err.value


def test_the_error_shape_is_file_line_field_message(tmp_path):
    err = error(tmp_path, "a: 1\nb: 2\n", {"a": Field(int)})
    assert str(err) == f"{tmp_path / 'conf.yaml'}:2 [b]: unknown field (known here: a)"


def test_a_field_given_twice_names_its_first_line(tmp_path):
    err = error(tmp_path, "a: 1\nb: 2\na: 3\n", {"a": Field(int), "b": Field(int)})
    assert (err.field, err.line) == ("a", 3) and "given twice (first on line 1)" in str(err)


def test_the_empty_file_message_is_the_callers(tmp_path):
    err = error(tmp_path, "# nothing\n", {"a": Field(int)}, empty="empty recipe")
    assert err.message == "empty recipe"


def test_matches_and_one_of_are_checks_that_name_the_value(tmp_path):
    schema = {"suite": Field(str, check=matches(r"[a-z]+", "a suite name")),
              "mode": Field(str, check=one_of(("fast", "slow")))}
    assert load(tmp_path, "suite: sid\nmode: fast\n", schema).values == {"suite": "sid", "mode": "fast"}
    err = error(tmp_path, "suite: Sid!\n", schema)
    assert (err.field, err.line, err.message) == ("suite", 1, "'Sid!' is not a suite name")
    err = error(tmp_path, "suite: sid\nmode: warp\n", schema)
    assert (err.field, err.line, err.message) == ("mode", 2, "must be one of fast, slow, not 'warp'")


def test_list_items_are_fields_checked_at_their_own_line(tmp_path):
    schema = {"packages": Field(list, unique=True, items=Field(str, check=matches(r"[a-z]+", "a name")))}
    assert load(tmp_path, "packages: [a, b]\n", schema).values["packages"] == ["a", "b"]
    err = error(tmp_path, "packages:\n  - a\n  - B\n", schema)
    assert (err.field, err.line, err.message) == ("packages[1]", 3, "'B' is not a name")
    err = error(tmp_path, "packages:\n  - a\n  - b\n  - a\n", schema)
    assert (err.field, err.line, err.message) == ("packages[2]", 4, "'a' is listed twice")


def test_as_text_takes_a_bare_integer_as_written_and_refuses_a_float(tmp_path):
    schema = {"series": Field(str, as_text=True)}
    assert load(tmp_path, "series: 7\n", schema).values["series"] == "7"
    err = error(tmp_path, "series: 6.10\n", schema)     # YAML reads it as 6.1
    assert (err.field, err.line) == ("series", 1)
    assert err.message == 'must be a string; quote it: series: "6.10"'
    assert error(tmp_path, "series: 7\n", {"series": Field(str)}).message == "must be a string, not 7"


def test_paths_resolve_against_the_files_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    schema = {"rel": Field(Path), "abs": Field(Path), "home": Field(Path)}
    v = load(tmp_path, "rel: out/bzImage\nabs: /boot/vmlinuz\nhome: ~/k\n", schema).values
    assert v == {"rel": tmp_path / "out/bzImage", "abs": Path("/boot/vmlinuz"),
                 "home": tmp_path / "home/k"}
    assert error(tmp_path, "rel: ''\n", schema).message == "must not be empty"
    assert error(tmp_path, "rel: 3\n", schema).message == "must be a path, not 3"


KINDS = Variants("kind", common={"name": Field(str)}, choices={
    "debian": {"series": Field(str, required=True)},
    "local": {"vmlinuz": Field(Path, required=True)}})


def test_variants_pick_the_fields_by_one_fields_value(tmp_path):
    v = load(tmp_path, "name: x\nkind: debian\nseries: '6.1'\n", KINDS).values
    assert v == {"name": "x", "kind": "debian", "series": "6.1"}
    v = load(tmp_path, "vmlinuz: bz\nkind: local\n", KINDS).values     # the key may come later
    assert v["vmlinuz"] == tmp_path / "bz" and v["name"] is None


def test_variants_errors_say_which_variant(tmp_path):
    err = error(tmp_path, "kind: debian\nseries: '6.1'\nvmlinuz: bz\n", KINDS)
    assert (err.field, err.line) == ("vmlinuz", 3)
    assert err.message == "unknown field for kind debian (known here: kind, name, series)"
    err = error(tmp_path, "kind: local\n", KINDS)
    assert (err.field, err.message) == ("vmlinuz", "required field is missing for kind local")
    err = error(tmp_path, "name: x\nkind: ubuntu\n", KINDS)
    assert (err.field, err.line, err.message) == ("kind", 2, "must be one of debian, local, not 'ubuntu'")
    err = error(tmp_path, "name: x\n", KINDS)
    assert (err.field, err.message) == ("kind", "required field is missing (debian or local)")


def test_variants_nest_inside_a_mapping_field(tmp_path):
    schema = {"kernel": Field(dict, schema=KINDS)}
    err = error(tmp_path, "kernel:\n  kind: debian\n  sauce: x\n", schema)
    assert (err.field, err.line) == ("kernel.sauce", 3)
    assert load(tmp_path, "other: 1\n", {**schema, "other": Field(int)}).values["kernel"] is None
