"""Guest images: recipe -> cached base image (content-hashed) -> per-run overlay.

``build()`` turns a ``Recipe`` into a raw ext4 filesystem (no partition table;
the guest mounts it as ``/dev/vda`` through a qcow2 overlay): the recipe's
packages and .deb files installed with mmdebstrap (a package of another suite
is fetched first through the lab's private apt root, verified like a kernel's),
its files copied in, then made a lab guest (``guestfs``).

Images live in ``<cache>/images/<name>-<digest[:12]>/`` (0700; ``base.img`` 0444,
``client_key`` 0600, ``host_key.pub``, ``manifest.json`` written last). The digest
covers the recipe's content, the guest files and the layout version, so any
change builds a new image and an old one is never modified. The manifest
records the base image's size, mtime and sha256: an image whose size or mtime
changed is hashed again, and one that is no longer what was built (truncated,
written to) is built anew, with a warning naming it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..core import atomic, cacheentry, hostcmd, progress
from ..core.errors import ConfigError, HostCommandError, InfraError
from ..core.settings import Settings
from . import apt, debversion, mmdebstrap
from .apt import sha256_file
from .guestfs import check_busybox, copy_in, customise, tree_usage
from .mirror import debian_mirrors
from .mke2fs import mke2fs
from .recipes import FORMAT, Recipe

log = logging.getLogger(__name__)
# An image's directory is its owner's alone: base.img (0444 within it) holds the guest's SSH host
# key, and client_key logs into the guest as root.
PRIVATE = 0o700
# mmdebstrap's own hook that makes a --include'd .deb file visible inside the tree being made
FILE_DEBS_HOOK = "/usr/share/mmdebstrap/hooks/file-mirror-automount"


# images ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    name: str
    path: Path          # raw ext4 base image, 0444, never modified
    client_key: Path    # private key for root (paramiko-loadable, PEM)
    host_key: str       # the guest's host key: "ecdsa-sha2-nistp256 AAAA... lab"
    digest: str
    user: str = "root"


def image_dir(recipe: Recipe, settings: Settings) -> Path:
    return settings.images_dir / f"{recipe.name}-{recipe.digest()[:12]}"


def cached(recipe: Recipe, settings: Settings) -> Optional[Image]:
    """The built image for ``recipe``, or None."""
    return _load(image_dir(recipe, settings), recipe.digest())


def _load(directory: Path, digest: str) -> Optional[Image]:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("digest") != digest:
        return None
    base, key, pub = directory / "base.img", directory / "client_key", directory / "host_key.pub"
    if not (base.is_file() and key.is_file() and pub.is_file()):
        return None
    _private(directory)
    if not _intact(base, manifest, directory / "manifest.json"):
        return None
    return Image(manifest["name"], base, key, pub.read_text().strip(), digest)


def _private(directory: Path) -> None:
    """An image built before the lab made them private: made so now (best effort: a read-only
    cache keeps its modes, with a warning)."""
    if directory.stat().st_mode & 0o077:
        try:
            directory.chmod(PRIVATE)
        except OSError as exc:
            log.warning("image %s is readable by other users (its disk holds the guest's SSH host key): "
                        "%s", directory, exc)


def _fingerprint(base: Path) -> dict:
    st = base.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(base)}


def _intact(base: Path, manifest: dict, manifest_path: Path) -> bool:
    """Whether ``base`` is still the image that was built: the same size and mtime as recorded
    (cheap), else the same sha256 (then the new stat is recorded). An image built before the
    lab recorded this gets its fingerprint now."""
    want = manifest.get("base")
    st = base.stat()
    if want and (st.st_size, st.st_mtime_ns) == (want.get("size"), want.get("mtime_ns")):
        return True
    have = _fingerprint(base)
    if want and have["sha256"] != want.get("sha256"):
        log.warning("image %s is corrupt: %d bytes, sha256 %s, but it was built as %d bytes, "
                    "sha256 %s: building it again", base, have["size"], have["sha256"][:16],
                    want.get("size", 0), str(want.get("sha256"))[:16])
        return False
    if not want:
        log.info("image %s: recording its size and sha256 (built before the lab recorded them)", base)
    try:
        atomic.write(manifest_path, json.dumps({**manifest, "base": have}, indent=2) + "\n")
    except OSError as exc:   # a read-only cache: hashed again next time
        log.warning("could not update %s: %s", manifest_path, exc)
    return True


def build(recipe: Recipe, settings: Settings, *, force: bool = False) -> Image:
    """The image for ``recipe``: from the cache, or built (file-locked, atomic)."""
    digest = recipe.digest()
    final = image_dir(recipe, settings)

    def make() -> None:
        if os.geteuid() != 0:
            raise InfraError("building a guest image needs root (mmdebstrap installs packages "
                             "as root in a directory); run `livepatch-lab image build` as root once")
        with cacheentry.staging(settings.images_dir, f".build-{final.name}-", f"building the image {final.name}",
                                remove=lambda p: mmdebstrap.remove_tree(p, settings)) as work:
            started = time.monotonic()
            out = _build(recipe, digest, work, settings)
            elapsed = time.monotonic() - started
            out.chmod(PRIVATE)
            cacheentry.publish(out, final, trash=work / "previous")
        log.info("image %s built in %.0fs: %s", final.name, elapsed, final / "base.img")

    return cacheentry.obtain(lambda: _load(final, digest), make,
                             lock=settings.locks_dir / f"image-{final.name}.lock",
                             timeout=settings.timeouts.lock, what=f"image {final.name}", force=force)


def create_overlay(image: Image, path: Path, settings: Optional[Settings] = None, *,
                   over: Optional[Path] = None) -> Path:
    """A throwaway qcow2 overlay on the base image (which stays untouched), or on ``over``:
    a saved guest's disk, itself a qcow2 overlay on the base image."""
    timeout = (settings or Settings()).timeouts.host_command
    path = Path(path)
    backing, fmt = (over, "qcow2") if over is not None else (image.path, "raw")
    hostcmd.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt,
                 "-b", str(Path(backing).resolve()), str(path)],
                what="create the guest's overlay", timeout=timeout)
    return path


# building -----------------------------------------------------------------------------
def _build(recipe: Recipe, digest: str, work: Path, settings: Settings) -> Path:
    tree, out = work / "rootfs", work / "image"
    out.mkdir()
    mirror = debian_mirrors(settings.debian_mirror).archive
    debs = recipe_debs(recipe, settings)
    log.info("image %s: installing %s %s with %s (mmdebstrap)", recipe.name, recipe.suite,
             recipe.variant, ", ".join([*recipe.packages, *(d.path.name for d in debs)]))
    t0 = time.monotonic()
    # elapsed time only: mmdebstrap's tree is not a count of progress (it is emptied and refilled)
    with progress.ticking(f"image {recipe.name}: mmdebstrap", usually="2-4 min on 2 cores"):
        _mmdebstrap(recipe, tree, mirror, settings, [d.path for d in debs])
    log.info("image %s: packages installed in %.0fs; customising", recipe.name, time.monotonic() - t0)
    for copy in recipe.copies:
        log.info("image %s: %d files from %s to %s", recipe.name, copy_in(tree, copy.source, copy.to),
                 copy.source, copy.to)
    host_pub, client = customise(tree, out)
    check_busybox(tree, settings)

    used = tree_usage(tree)
    size = recipe.size_mib * 2**20
    if used * 1.15 + 64 * 2**20 > size:
        raise ConfigError(f"the root filesystem needs about {int(used * 1.15) // 2**20 + 64} MiB, "
                          f"more than size_mib {recipe.size_mib}",
                          source=str(recipe.source) if recipe.source else None,
                          line=recipe.line_of("size_mib"), field="size_mib")
    log.info("image %s: writing %d MiB ext4 (%d MiB used)", recipe.name, recipe.size_mib,
             used // 2**20)
    base = out / "base.img"
    mke2fs(tree, base, size, "lab-root", settings, uuid=str(uuid.UUID(digest[:32])))
    base.chmod(0o444)
    manifest = {"format": FORMAT, "name": recipe.name, "digest": digest, "recipe": recipe.content(),
                "base": _fingerprint(base),
                "debs": [{"package": d.package, "version": d.version, "sha256": d.sha256} for d in debs],
                "host_key": host_pub, "client_key_public": client,
                "used_bytes": used, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - t0, 1)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.rename(tmp, out / "manifest.json")
    return out


def recipe_debs(recipe: Recipe, settings: Settings) -> list[apt.Deb]:
    """The recipe's .deb files: local ones as they are, a suite's package downloaded (once, into
    the downloads cache) through a private apt root and checked against the archive's hash."""
    out = []
    for src in recipe.debs:
        if src.file is not None:
            out.append(apt.Deb(src.file.name, "local", src.file, src.sha256, src.file.stat().st_size))
            continue
        assert src.package and src.suite
        root = apt.root_for(settings, [src.suite])
        apt.update(root)
        found = [r for r in apt.packages(root, lambda n: n == src.package)
                 if src.version in (None, r.version)]
        if not found:
            raise apt.missing_error(root, src.package, src.version or "any version")
        rec = max(found, key=lambda r: debversion.key(r.version))
        out.append(apt.download(root, rec.package, rec.version, settings.downloads_dir, sha256=rec.sha256 or None))
    return out


def _mmdebstrap(recipe: Recipe, tree: Path, mirror: str, settings: Settings,
                debs: Sequence[Path] = ()) -> None:
    cmd = mmdebstrap.command(recipe.suite, tree, mirror, variant=recipe.variant, packages=recipe.packages,
                             debs=debs, hook_dirs=(FILE_DEBS_HOOK,) if debs else ())
    try:
        hostcmd.run(cmd, what=f"install the {recipe.name} image's packages",
                    timeout=settings.timeouts.image_build,
                    env={**os.environ, "LC_ALL": "C.UTF-8"})
    except HostCommandError as exc:
        m = re.search(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation "
                      r"candidate", exc.output)
        if m:
            raise ConfigError(f"{recipe.suite} has no package {m.group(1) or m.group(2)}",
                              source=str(recipe.source) if recipe.source else None,
                              line=recipe.line_of("packages"), field="packages") from exc
        raise
