"""Fetch debian-6.1 from the real archive into a fresh cache and build a module against it."""
import hashlib
import re
import shutil
import subprocess
import textwrap

import pytest

from livepatch_lab.core import hostcmd
from livepatch_lab.core.errors import ConfigError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt
from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch, tree as kerneltree

pytestmark = pytest.mark.network

HELLO_C = textwrap.dedent("""\
    #include <linux/init.h>
    #include <linux/module.h>

    static int __init hello_init(void) { pr_info("hello from livepatch-lab\\n"); return 0; }
    static void __exit hello_exit(void) { }
    module_init(hello_init);
    module_exit(hello_exit);
    MODULE_LICENSE("GPL");
    """)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.from_env(cache_dir=tmp_path_factory.mktemp("lab-cache"))


@pytest.fixture(scope="module")
def kernel(settings):
    return kernelfetch.fetch(kerneldefs.get_definition("debian-6.1"), settings)


def test_the_fetched_kernel_is_complete(kernel, settings):
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", kernel.release)
    assert kernel.version.startswith("6.1.")
    assert kernel.compiler == "gcc-12"
    assert kerneltree.bzimage_release(kernel.vmlinuz) == kernel.release
    assert (kernel.modules_dir / "modules.dep").stat().st_size > 0
    assert kernel.modules_dir.name == kernel.release
    assert (kernel.build_dir / "Module.symvers").is_file()
    assert kernel.config is not None and "CONFIG_LIVEPATCH=y" in kernel.config.read_text()
    names = {p.name for p in kernel.packages}
    abi = kernel.release[: -len("-amd64")]
    assert names == {f"linux-image-{kernel.release}-unsigned", f"linux-headers-{kernel.release}",
                     f"linux-headers-{abi}-common", "linux-kbuild-6.1"}
    for p in kernel.packages:      # the recorded hashes are those of the kept .debs
        deb = settings.downloads_dir / apt.deb_name(p.name, p.version)
        assert hashlib.sha256(deb.read_bytes()).hexdigest() == p.sha256


@pytest.mark.skipif(shutil.which("gcc-12") is None, reason="needs the host's gcc-12")
def test_an_out_of_tree_module_builds_against_the_headers(kernel, tmp_path):
    (tmp_path / "hello.c").write_text(HELLO_C)
    (tmp_path / "Kbuild").write_text("obj-m := hello.o\n")
    out = subprocess.run(["make", "-C", kernel.build_dir, f"M={tmp_path}", "CC=gcc-12", "modules"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", tmp_path / "hello.ko"],
                              capture_output=True, text=True, check=True).stdout
    assert vermagic.startswith(kernel.release + " "), vermagic


def test_a_second_fetch_uses_no_network_and_no_host_command(kernel, settings, monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("a cached fetch ran a host command")
    monkeypatch.setattr(hostcmd, "run", refuse)
    assert kernelfetch.fetch(kerneldefs.get_definition("debian-6.1"), settings) == kernel
    pinned = kerneldefs.get_definition(f"debian-6.1@{kernel.version}")
    assert kernelfetch.fetch(pinned, settings) == kernel


def test_resolve_agrees_with_the_fetch(kernel, settings):
    assert kernelfetch.resolve(kerneldefs.get_definition("debian-6.1"), settings) == \
        (kernel.release, kernel.version)


def test_a_pin_the_archive_lacks_lists_the_versions_it_has(kernel, settings):
    with pytest.raises(ConfigError) as err:
        kernelfetch.fetch(kerneldefs.get_definition("debian-6.1@6.1.0-0"), settings)
    assert "pin 6.1.0-0" in str(err.value) and kernel.version in str(err.value)
    assert err.value.source == "debian-6.1@6.1.0-0"
