"""Kernel definitions: the shipped ones, where they are found, validation with file/line/field, pins."""
import os
import textwrap
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.supply.kernels import defs as kerneldefs
from livepatch_lab.supply.kernels.defs import KernelDef

REPO_KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


DEBIAN_61 = textwrap.dedent("""\
    name: debian-6.1
    kind: debian
    description: test
    suites: [bookworm, bookworm-security]
    series: "6.1"
    """)


# --- the shipped definitions ------------------------------------------------
def test_shipped_definitions_cover_four_debian_lines():
    defs = kerneldefs.load_definitions(REPO_KERNELS)
    assert {n: (d.suites[0], d.series) for n, d in defs.items()} == {
        "debian-5.10": ("bullseye", "5.10"), "debian-6.1": ("bookworm", "6.1"),
        "debian-6.12": ("trixie", "6.12"), "debian-7": ("sid", "7")}
    assert all(d.kind == "debian" and d.flavour == "amd64" and d.pin is None for d in defs.values())
    assert "bullseye-security" in defs["debian-5.10"].suites


def test_default_directory_is_the_repositorys_and_env_overrides_it(tmp_path, monkeypatch):
    assert kerneldefs.DEFAULT_KERNELS_DIR == REPO_KERNELS
    monkeypatch.delenv(kerneldefs.ENV_KERNELS, raising=False)
    assert set(kerneldefs.load_definitions()) >= {"debian-6.1"}
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    monkeypatch.setenv(kerneldefs.ENV_KERNELS, str(tmp_path))
    assert list(kerneldefs.load_definitions()) == ["debian-6.1"]
    assert kerneldefs.load_definitions()["debian-6.1"].suites == ("bookworm", "bookworm-security")


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        kerneldefs.load_definitions(tmp_path / "nope")


# --- directories of definitions beside the built-in ones -----------------------
MINE = "kind: local\nvmlinuz: a\nmodules: b\nbuild: c\n"


@pytest.fixture
def extra(monkeypatch):
    """Sets $LIVEPATCH_LAB_EXTRA_KERNELS to the directories given (the built-in ones as shipped)."""
    monkeypatch.delenv(kerneldefs.ENV_KERNELS, raising=False)

    def use(*dirs: Path) -> None:
        monkeypatch.setenv(kerneldefs.ENV_EXTRA_KERNELS, os.pathsep.join(map(str, dirs)))
    return use


def test_extra_directories_add_their_definitions_beside_the_built_in_ones(tmp_path, extra):
    write(tmp_path / "a", "mine.yaml", MINE)
    write(tmp_path / "b", "theirs.yaml", MINE)
    extra(tmp_path / "a", tmp_path / "b")
    defs = kerneldefs.load_definitions()
    assert set(defs) == {"debian-5.10", "debian-6.1", "debian-6.12", "debian-7", "mine", "theirs"}
    assert defs["mine"].source == tmp_path / "a" / "mine.yaml"
    assert defs["debian-6.1"].source == REPO_KERNELS / "debian-6.1.yaml"
    assert kerneldefs.get_definition("theirs").vmlinuz == tmp_path / "b" / "a"


def test_a_directory_named_twice_or_the_built_in_one_named_again_is_read_once(tmp_path, extra):
    write(tmp_path / "a", "mine.yaml", MINE)
    extra(tmp_path / "a", tmp_path / "a" / ".." / "a", REPO_KERNELS)
    assert [d for d, _ in kerneldefs.definition_directories()] == [REPO_KERNELS, tmp_path / "a"]
    assert "mine" in kerneldefs.load_definitions()


def test_a_name_defined_in_an_extra_directory_and_the_built_in_one_is_an_error_naming_both_files(
        tmp_path, extra):
    write(tmp_path / "a", "debian-6.1.yaml", DEBIAN_61)
    extra(tmp_path / "a")
    with pytest.raises(ConfigError) as err:
        kerneldefs.load_definitions()
    assert str(err.value) == (f"{tmp_path / 'a' / 'debian-6.1.yaml'} [name]: kernel 'debian-6.1' is also "
                              f"defined in {REPO_KERNELS / 'debian-6.1.yaml'}")


def test_a_name_defined_in_two_extra_directories_is_an_error_naming_both_files(tmp_path, extra):
    write(tmp_path / "a", "mine.yml", MINE)
    write(tmp_path / "b", "mine.yaml", MINE)
    extra(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'b' / 'mine.yaml'} .*also defined in "
                                          f"{tmp_path / 'a' / 'mine.yml'}"):
        kerneldefs.load_definitions()


def test_a_missing_extra_directory_is_a_config_error_naming_it_and_its_variable(tmp_path, extra):
    extra(tmp_path / "nope")
    with pytest.raises(ConfigError) as err:
        kerneldefs.load_definitions()
    assert err.value.source == str(tmp_path / "nope") and err.value.field == kerneldefs.ENV_EXTRA_KERNELS


def test_a_directory_asked_for_by_name_is_read_alone(tmp_path, extra):
    write(tmp_path / "a", "mine.yaml", MINE)
    extra(tmp_path / "a")
    assert list(kerneldefs.load_definitions(REPO_KERNELS)) == sorted(
        ["debian-5.10", "debian-6.1", "debian-6.12", "debian-7"])


# --- validation ---------------------------------------------------------------
def load_one(tmp_path: Path, text: str, name: str = "debian-6.1.yaml") -> KernelDef:
    return kerneldefs.load_definition(write(tmp_path, name, text))


def error_of(tmp_path: Path, text: str, name: str = "debian-6.1.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_one(tmp_path, text, name)
    return err.value


def test_a_valid_debian_definition(tmp_path):
    d = load_one(tmp_path, DEBIAN_61 + "pin: 6.1.192-2\nflavour: amd64\n")
    assert (d.name, d.kind, d.series, d.pin, d.flavour) == ("debian-6.1", "debian", "6.1",
                                                            "6.1.192-2", "amd64")
    assert d.source == tmp_path / "debian-6.1.yaml"
    assert d.vmlinuz is None and d.release is None


def test_name_defaults_to_the_file_stem(tmp_path):
    assert load_one(tmp_path, DEBIAN_61.replace("name: debian-6.1\n", "")).name == "debian-6.1"


def test_unknown_key_names_file_line_and_key(tmp_path):
    err = error_of(tmp_path, DEBIAN_61 + "serie: 6.1\n")
    assert err.field == "serie" and err.line == 6
    assert err.source == str(tmp_path / "debian-6.1.yaml")
    assert "unknown field for kind debian" in str(err)
    assert "known here: kind, name, description, suites, series, flavour, pin" in str(err)


def test_local_keys_are_unknown_for_debian_kind(tmp_path):
    err = error_of(tmp_path, DEBIAN_61 + "vmlinuz: /boot/vmlinuz\n")
    assert err.field == "vmlinuz" and err.line == 6


def test_missing_required_key(tmp_path):
    err = error_of(tmp_path, DEBIAN_61.replace('series: "6.1"\n', ""))
    assert err.field == "series" and "required field is missing" in str(err)


def test_missing_kind(tmp_path):
    err = error_of(tmp_path, "name: debian-6.1\nsuites: [bookworm]\nseries: '6.1'\n")
    assert err.field == "kind"


def test_bad_kind(tmp_path):
    err = error_of(tmp_path, DEBIAN_61.replace("kind: debian", "kind: ubuntu"))
    assert err.field == "kind" and err.line == 2


def test_unquoted_float_series_asks_for_quotes(tmp_path):
    # 6.10 would load as 6.1: refuse floats instead of guessing
    err = error_of(tmp_path, DEBIAN_61.replace('series: "6.1"', "series: 6.10"))
    assert err.field == "series" and err.line == 5 and 'quote it' in str(err)


def test_integer_series_is_accepted(tmp_path):
    assert load_one(tmp_path, DEBIAN_61.replace('series: "6.1"', "series: 7")).series == "7"


@pytest.mark.parametrize("suites", ["bookworm", "[]", "[bookworm, bookworm]", "[1, 2]", "{a: b}"])
def test_suites_must_be_a_list_of_names(tmp_path, suites):
    err = error_of(tmp_path, DEBIAN_61.replace("[bookworm, bookworm-security]", suites))
    assert err.field.split("[")[0] == "suites" and err.line == 4    # the list, or its bad item


def test_wrong_type(tmp_path):
    err = error_of(tmp_path, DEBIAN_61.replace("description: test", "description: [a, b]"))
    assert err.field == "description" and "must be a string" in str(err)


def test_bad_pin(tmp_path):
    err = error_of(tmp_path, DEBIAN_61 + "pin: 'not a version'\n")
    assert err.field == "pin" and err.line == 6


def test_name_must_match_the_file(tmp_path):
    err = error_of(tmp_path, DEBIAN_61, name="other.yaml")
    assert err.field == "name" and err.line == 1 and "'other'" in str(err)


def test_duplicate_keys_are_refused(tmp_path):
    err = error_of(tmp_path, DEBIAN_61 + 'series: "6.12"\n')
    assert err.field == "series" and err.line == 6 and "first on line 5" in str(err)


def test_invalid_yaml_reports_its_line(tmp_path):
    err = error_of(tmp_path, "name: debian-6.1\nkind: debian\nsuites: [bookworm\n")
    assert "not valid YAML" in str(err) and err.line is not None


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n"])
def test_not_a_mapping(tmp_path, text):
    error_of(tmp_path, text)


def test_two_files_with_one_name(tmp_path):
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    write(tmp_path, "debian-6.1.yml", DEBIAN_61)
    with pytest.raises(ConfigError, match="also defined"):
        kerneldefs.load_definitions(tmp_path)


def test_local_paths_resolve_against_the_yaml_directory(tmp_path):
    d = load_one(tmp_path, """\
        kind: local
        vmlinuz: out/arch/x86/boot/bzImage
        modules: staging
        build: /abs/build
        release: 6.9.0-lab
        """, name="mine.yaml")
    assert d.vmlinuz == tmp_path / "out/arch/x86/boot/bzImage"
    assert d.modules == tmp_path / "staging"
    assert d.build == Path("/abs/build")
    assert d.release == "6.9.0-lab" and d.suites == () and d.series is None


def test_debian_keys_are_unknown_for_local_kind(tmp_path):
    err = error_of(tmp_path, "kind: local\nvmlinuz: a\nmodules: b\nbuild: c\nseries: '6.1'\n",
                   name="mine.yaml")
    assert err.field == "series" and err.line == 5


# --- get_definition ----------------------------------------------------------
def test_get_definition_and_pins(tmp_path):
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    d = kerneldefs.get_definition("debian-6.1", tmp_path)
    assert d.pin is None
    pinned = kerneldefs.get_definition("debian-6.1@6.1.192-2", tmp_path)
    assert pinned.pin == "6.1.192-2" and pinned.name == "debian-6.1"
    assert pinned.pin_origin == "debian-6.1@6.1.192-2"


def test_unknown_kernel_lists_the_known_ones(tmp_path):
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    with pytest.raises(ConfigError, match=r"unknown kernel 'debian-9'.*known: debian-6.1"):
        kerneldefs.get_definition("debian-9", tmp_path)


@pytest.mark.parametrize("spec", ["debian-6.1@", "debian-6.1@not a version"])
def test_bad_cli_pins(tmp_path, spec):
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    with pytest.raises(ConfigError) as err:
        kerneldefs.get_definition(spec, tmp_path)
    assert err.value.field == "pin" and err.value.source == spec


def test_local_kernels_take_no_pin(tmp_path):
    write(tmp_path, "mine.yaml", "kind: local\nvmlinuz: a\nmodules: b\nbuild: c\n")
    with pytest.raises(ConfigError, match="only debian kernels"):
        kerneldefs.get_definition("mine@1.0", tmp_path)
