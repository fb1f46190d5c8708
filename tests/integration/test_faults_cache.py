"""The cache under faults, on real filesystems (issue 13).

- The disk fills while fetching a kernel (downloading, then unpacking), building the image and
  building a module (a small tmpfs as the cache): one ``DiskFull`` naming the directory that ran
  out; nothing half-written is ever taken for an entry; the next run, with room, succeeds.
- A cached module changed after its build is built again.
- Two lab processes (not xdist workers) started together on one cold cache: both boot, and each
  download and build happens once.

The kernel and image tests download from Debian's archive and build for minutes: marked
``long`` (not in .ci/run).
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from livepatch_lab.core.errors import DiskFull
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt, images, kbuild, modinfo, recipes
from livepatch_lab.supply.kernels import cache as kernelcache, defs as kerneldefs, fetch as kernelfetch

pytestmark = pytest.mark.network
REPO = Path(__file__).resolve().parents[2]


def only_whole_debs(downloads: Path, sel) -> None:
    """Every .deb there is a complete package (the archive's hash); nothing else is there."""
    want = {apt.deb_name(r.package, r.version): r.sha256 for r in sel.packages}
    for p in downloads.iterdir():
        assert p.name in want, f"left in the downloads: {p.name}"
        assert hashlib.sha256(p.read_bytes()).hexdigest() == want[p.name], f"{p.name} is not whole"


@pytest.mark.long
def test_a_disk_that_fills_while_fetching_a_kernel_is_named_and_the_next_fetch_with_room_succeeds(
        small_disk, lab_settings, caplog):
    cache = small_disk("28m", "cache")     # the apt lists (~19 MiB) and a little more
    settings = Settings.from_env(cache_dir=cache, runs_root=lab_settings.runs_dir)
    defn = kerneldefs.get_definition("debian-6.1")
    # the lists from the lab's cache, as fresh as the archive's: no download for them
    warm_root = apt.root_for(lab_settings, defn.suites)
    kernelfetch.resolve(defn, lab_settings)
    root = apt.root_for(settings, defn.suites)
    shutil.copytree(warm_root.path, root.path)
    sel = kernelfetch._select_from_archive(defn, settings, refresh=False)

    with pytest.raises(DiskFull) as err:            # downloading
        kernelfetch.fetch(defn, settings)
    print(err.value)
    assert str(err.value).startswith(f"no space left on device in {settings.downloads_dir} while downloading ")
    only_whole_debs(settings.downloads_dir, sel)
    assert kernelcache.cached(defn, settings) is None

    debs = sum(r.size for r in sel.packages)
    small_disk.grow(cache, f"{(19 << 20) + debs + (24 << 20)}")   # the packages fit, unpacked they do not
    for r in sel.packages:    # the rest from the lab's cache (checked by hash on use): no download
        name = apt.deb_name(r.package, r.version)
        if (lab_settings.downloads_dir / name).is_file() and not (settings.downloads_dir / name).exists():
            shutil.copyfile(lab_settings.downloads_dir / name, settings.downloads_dir / name)
    with pytest.raises(DiskFull) as err:            # unpacking
        kernelfetch.fetch(defn, settings)
    print(err.value)
    assert str(err.value).startswith(
        f"no space left on device in {settings.kernels_dir / 'debian-6.1'} while unpacking debian-6.1 {sel.version}")
    assert kernelcache.cached(defn, settings) is None
    assert os.listdir(settings.kernels_dir / "debian-6.1") == []     # no half-unpacked tree
    only_whole_debs(settings.downloads_dir, sel)

    small_disk.grow(cache, "1g")
    kernel = kernelfetch.fetch(defn, settings)
    assert kernel.version == sel.version and kernelcache.cached(defn, settings) == kernel
    assert (kernel.modules_dir / "modules.dep").is_file()


@pytest.mark.long
@pytest.mark.skipif(os.geteuid() != 0, reason="building an image needs root")
def test_a_disk_that_fills_while_building_the_image_is_named_and_the_next_build_with_room_succeeds(
        small_disk, tmp_path, caplog):
    small = small_disk("64m", "images")
    settings = Settings.from_env(cache_dir=small.parent)     # its images/ is the small disk
    recipe = recipes.load_recipe(recipes.DEFAULT_RECIPE)
    with pytest.raises(DiskFull) as err:
        images.build(recipe, settings)
    print(err.value)
    assert str(err.value).startswith(f"no space left on device in {settings.images_dir} while building "
                                     f"the image {images.image_dir(recipe, settings).name}; ")
    assert images.cached(recipe, settings) is None and os.listdir(small) == []

    small_disk.grow(small, "1g")
    image = images.build(recipe, settings)
    assert images.cached(recipe, settings) == image
    os.truncate(image.path, image.path.stat().st_size // 2)     # then the disk cuts it short
    assert images.cached(recipe, settings) is None
    assert f"image {image.path} is corrupt" in caplog.text


@pytest.fixture
def module_settings(tmp_path, lab_settings, lab_kernel):
    """A cache of its own for built modules, against the lab cache's debian-6.1."""
    return Settings.from_env(cache_dir=tmp_path / "cache"), lab_kernel("debian-6.1")


def test_a_disk_that_fills_while_building_a_module_is_the_hosts_fault_and_the_next_build_succeeds(
        module_settings, small_disk):
    _, kernel = module_settings
    small = small_disk("256k", "modules")
    settings = Settings.from_env(cache_dir=small.parent)     # its modules/ is the small disk
    good = REPO / "scenarios/patches/good"
    with pytest.raises(DiskFull) as err:     # not a BuildError: the patch compiles
        kbuild.build(good, kernel, settings)
    print(err.value)
    assert str(err.value).startswith(f"no space left on device in {small / kernel.release} while building good "
                                     f"for debian-6.1; ")
    assert os.listdir(small / kernel.release) == []
    small_disk.grow(small, "64m")
    module = kbuild.build(good, kernel, settings)
    assert module.name == "lab_good" and module.kernel_release == kernel.release


def test_a_cached_module_changed_after_its_build_is_built_again(module_settings, caplog):
    settings, kernel = module_settings
    good = REPO / "scenarios/patches/good"
    module = kbuild.build(good, kernel, settings)
    built = module.path.read_bytes()
    module.path.write_bytes(built[: len(built) // 2])    # a truncated copy, an edit, a bad disk
    again = kbuild.build(good, kernel, settings)
    assert again.path == module.path and len(again.path.read_bytes()) == len(built)
    assert kbuild.build_info(again)["sha256"] == hashlib.sha256(again.path.read_bytes()).hexdigest()
    assert modinfo.inspect(again.path, settings).name == "lab_good"
    assert caplog.text.count(f"cached module {module.path} changed after its build") == 1


@pytest.mark.long
@pytest.mark.vm
def test_two_lab_processes_on_one_cold_cache_both_boot_and_each_download_and_build_happens_once(
        tmp_path, lab_settings, no_leftovers):
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(tmp_path / "cache"),
               LIVEPATCH_LAB_RUNS=str(lab_settings.runs_dir))
    cmd = [sys.executable, "-m", "livepatch_lab.cli", "-v", "boot", "debian-6.1", "--", "uname", "-r"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=1800)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    log = "\n".join(outs)
    fetched = [line.split("fetching ", 1)[1].split(" (")[0] for line in log.splitlines()
               if "] fetching linux-" in line]
    assert fetched and len(fetched) == len(set(fetched)), fetched                 # each package once
    for once in ("fetching apt lists for", "preparing boot files for"):
        assert sum(once in line for line in log.splitlines()) == 1, once
    assert sum("probing KVM" in line for line in log.splitlines()) <= 1     # none with --accel tcg
    assert sum("] image default-" in line and " built in " in line for line in log.splitlines()) == 1
    assert log.count("waiting for another process") >= 1     # the second one waited, did not redo
    release = outs[0].splitlines()
    assert any(line.strip().endswith("-amd64") for line in release)
