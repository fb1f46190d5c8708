"""Kernel definitions, version selection, unpacking fix-ups, the cache, local kernels.

No network: the archive is a list of fake package records, and the one
end-to-end fetch below installs .debs built here with dpkg-deb.
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest

from harness.core import hostcmd
from harness.core.errors import ConfigError
from harness.core.settings import Settings
from harness.supply import apt, kernels
from harness.supply.apt import PackageRecord
from harness.supply.kernels import KernelDef

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
    defs = kernels.load_definitions(REPO_KERNELS)
    assert {n: (d.suites[0], d.series) for n, d in defs.items()} == {
        "debian-5.10": ("bullseye", "5.10"), "debian-6.1": ("bookworm", "6.1"),
        "debian-6.12": ("trixie", "6.12"), "debian-7": ("sid", "7")}
    assert all(d.kind == "debian" and d.flavour == "amd64" and d.pin is None for d in defs.values())
    assert "bullseye-security" in defs["debian-5.10"].suites


def test_default_directory_is_the_repositorys_and_env_overrides_it(tmp_path, monkeypatch):
    assert kernels.DEFAULT_KERNELS_DIR == REPO_KERNELS
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    assert set(kernels.load_definitions()) >= {"debian-6.1"}
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    monkeypatch.setenv(kernels.ENV_KERNELS, str(tmp_path))
    assert list(kernels.load_definitions()) == ["debian-6.1"]
    assert kernels.load_definitions()["debian-6.1"].suites == ("bookworm", "bookworm-security")


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        kernels.load_definitions(tmp_path / "nope")


# --- validation ---------------------------------------------------------------
def load_one(tmp_path: Path, text: str, name: str = "debian-6.1.yaml") -> KernelDef:
    return kernels.load_definition(write(tmp_path, name, text))


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
    assert "unknown key 'serie'" in str(err) and "allowed:" in str(err)


def test_local_keys_are_unknown_for_debian_kind(tmp_path):
    err = error_of(tmp_path, DEBIAN_61 + "vmlinuz: /boot/vmlinuz\n")
    assert err.field == "vmlinuz" and err.line == 6


def test_missing_required_key(tmp_path):
    err = error_of(tmp_path, DEBIAN_61.replace('series: "6.1"\n', ""))
    assert err.field == "series" and "missing required key" in str(err)


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
    assert err.field == "suites" and err.line == 4


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
        kernels.load_definitions(tmp_path)


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
    d = kernels.get_definition("debian-6.1", tmp_path)
    assert d.pin is None
    pinned = kernels.get_definition("debian-6.1@6.1.192-2", tmp_path)
    assert pinned.pin == "6.1.192-2" and pinned.name == "debian-6.1"
    assert pinned.pin_origin == "debian-6.1@6.1.192-2"


def test_unknown_kernel_lists_the_known_ones(tmp_path):
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    with pytest.raises(ConfigError, match=r"unknown kernel 'debian-9'.*known: debian-6.1"):
        kernels.get_definition("debian-9", tmp_path)


@pytest.mark.parametrize("spec", ["debian-6.1@", "debian-6.1@not a version"])
def test_bad_cli_pins(tmp_path, spec):
    write(tmp_path, "debian-6.1.yaml", DEBIAN_61)
    with pytest.raises(ConfigError) as err:
        kernels.get_definition(spec, tmp_path)
    assert err.value.field == "pin" and err.value.source == spec


def test_local_kernels_take_no_pin(tmp_path):
    write(tmp_path, "mine.yaml", "kind: local\nvmlinuz: a\nmodules: b\nbuild: c\n")
    with pytest.raises(ConfigError, match="only debian kernels"):
        kernels.get_definition("mine@1.0", tmp_path)


# --- selection from a package list ---------------------------------------------
def rec(package, version, depends="", size=1000):
    return PackageRecord(package=package, version=version, source="linux", depends=depends,
                         filename=f"pool/{package}_{version}_amd64.deb",
                         sha256=hashlib.sha256(f"{package}{version}".encode()).hexdigest(),
                         size=size)


def debian_kernel(abi, version, kbuild="6.1", compiler="linux-compiler-gcc-12-x86"):
    """The packages one 6.1-style Debian kernel build puts in the archive."""
    return [
        rec(f"linux-image-{abi}-amd64-unsigned", version, "kmod, linux-base (>= 4.3~)"),
        rec(f"linux-image-{abi}-amd64", version, "kmod"),
        rec(f"linux-image-{abi}-cloud-amd64-unsigned", version),
        rec(f"linux-image-{abi}-rt-amd64-unsigned", version),
        rec(f"linux-headers-{abi}-amd64", version,
            f"linux-headers-{abi}-common (= {version}), linux-kbuild-{kbuild} (>= {version}), "
            f"{compiler}"),
        rec(f"linux-headers-{abi}-common", version),
        rec(f"linux-headers-{abi}-common-rt", version),
        rec(f"linux-kbuild-{kbuild}", version, "libc6 (>= 2.34)"),
    ]


def bookworm_archive():
    return [
        *debian_kernel("6.1.0-50", "6.1.176-1"),
        *debian_kernel("6.1.0-56", "6.1.192-2"),
        *debian_kernel("6.1.0-55", "6.1.192-1"),
        # 6.12 backports share the suites; series must keep them out
        *debian_kernel("6.12.117+deb12", "6.12.117-1~deb12u1", kbuild="6.12.117+deb12",
                       compiler="gcc-14"),
        rec("linux-base", "4.9"),
        rec("linux-compiler-gcc-12-x86", "6.1.192-2", "gcc-12"),
    ]


def defn(tmp_path=Path("/k"), **kw) -> KernelDef:
    base = dict(name="debian-6.1", kind="debian", source=tmp_path / "debian-6.1.yaml",
                suites=("bookworm", "bookworm-security"), series="6.1", flavour="amd64")
    base.update(kw)
    return KernelDef(**base)


def test_newest_version_of_the_series_wins():
    sel = kernels.select(defn(), bookworm_archive())
    assert (sel.release, sel.version, sel.abi) == ("6.1.0-56-amd64", "6.1.192-2", "6.1.0-56")
    assert [p.package for p in sel.packages] == [
        "linux-image-6.1.0-56-amd64-unsigned", "linux-headers-6.1.0-56-amd64",
        "linux-headers-6.1.0-56-common", "linux-kbuild-6.1"]
    assert all(p.version == "6.1.192-2" for p in sel.packages)
    assert sel.compiler == "gcc-12"


def test_series_612_picks_the_backport_and_its_compiler():
    sel = kernels.select(defn(series="6.12"), bookworm_archive())
    assert sel.release == "6.12.117+deb12-amd64" and sel.compiler == "gcc-14"
    assert "linux-kbuild-6.12.117+deb12" in [p.package for p in sel.packages]


def test_cloud_and_rt_are_not_the_generic_kernel():
    records = [r for r in bookworm_archive() if "-56-amd64-unsigned" not in r.package
               and "-55-amd64-unsigned" not in r.package and "-50-amd64-unsigned" not in r.package]
    with pytest.raises(ConfigError, match="no amd64 kernel of series 6.1"):
        kernels.select(defn(), records)


def test_equal_versions_are_broken_by_abi():
    records = [*debian_kernel("6.1.0-9", "6.1.1-1"), *debian_kernel("6.1.0-10", "6.1.1-1")]
    assert kernels.select(defn(), records).abi == "6.1.0-10"


def test_a_pin_selects_that_version():
    sel = kernels.select(defn(pin="6.1.176-1"), bookworm_archive())
    assert (sel.release, sel.version) == ("6.1.0-50-amd64", "6.1.176-1")


def test_a_missing_pin_names_it_and_lists_the_series_versions(tmp_path):
    d = defn(tmp_path, pin="6.1.999-1", lines=(("pin", 7),))
    with pytest.raises(ConfigError) as err:
        kernels.select(d, bookworm_archive())
    text = str(err.value)
    assert "pin 6.1.999-1" in text
    assert "6.1.192-2, 6.1.192-1, 6.1.176-1" in text and "6.12" not in text
    assert err.value.field == "pin" and err.value.line == 7
    assert err.value.source == str(tmp_path / "debian-6.1.yaml")


def test_a_missing_cli_pin_points_at_the_spec():
    d = defn(pin="6.1.999-1", pin_origin="debian-6.1@6.1.999-1")
    with pytest.raises(ConfigError) as err:
        kernels.select(d, bookworm_archive())
    assert err.value.source == "debian-6.1@6.1.999-1"


def test_missing_headers_are_a_config_error_listing_versions():
    records = [r for r in bookworm_archive() if r.package != "linux-headers-6.1.0-56-amd64"]
    with pytest.raises(ConfigError, match=r"linux-headers-6.1.0-56-amd64=6.1.192-2 is not in"):
        kernels.select(defn(), records)


def test_kbuild_takes_the_newest_version_meeting_the_relation():
    records = [*debian_kernel("6.1.0-56", "6.1.192-2"), rec("linux-kbuild-6.1", "6.1.192-2+b1"),
               rec("linux-kbuild-6.1", "6.1.176-1")]
    kb = [p for p in kernels.select(defn(), records).packages if p.package == "linux-kbuild-6.1"]
    assert [p.version for p in kb] == ["6.1.192-2+b1"]


def test_an_unsatisfiable_dependency_is_named():
    records = [r for r in debian_kernel("6.1.0-56", "6.1.192-2") if "kbuild" not in r.package]
    records.append(rec("linux-kbuild-6.1", "6.1.176-1"))
    with pytest.raises(ConfigError, match=r"depends on linux-kbuild-6.1 \(>= 6.1.192-2\).*6.1.176-1"):
        kernels.select(defn(), records)


def sid_archive():
    abi, v = "7.2.13+deb14", "7.2.13-1"
    r = f"{abi}-amd64"
    return [
        rec(f"linux-image-{r}", v, f"dracut | initramfs-tools, linux-base-{r} (= {v}), "
                                   f"linux-binary-{r} (= {v}), linux-modules-{r} (= {v})"),
        rec(f"linux-binary-{r}", v, f"linux-base-{r} (= {v})"),
        rec(f"linux-binary-unsigned-{r}", v, f"linux-base-{r} (= {v})"),
        rec(f"linux-binary-unsigned-{abi}-rt-amd64", v),
        rec(f"linux-modules-{r}", v, f"kmod, linux-base-{r} (= {v})"),
        rec(f"linux-base-{r}", v),
        rec(f"linux-headers-{r}", v, f"gcc-16-for-host, linux-base (>= 4.12~), linux-base-{r} (= {v}), "
                                     f"linux-headers-{abi}-common (= {v}), linux-kbuild-{abi}"),
        rec(f"linux-headers-{abi}-common", v),
        rec(f"linux-kbuild-{abi}", v),
        rec("linux-base", "4.12"),
    ]


def test_split_packaging_of_7x():
    sel = kernels.select(defn(name="debian-7", series="7", suites=("sid",)), sid_archive())
    assert sel.release == "7.2.13+deb14-amd64" and sel.compiler == "gcc-16"
    assert sorted(p.package for p in sel.packages) == sorted([
        "linux-binary-unsigned-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64",
        "linux-base-7.2.13+deb14-amd64", "linux-headers-7.2.13+deb14-amd64",
        "linux-headers-7.2.13+deb14-common", "linux-kbuild-7.2.13+deb14"])
    assert sel.packages[0].package == "linux-binary-unsigned-7.2.13+deb14-amd64"


@pytest.mark.parametrize("version,series,want", [
    ("6.1.192-2", "6.1", True), ("6.12.117-1~deb12u1", "6.1", False),
    ("6.12.117-1~deb12u1", "6.12", True), ("7.2.13-1", "7", True), ("70.1-1", "7", False),
    ("6.1-1", "6.1", True), ("5.10.262-1", "6.1", False), ("1:6.1.2-1", "6.1", True),
])
def test_in_series(version, series, want):
    assert kernels.in_series(version, series) is want


@pytest.mark.parametrize("text,want", [
    ('CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"', "gcc-12"),
    ('CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0"', "gcc-14"),
    ('CONFIG_CC_VERSION_TEXT="Debian clang version 19.1.7 (3)"', "clang-19"),
    ("CONFIG_LIVEPATCH=y", None),
])
def test_compiler_from_config(tmp_path, text, want):
    p = tmp_path / "config"
    p.write_text(f"CONFIG_X=y\n{text}\n")
    assert kernels.compiler_from_config(p) == want


# --- unpacking fix-ups on a temp tree ---------------------------------------------
def headers_tree(root: Path, release="6.1.0-56-amd64", common="6.1.0-56-common") -> None:
    src = root / "usr/src"
    (src / f"linux-headers-{release}").mkdir(parents=True)
    (src / f"linux-headers-{common}").mkdir(parents=True)
    (root / "usr/lib/linux-kbuild-6.1/scripts").mkdir(parents=True)
    (src / f"linux-headers-{release}/Makefile").write_text(
        f"include /usr/src/linux-headers-{common}/Makefile\n")
    (src / f"linux-headers-{common}/Makefile").write_text("all:\n")
    (src / f"linux-headers-{release}/scripts").symlink_to("../../lib/linux-kbuild-6.1/scripts")
    mods = root / "lib/modules" / release
    (mods / "kernel").mkdir(parents=True)
    (mods / "build").symlink_to(f"/usr/src/linux-headers-{release}")
    (mods / "source").symlink_to("/nonexistent/elsewhere")


def test_header_makefile_is_rewritten_to_the_final_tree(tmp_path):
    root = tmp_path / "x" / "root"
    headers_tree(root)
    final = tmp_path / "final" / "root"
    changed = kernels.rewrite_makefiles(sorted((root / "usr/src").glob("linux-headers-*")), final)
    mk = root / "usr/src/linux-headers-6.1.0-56-amd64/Makefile"
    assert changed == [mk]
    assert mk.read_text() == f"include {final}/usr/src/linux-headers-6.1.0-56-common/Makefile\n"
    assert (root / "usr/src/linux-headers-6.1.0-56-common/Makefile").read_text() == "all:\n"


def test_kbuild_output_and_kbuild_paths_are_rewritten_too(tmp_path):
    d = tmp_path / "usr/src/linux-headers-7-amd64"
    d.mkdir(parents=True)
    (d / "Makefile").write_text("KBUILD_OUTPUT=/usr/src/linux-headers-7-amd64\n"
                                "include /usr/src/linux-headers-7-common/Makefile\n"
                                "X=/usr/lib/linux-kbuild-7/scripts\nY=/opt/usr/src/keep\n")
    kernels.rewrite_makefiles([d], Path("/c/root"))
    assert (d / "Makefile").read_text() == ("KBUILD_OUTPUT=/c/root/usr/src/linux-headers-7-amd64\n"
                                            "include /c/root/usr/src/linux-headers-7-common/Makefile\n"
                                            "X=/c/root/usr/lib/linux-kbuild-7/scripts\n"
                                            "Y=/opt/usr/src/keep\n")


def test_absolute_links_into_the_tree_become_relative(tmp_path):
    root = tmp_path / "root"
    headers_tree(root)
    assert kernels.relink_absolute(root) == 1
    build = root / "lib/modules/6.1.0-56-amd64/build"
    assert os.readlink(build) == "../../../usr/src/linux-headers-6.1.0-56-amd64"
    assert build.resolve() == (root / "usr/src/linux-headers-6.1.0-56-amd64").resolve()
    # a link leading out of the tree is left alone; relative ones are untouched
    assert os.readlink(root / "lib/modules/6.1.0-56-amd64/source") == "/nonexistent/elsewhere"
    assert os.readlink(root / "usr/src/linux-headers-6.1.0-56-amd64/scripts") == \
        "../../lib/linux-kbuild-6.1/scripts"


def test_usr_lib_modules_is_unified_and_reachable_from_lib(tmp_path):
    root = tmp_path / "root"
    rel = "7.2.13+deb14-amd64"
    (root / "usr/lib/modules" / rel / "kernel").mkdir(parents=True)
    (root / "usr/lib/modules" / rel / "modules.order").write_text("")
    (root / "lib/modules" / rel).mkdir(parents=True)          # e.g. headers' build link here
    (root / "lib/modules" / rel / "build").symlink_to("/usr/src/linux-headers-" + rel)
    main = kernels.unify_modules_dir(root, rel)
    assert main == root / "usr/lib/modules" / rel
    assert (main / "build").is_symlink() and (main / "modules.order").exists()
    legacy = root / "lib/modules" / rel
    assert legacy.is_symlink() and legacy.resolve() == main.resolve()


def test_a_tree_without_modules_is_an_infra_error(tmp_path):
    with pytest.raises(Exception, match="no lib/modules/6.1"):
        kernels.unify_modules_dir(tmp_path, "6.1")


def test_module_compression(tmp_path):
    k = tmp_path / "kernel"
    (k / "fs").mkdir(parents=True)
    assert kernels.module_compression(tmp_path) == "none"
    (k / "fs/ext4.ko.xz").write_bytes(b"")
    assert kernels.module_compression(tmp_path) == "xz"
    (k / "fs/vfat.ko.zst").write_bytes(b"")
    assert kernels.module_compression(tmp_path) == "mixed(xz,zst)"


# --- local kernels ------------------------------------------------------------------
def fake_bzimage(path: Path, release: str) -> None:
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x200)
    text = f"{release} (someone@host) #1 SMP PREEMPT_DYNAMIC".encode() + b"\0"
    head[0x400:0x400 + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(head))


def local_tree(base: Path, release="6.9.0-lab", *, depmod=True, announced=None) -> dict:
    fake_bzimage(base / "out/bzImage", announced or release)
    mods = base / "staging/lib/modules" / release
    (mods / "kernel/fs").mkdir(parents=True)
    (mods / "kernel/fs/x.ko.zst").write_bytes(b"")
    if depmod:
        (mods / "modules.dep").write_text("")
    build = base / "build"
    (build / "include/config").mkdir(parents=True)
    (build / "Makefile").write_text("all:\n")
    (build / "include/config/kernel.release").write_text(release + "\n")
    (build / ".config").write_text('CONFIG_CC_VERSION_TEXT="gcc (GCC) 13.2.1 20230801"\n')
    return {"vmlinuz": base / "out/bzImage", "mods": mods, "build": build}


def local_def(base: Path, **kw) -> KernelDef:
    values = dict(name="mine", kind="local", source=base / "mine.yaml", flavour="",
                  vmlinuz=base / "out/bzImage", modules=base / "staging", build=base / "build",
                  lines=(("vmlinuz", 2), ("modules", 3), ("build", 4), ("release", 5)))
    values.update(kw)
    return KernelDef(**values)


@pytest.mark.parametrize("modules", ["staging", "staging/lib/modules", "staging/lib/modules/6.9.0-lab"])
def test_local_release_is_derived_from_the_modules_dir(tmp_path, modules):
    t = local_tree(tmp_path)
    k = kernels.local_kernel(local_def(tmp_path, modules=tmp_path / modules))
    assert (k.release, k.version, k.modules_dir) == ("6.9.0-lab", "local", t["mods"])
    assert k.build_dir == t["build"] and k.vmlinuz == t["vmlinuz"]
    assert k.compiler == "gcc-13" and k.module_compression == "zst" and k.packages == ()
    assert k.config == t["build"] / ".config"
    assert kernels.resolve(local_def(tmp_path), Settings(cache_dir=tmp_path / "c")) == \
        ("6.9.0-lab", "local")


def test_local_kernel_is_fetch_and_cached_without_a_cache(tmp_path):
    local_tree(tmp_path)
    s = Settings(cache_dir=tmp_path / "cache")
    assert kernels.fetch(local_def(tmp_path), s) == kernels.cached(local_def(tmp_path), s)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("field", ["vmlinuz", "modules", "build"])
def test_local_missing_path_names_field_and_path(tmp_path, field):
    local_tree(tmp_path)
    d = local_def(tmp_path, **{field: tmp_path / "missing"})
    with pytest.raises(ConfigError) as err:
        kernels.local_kernel(d)
    assert err.value.field == field and str(tmp_path / "missing") in str(err.value)
    assert err.value.source == str(tmp_path / "mine.yaml") and err.value.line is not None
    assert kernels.cached(d, Settings(cache_dir=tmp_path / "c")) is None


def test_local_release_mismatch_with_the_bzimage(tmp_path):
    local_tree(tmp_path, announced="6.9.0-other")
    with pytest.raises(ConfigError, match="is release 6.9.0-other") as err:
        kernels.local_kernel(local_def(tmp_path))
    assert err.value.field == "vmlinuz"


def test_local_explicit_release_picks_among_several(tmp_path):
    local_tree(tmp_path)
    (tmp_path / "staging/lib/modules/6.8.0-old/kernel").mkdir(parents=True)
    with pytest.raises(ConfigError, match="more than one"):
        kernels.local_kernel(local_def(tmp_path))
    assert kernels.local_kernel(local_def(tmp_path, release="6.9.0-lab")).release == "6.9.0-lab"
    with pytest.raises(ConfigError) as err:
        kernels.local_kernel(local_def(tmp_path, release="6.7"))
    assert err.value.field == "modules"


def test_local_modules_need_depmod(tmp_path):
    local_tree(tmp_path, depmod=False)
    with pytest.raises(ConfigError, match="depmod"):
        kernels.local_kernel(local_def(tmp_path))


def test_local_build_dir_needs_a_makefile(tmp_path):
    local_tree(tmp_path)
    (tmp_path / "build/Makefile").unlink()
    with pytest.raises(ConfigError, match="not a kernel build directory") as err:
        kernels.local_kernel(local_def(tmp_path))
    assert err.value.field == "build"


# --- the cache ----------------------------------------------------------------------
def fake_cached(settings: Settings, d: KernelDef, version: str, release: str, **manifest) -> Path:
    vdir = settings.kernels_dir / d.name / version
    root = vdir / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"k")
    (root / "lib/modules" / release).mkdir(parents=True)
    (root / "lib/modules" / release / "modules.dep").write_text("")
    (root / "usr/src" / f"linux-headers-{release}").mkdir(parents=True)
    m = {"format": kernels.MANIFEST_FORMAT, "name": d.name, "kind": "debian", "series": d.series,
         "flavour": d.flavour, "version": version, "release": release, "compiler": "gcc-12",
         "module_compression": "none", "location": str(vdir.absolute()),
         "paths": {"vmlinuz": f"root/boot/vmlinuz-{release}",
                   "modules_dir": f"root/lib/modules/{release}",
                   "build_dir": f"root/usr/src/linux-headers-{release}", "config": None},
         "packages": [{"name": "linux-image-x", "version": version, "sha256": "ab", "size": 1}]}
    m.update(manifest)
    (vdir / "manifest.json").write_text(json.dumps(m))
    return vdir


@pytest.fixture
def offline(monkeypatch):
    """Any apt or host command fails the test: the cache must answer alone."""
    def boom(*a, **kw):
        raise AssertionError("network or host command used")
    monkeypatch.setattr(hostcmd, "run", boom)
    monkeypatch.setattr(apt, "update", boom)
    monkeypatch.setattr(apt, "packages", boom)


def test_cached_returns_the_newest_complete_kernel(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    fake_cached(s, d, "6.1.176-1", "6.1.0-50-amd64")
    fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64")
    incomplete = s.kernels_dir / d.name / "6.1.999-1"
    (incomplete / "root").mkdir(parents=True)           # no manifest: an interrupted unpack
    (s.kernels_dir / d.name / ".extract-6.1.999-1-x").mkdir()
    k = kernels.cached(d, s)
    assert (k.version, k.release, k.compiler) == ("6.1.192-2", "6.1.0-56-amd64", "gcc-12")
    assert k.modules_dir == s.kernels_dir / d.name / "6.1.192-2/root/lib/modules/6.1.0-56-amd64"
    assert k.packages == (kernels.PackageRef("linux-image-x", "6.1.192-2", "ab"),)
    assert json.loads(json.dumps(k.describe()))["release"] == "6.1.0-56-amd64"
    assert kernels.fetch(d, s) == k


def test_cached_honours_the_pin(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    fake_cached(s, d, "6.1.176-1", "6.1.0-50-amd64")
    fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64")
    assert kernels.cached(defn(tmp_path, pin="6.1.176-1"), s).release == "6.1.0-50-amd64"
    assert kernels.cached(defn(tmp_path, pin="6.1.1-1"), s) is None


def test_cached_ignores_other_series_and_moved_trees(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    fake_cached(s, d, "6.12.1-1", "6.12.1-amd64", series="6.12")
    fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64", location="/somewhere/else")
    assert kernels.cached(d, s) is None


def test_cached_ignores_a_tree_with_missing_files(tmp_path, offline):
    s = Settings(cache_dir=tmp_path)
    d = defn(tmp_path)
    vdir = fake_cached(s, d, "6.1.192-2", "6.1.0-56-amd64")
    (vdir / "root/lib/modules/6.1.0-56-amd64/modules.dep").unlink()
    assert kernels.cached(d, s) is None


# --- an end-to-end fetch from local .debs (dpkg-deb, dpkg -x, depmod; no network) --------
def build_deb(workdir: Path, package: str, version: str, files: dict, links: dict = {}) -> Path:
    tree = workdir / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
        f"Maintainer: lab <lab@localhost>\nDescription: test package\n")
    for rel, data in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    for rel, target in links.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)
    out = workdir / apt.deb_name(package, version)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", tree, out], check=True,
                   capture_output=True)
    return out


def fake_archive(workdir: Path, downloads: Path, split: bool) -> list:
    """A tiny kernel in 6.1 packaging (split=False) or 7.x packaging (split=True)."""
    abi, v, release = "9.9.0-1", "9.9.1-1", "9.9.0-1-amd64"
    bz = workdir / "bz"
    fake_bzimage(bz, release)
    config = 'CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"\n'
    mods = "usr/lib/modules" if split else "lib/modules"
    debs = []
    if split:
        debs.append((f"linux-binary-unsigned-{release}", {
            f"{mods}/{release}/vmlinuz.unsigned": bz.read_bytes()}, {}, f"linux-base-{release} (= {v})"))
        debs.append((f"linux-modules-{release}", {f"{mods}/{release}/kernel/README": "x"}, {}, ""))
        debs.append((f"linux-base-{release}", {f"{mods}/{release}/config": config,
                                               f"{mods}/{release}/modules.order": ""}, {}, ""))
    else:
        debs.append((f"linux-image-{release}-unsigned", {
            f"boot/vmlinuz-{release}": bz.read_bytes(), f"boot/config-{release}": config,
            f"{mods}/{release}/kernel/README": "x", f"{mods}/{release}/modules.order": ""}, {}, ""))
    debs.append((f"linux-headers-{release}", {
        f"usr/src/linux-headers-{release}/Makefile": f"include /usr/src/linux-headers-{abi}-common/Makefile\n"},
        {f"lib/modules/{release}/build": f"/usr/src/linux-headers-{release}",
         f"usr/src/linux-headers-{release}/scripts": "../../lib/linux-kbuild-9.9/scripts"},
        f"linux-headers-{abi}-common (= {v}), linux-kbuild-9.9 (>= {v}), linux-compiler-gcc-12-x86"))
    debs.append((f"linux-headers-{abi}-common", {
        f"usr/src/linux-headers-{abi}-common/Makefile": "modules:\n\t@echo built\n"}, {}, ""))
    debs.append(("linux-kbuild-9.9", {"usr/lib/linux-kbuild-9.9/scripts/.keep": ""}, {}, ""))
    records = []
    downloads.mkdir(parents=True, exist_ok=True)
    for package, files, links, depends in debs:
        path = build_deb(workdir, package, v, files, links)
        shutil.copy(path, downloads / path.name)
        records.append(PackageRecord(package, v, "linux", depends, f"pool/{path.name}",
                                     hashlib.sha256(path.read_bytes()).hexdigest(),
                                     path.stat().st_size))
    return records


@pytest.mark.skipif(not (shutil.which("dpkg-deb") and shutil.which("depmod")),
                    reason="needs dpkg-deb and depmod")
@pytest.mark.parametrize("split", [False, True], ids=["image-unsigned", "split-7x"])
def test_fetch_unpacks_fixes_up_and_then_serves_from_the_cache(tmp_path, monkeypatch, split):
    s = Settings(cache_dir=tmp_path / "cache", debian_mirror="http://mirror.example/debian")
    records = fake_archive(tmp_path / "work", s.downloads_dir, split)
    d = defn(tmp_path, name="fake", series="9.9")
    updates = []
    monkeypatch.setattr(apt, "update", lambda root, force=False: updates.append(force))
    monkeypatch.setattr(apt, "packages", lambda root, want=None: records)
    real_run = hostcmd.run

    def no_apt(cmd, **kw):
        assert not str(cmd[0]).startswith("apt"), "the .debs were already downloaded"
        return real_run(cmd, **kw)
    monkeypatch.setattr(hostcmd, "run", no_apt)

    assert kernels.resolve(d, s) == ("9.9.0-1-amd64", "9.9.1-1")
    k = kernels.fetch(d, s)
    vdir = s.kernels_dir / "fake" / "9.9.1-1"
    assert (k.release, k.version, k.compiler) == ("9.9.0-1-amd64", "9.9.1-1", "gcc-12")
    assert k.vmlinuz == vdir / "root/boot/vmlinuz-9.9.0-1-amd64"     # 7.x's moved out of modules/
    assert kernels.bzimage_release(k.vmlinuz) == k.release
    assert (k.modules_dir / "modules.dep").is_file()
    assert (k.modules_dir / "kernel/README").is_file()
    assert k.modules_dir == vdir / "root" / ("usr/lib/modules" if split else "lib/modules") / k.release
    assert (vdir / "root/lib/modules" / k.release / "build").resolve() == k.build_dir.resolve()
    assert k.build_dir == vdir / "root/usr/src/linux-headers-9.9.0-1-amd64"
    assert (k.build_dir / "Makefile").read_text() == \
        f"include {vdir}/root/usr/src/linux-headers-9.9.0-1-common/Makefile\n"
    out = subprocess.run(["make", "-s", "-C", k.build_dir, "modules"], capture_output=True, text=True)
    assert out.stdout.strip() == "built", out.stderr
    assert k.config is not None and k.config.is_file()
    assert len(k.packages) == (6 if split else 4)
    assert {p.name: p.sha256 for p in k.packages} == {r.package: r.sha256 for r in records}
    assert oct(vdir.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in (s.kernels_dir / "fake").iterdir()] == ["9.9.1-1"]

    # again: straight from the cache, no apt, no host command at all
    def boom(*a, **kw):
        raise AssertionError("used the network or a host command")
    monkeypatch.setattr(hostcmd, "run", boom)
    monkeypatch.setattr(apt, "packages", boom)
    assert kernels.fetch(d, s) == k
    assert updates == [False, False]

    # refresh re-resolves (forced update) and finds nothing newer
    monkeypatch.setattr(apt, "packages", lambda root, want=None: records)
    assert kernels.fetch(d, s, refresh=True) == k
    assert updates[-1] is True


def test_fetch_of_a_pin_missing_from_the_archive_names_it(tmp_path, monkeypatch):
    s = Settings(cache_dir=tmp_path, debian_mirror="http://mirror.example/debian")
    monkeypatch.setattr(apt, "update", lambda root, force=False: False)
    monkeypatch.setattr(apt, "packages", lambda root, want=None: bookworm_archive())
    with pytest.raises(ConfigError, match=r"pin 6.1.5-1 is not in bookworm, bookworm-security"):
        kernels.fetch(defn(tmp_path, pin="6.1.5-1"), s)
