"""The cache survey and prune: keep what the lab would use now, remove what it superseded."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from livepatch_lab.cli import main
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import apt, cache, vmlinux
from livepatch_lab.supply.bootfiles import INITRAMFS_INIT, cache_key
from livepatch_lab.supply.images import image_dir
from livepatch_lab.supply.recipes import Recipe
from tests.unit.fakes.kernels import defn, fake_cached

OLD, NEW = ("6.1.176-1", "6.1.0-50-amd64"), ("6.1.192-2", "6.1.0-56-amd64")


def populated(tmp_path: Path) -> tuple[Settings, dict, Recipe]:
    """A cache after a `fetch --refresh` brought 6.1.192-2 beside 6.1.176-1, both used."""
    s = Settings(cache_dir=tmp_path / "cache")
    d = defn(tmp_path)
    for version, release in (OLD, NEW):
        vdir = fake_cached(s, d, version, release)
        modules = vdir / "root/lib/modules" / release
        (s.cache_dir / "bootfiles" / cache_key(release, modules, INITRAMFS_INIT.read_bytes())) \
            .mkdir(parents=True)
        (s.downloads_dir / apt.deb_name("linux-image-x", version)).parent.mkdir(exist_ok=True)
        (s.downloads_dir / apt.deb_name("linux-image-x", version)).write_bytes(b"x" * 5000)
        (s.cache_dir / "modules" / release / "abc").mkdir(parents=True)
        (s.cache_dir / "symbols").mkdir(exist_ok=True)
        (s.cache_dir / "symbols" / f"debian-6.1-{release}-{version}.txt.gz").write_bytes(b"s")
        (s.kernel_sources_dir / "debian-6.1" / version / "tree").mkdir(parents=True)
    (s.cache_dir / "vmlinux").mkdir()
    (s.cache_dir / "vmlinux" / "0123456789abcdef.elf").write_bytes(b"old")
    (s.cache_dir / "vmlinux" / f"{vmlinux.cache_key(b'k')}.elf").write_bytes(b"new")
    recipe = Recipe(name="default", suite="bookworm", variant="minbase", packages=(),
                    size_mib=2048)
    image_dir(recipe, s).mkdir(parents=True)
    (s.images_dir / "default-000000000000").mkdir()       # an older build of the recipe
    (s.images_dir / "mine-111111111111").mkdir()          # someone else's recipe
    (s.cache_dir / "toolchains" / "trixie-gcc-14").mkdir(parents=True)
    return s, {d.name: d}, recipe


def removable(entries):
    return sorted(str(e.path.relative_to(e.path.parents[1])) for e in entries if not e.keep)


def test_a_prune_removes_the_superseded_kernel_and_what_was_derived_from_it(tmp_path):
    s, defs, recipe = populated(tmp_path)
    entries = cache.survey(s, defs, [recipe])
    assert removable(entries) == sorted([
        f"debian-6.1/{OLD[0]}",
        f"debian-6.1/{OLD[0]}",     # its selftests and samples (sources/)
        f"bootfiles/{[p.name for p in (s.cache_dir / 'bootfiles').iterdir() if p.name.startswith(OLD[1])][0]}",
        f"downloads/{apt.deb_name('linux-image-x', OLD[0])}",
        f"modules/{OLD[1]}",
        f"symbols/debian-6.1-{OLD[1]}-{OLD[0]}.txt.gz",
        "vmlinux/0123456789abcdef.elf",
        "images/default-000000000000",
    ])
    why = {e.path.name: e.why for e in entries if e.store == "kernels"}
    assert why[OLD[0]] == f"debian-6.1 {OLD[0]}: not in use ({NEW[0]} is)"

    count, size = cache.prune(entries, s)
    assert count == 8 and size > 0
    after = cache.survey(s, defs, [recipe])
    assert removable(after) == []
    assert {e.path.name for e in after if e.store == "kernels"} == {NEW[0]}
    assert {e.path.name for e in after if e.store == "sources"} == {NEW[0]}
    assert (s.images_dir / "mine-111111111111").is_dir()
    assert (s.cache_dir / "toolchains" / "trixie-gcc-14").is_dir()
    assert not list((s.kernels_dir / "debian-6.1").glob(".trash-*"))


def test_a_pin_keeps_the_pinned_version_not_the_newest(tmp_path):
    s, defs, recipe = populated(tmp_path)
    pinned = {"debian-6.1": defn(tmp_path, pin=OLD[0])}
    kept = [e.path.name for e in cache.survey(s, pinned, [recipe])
            if e.store == "kernels" and e.keep]
    assert kept == [OLD[0]]


def test_a_kernel_line_without_a_definition_here_keeps_its_newest_version(tmp_path):
    # a cache shared with another checkout whose kernels/ defines this line
    s, _, recipe = populated(tmp_path)
    entries = cache.survey(s, {}, [recipe])
    assert [e.path.name for e in entries if e.store == "kernels" and e.keep] == [NEW[0]]
    assert [e.path.name for e in entries if e.store == "kernels" and not e.keep] == [OLD[0]]


def test_work_in_progress_is_never_listed(tmp_path):
    s, defs, recipe = populated(tmp_path)
    (s.kernels_dir / "debian-6.1" / ".extract-6.1.200-1-xyz").mkdir()
    (s.downloads_dir / ".linux-image.part").write_bytes(b"")
    assert not [e for e in cache.survey(s, defs, [recipe]) if e.path.name.startswith(".")]


def test_sizes_count_blocks_once_per_hard_link(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"x" * 100_000)
    (d / "b").hardlink_to(d / "a")
    assert cache.size_of(d) - cache.size_of(d / "a") < 16_384   # the directory's own blocks


def test_the_cli_lists_then_prunes(tmp_path, capsys, monkeypatch):
    s, defs, recipe = populated(tmp_path)
    monkeypatch.setattr("livepatch_lab.supply.kernels.defs.load_definitions", lambda *a, **k: defs)
    monkeypatch.setattr("livepatch_lab.supply.recipes.load_recipe", lambda p: recipe)
    assert main(["--cache-dir", str(s.cache_dir), "cache"]) == 0
    out = capsys.readouterr().out
    assert f"prunable: {s.kernels_dir / 'debian-6.1' / OLD[0]}" in out
    assert "run `livepatch-lab cache --prune`" in out
    assert (s.kernels_dir / "debian-6.1" / OLD[0]).is_dir()       # listing removes nothing

    assert main(["--cache-dir", str(s.cache_dir), "cache", "--prune", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["prunable"]) == 8
    assert not (s.kernels_dir / "debian-6.1" / OLD[0]).exists()
    assert main(["--cache-dir", str(s.cache_dir), "cache", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["prunable"] == []


def saved_guest(s: Settings, name: str, kernel_version: str, image_build: str, idle_days: float = 0,
                meta: bool = True) -> Path:
    d = s.cache_dir / "snapshots" / name
    d.mkdir(parents=True)
    (d / "state").write_bytes(b"x" * 10_000)
    if meta:
        image, digest = image_build.rsplit("-", 1)
        (d / "meta.json").write_text(json.dumps({"kernel": {"name": "debian-6.1", "version": kernel_version},
                                                 "image": {"name": image, "digest": digest + "0" * 52}}))
        used = time.time() - idle_days * 86400
        os.utime(d / "meta.json", (used, used))
    return d


def test_saved_guests_are_kept_for_the_kernel_and_image_in_use_while_they_are_used(tmp_path):
    s, defs, recipe = populated(tmp_path)
    current = image_dir(recipe, s).name
    saved_guest(s, "now", NEW[0], current, idle_days=1)
    saved_guest(s, "old-kernel", OLD[0], current)
    saved_guest(s, "old-image", NEW[0], "default-000000000000")
    saved_guest(s, "their-image", NEW[0], "mine-111111111111")
    saved_guest(s, "idle", NEW[0], current, idle_days=cache.SNAPSHOT_IDLE_DAYS + 1)
    saved_guest(s, "half", NEW[0], current, meta=False)
    dead = saved_guest(s, ".new-now-1234", NEW[0], current, meta=False)   # a save that died
    os.utime(dead, (time.time() - 7200,) * 2)
    saved_guest(s, ".new-now-5678", NEW[0], current, meta=False)          # a save going on
    why = {e.path.name: (e.keep, e.why) for e in cache.survey(s, defs, [recipe]) if e.store == "snapshots"}
    assert {n for n, (keep, _) in why.items() if keep} == {"now", "their-image"}
    assert why["old-kernel"][1].endswith(f"not of the kernel in use ({NEW[0]} is)")
    assert why["old-image"][1].endswith("of an older build of its image")
    assert "not restored for 15 days" in why["idle"][1]
    assert why["half"][1].startswith("incomplete")
    assert why[".new-now-1234"] == (False, "left by a save or a removal that died")
    count, _ = cache.prune([e for e in cache.survey(s, defs, [recipe]) if e.store == "snapshots"], s)
    assert count == 5
    assert sorted(p.name for p in (s.cache_dir / "snapshots").iterdir()) == [".new-now-5678", "now", "their-image"]
