"""An unpacked kernel tree: the fix-ups (links, Makefiles, modules dir) and what it tells (compiler, compression)."""
import os
from pathlib import Path

import pytest

from livepatch_lab.supply.kernels import tree as kerneltree


@pytest.mark.parametrize("text,want", [
    ('CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"', "gcc-12"),
    ('CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0"', "gcc-14"),
    ('CONFIG_CC_VERSION_TEXT="Debian clang version 19.1.7 (3)"', "clang-19"),
    ("CONFIG_LIVEPATCH=y", None),
])
def test_compiler_from_config(tmp_path, text, want):
    p = tmp_path / "config"
    p.write_text(f"CONFIG_X=y\n{text}\n")
    assert kerneltree.compiler_from_config(p) == want


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
    changed = kerneltree.rewrite_makefiles(sorted((root / "usr/src").glob("linux-headers-*")), final)
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
    kerneltree.rewrite_makefiles([d], Path("/c/root"))
    assert (d / "Makefile").read_text() == ("KBUILD_OUTPUT=/c/root/usr/src/linux-headers-7-amd64\n"
                                            "include /c/root/usr/src/linux-headers-7-common/Makefile\n"
                                            "X=/c/root/usr/lib/linux-kbuild-7/scripts\n"
                                            "Y=/opt/usr/src/keep\n")


def test_absolute_links_into_the_tree_become_relative(tmp_path):
    root = tmp_path / "root"
    headers_tree(root)
    assert kerneltree.relink_absolute(root) == 1
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
    main = kerneltree.unify_modules_dir(root, rel)
    assert main == root / "usr/lib/modules" / rel
    assert (main / "build").is_symlink() and (main / "modules.order").exists()
    legacy = root / "lib/modules" / rel
    assert legacy.is_symlink() and legacy.resolve() == main.resolve()


def test_a_tree_without_modules_is_an_infra_error(tmp_path):
    with pytest.raises(Exception, match="no lib/modules/6.1"):
        kerneltree.unify_modules_dir(tmp_path, "6.1")


def test_module_compression(tmp_path):
    k = tmp_path / "kernel"
    (k / "fs").mkdir(parents=True)
    assert kerneltree.module_compression(tmp_path) == "none"
    (k / "fs/ext4.ko.xz").write_bytes(b"")
    assert kerneltree.module_compression(tmp_path) == "xz"
    (k / "fs/vfat.ko.zst").write_bytes(b"")
    assert kerneltree.module_compression(tmp_path) == "mixed(xz,zst)"
