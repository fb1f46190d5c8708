"""The commands that each do one thing: list and fetch kernels, survey and prune the cache, build
the image, boot a guest for one command, verify a sign-off report, check the host. The commands
that run and judge patches are ``runs``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO, cast

from ..core.errors import BootError, ConfigError, HarnessError
from .settings import settings_for, writable_dir

log = logging.getLogger("livepatch_lab")
EXIT_LAB = 125   # boot: the lab could not boot the guest or run the command


def cmd_kernels(args: argparse.Namespace) -> int:
    from ..supply.kernels import cache as kernelcache, defs as kerneldefs, fetch as kernelfetch
    settings = settings_for(args)
    json_file(args)
    defs = kerneldefs.load_definitions()
    rows = []
    for name, d in sorted(defs.items()):
        cached = kernelcache.cached(d, settings)
        have = f"{cached.version} ({cached.release})" if cached else "-"
        latest = "-"
        if d.kind == "debian" and not args.offline:
            try:
                release, version = kernelfetch.resolve(d, settings, refresh=args.refresh)
                latest = f"{version} ({release})"
            except HarnessError as exc:
                latest = f"unresolved: {str(exc).splitlines()[0]}"
        where = ",".join(d.suites) if d.kind == "debian" else str(d.vmlinuz)
        rows.append((name, d.kind, where + (f" pin={d.pin}" if d.pin else ""), latest, have))
    _table(("KERNEL", "KIND", "SOURCE", "ARCHIVE VERSION", "CACHED"), rows, file=human(args))
    if args.json:
        write_json(args.json, [dict(zip(("name", "kind", "source", "archive", "cached"), r)) for r in rows])
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
    settings = settings_for(args)
    for spec in args.kernel:
        k = kernelfetch.fetch(kerneldefs.get_definition(spec), settings, refresh=args.refresh)
        print(f"{k.name}\t{k.version}\t{k.release}\t{k.vmlinuz}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build a kbuild directory against each kernel's own headers and compiler, as ``check`` does,
    and leave the .ko in ``--out`` (``OUT/KERNEL/`` for more than one kernel)."""
    from ..lab.matrix import DEFAULT_KERNEL
    from ..supply import kbuild
    from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
    from ..supply.srcbuild import diff as srcdiff, kpatch as srckpatch
    settings = settings_for(args)
    given = Path(args.source)
    fix = srcdiff.load(given, field="SOURCE") if given.is_file() and srcdiff.looks_like_diff(given) else None
    source = None if fix else kbuild.check_source(given, "SOURCE")
    if args.build_target and not fix:
        raise ConfigError("--build-target goes with a source diff", field="--build-target")
    kernels = [kerneldefs.get_definition(spec) for spec in args.kernel or [DEFAULT_KERNEL]]   # refused first
    out = Path(args.out)
    writable_dir(out, "--out", keep=False)   # checked now, made once a module is there to copy
    for defn in kernels:
        k = kernelfetch.fetch(defn, settings)
        dest = out / k.name if len(kernels) > 1 else out
        if fix is None:
            module = kbuild.build(cast(Path, source), k, settings, out_dir=dest)
        else:
            try:
                built = srckpatch.build(fix, k, settings, targets=args.build_target)
            except (srckpatch.BuildRefused, srckpatch.DiffDoesNotApply) as exc:
                print(f"{k.name}: {exc}", file=sys.stderr)
                return 1
            module = kbuild.deliver(built.module, dest)
            shutil.copyfile(built.log, dest / (module.path.name + ".build.log"))
        print(f"{module.path}\t{k.name}\t{k.version}\t{module.vermagic}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from ..supply import cache
    from ..supply.kernels import defs as kerneldefs
    from ..supply.recipes import DEFAULT_RECIPE, load_recipe
    settings = settings_for(args)
    json_file(args)
    recipes = [load_recipe(p) for p in sorted(DEFAULT_RECIPE.parent.glob("*.yaml"))]
    entries = cache.survey(settings, kerneldefs.load_definitions(), recipes)
    removable = [e for e in entries if not e.keep]
    out = human(args)
    print(f"cache: {settings.cache_dir}", file=out)
    rows = [(store, str(n), cache.human(size), cache.human(free) if free else "-")
            for store, n, size, free in cache.totals(entries)]
    total = sum(e.size for e in entries)
    _table(("STORE", "ENTRIES", "SIZE", "PRUNABLE"),
           [*rows, ("total", str(len(entries)), cache.human(total),
                    cache.human(sum(e.size for e in removable)) if removable else "-")], file=out)
    for e in removable:
        print(f"{'removing' if args.prune else 'prunable'}: {e.path} ({cache.human(e.size)}; {e.why})",
              file=out)
    if args.prune:
        count, size = cache.prune(removable, settings)
        print(f"removed {count} entries, {cache.human(size)}", file=out)
    elif removable:
        print("run `livepatch-lab cache --prune` to remove them", file=out)
    if args.json:
        write_json(args.json, {"cache_dir": str(settings.cache_dir),
                               "stores": [dict(zip(("store", "entries", "bytes", "prunable_bytes"), r))
                                          for r in cache.totals(entries)],
                               "prunable": [{"store": e.store, "path": str(e.path), "bytes": e.size,
                                             "why": e.why} for e in removable]})
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from ..supply import images, recipes
    settings = settings_for(args)
    image = images.build(recipes.load_recipe(Path(args.recipe)), settings, force=args.force)
    print(f"{image.name}\t{image.digest[:12]}\t{image.path}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from ..machine import session
    from ..machine.signals import raise_on_sigterm
    from ..supply import images, recipes
    from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
    settings = settings_for(args)
    raise_on_sigterm()
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise ConfigError(f"must be positive and finite, not {args.timeout!r}", field="--timeout")
    defn = kerneldefs.get_definition(args.kernel)
    recipe = recipes.load_recipe(Path(args.recipe))
    writable_dir(args.artifacts, "--artifacts", keep=False)   # made once nothing can refuse the command
    command = " ".join(args.command) if args.command else "uname -a"
    kernel = kernelfetch.fetch(defn, settings)
    image = images.build(recipe, settings)
    artifacts = writable_dir(args.artifacts, "--artifacts")
    try:
        with session.boot(kernel, image, settings, artifacts_dir=artifacts) as guest:
            result = guest.run(command, timeout=args.timeout)
    except BootError as exc:
        log.error("%s", exc)
        return EXIT_LAB
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    log.info("%s %s on %s: exit %d (%s %.1fs, command %.2fs, shutdown %.1fs)", kernel.name,
             kernel.version, guest.accel.upper(), result.rc, "restore" if guest.restored_from else "boot",
             guest.timings.get("ssh_ready", 0), result.seconds, guest.timings.get("shutdown", 0))
    return result.rc


def cmd_verify(args: argparse.Namespace) -> int:
    from ..lab.report import signoff
    check = signoff.verify(Path(args.report))
    for line in check.problems():
        print(line)
    if check.ok:
        print(f"{args.report}: all {check.matched} files match its manifest "
              f"(manifest sha256 {check.manifest_sha256})")
        return 0
    print(f"{args.report}: {len(check.problems())} file(s) do not match its manifest")
    return 1


def cmd_report(args: argparse.Namespace) -> int:
    from ..lab.report import signoff
    digest = signoff.write_saved(Path(args.out), [Path(a) for a in args.artifacts], settings_for(args),
                                 title=args.title, note=args.note)
    print(f"report: {Path(args.out) / 'index.html'} (manifest sha256 {digest})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import run_checks
    settings = settings_for(args, check_cache=False)
    failed = 0
    for check in run_checks(settings):
        failed += check.status == "FAIL"
        print(f"{check.status:<5} {check.name:<18} {check.detail}")
    return 1 if failed else 0


def cmd_setup(args: argparse.Namespace) -> int:
    from ..supply import hostsetup
    if args.print_only:
        family, _ = hostsetup.distro()
        print("\n".join(hostsetup.plan(family, libvirt=args.libvirt, test=args.test)))
        return 0
    settings = settings_for(args, check_cache=False)
    notes = hostsetup.setup(libvirt=args.libvirt, test=args.test, say=log.info,
                            debian_mirror=settings.debian_mirror)
    for note in notes:
        log.warning(note)
    log.info("done: `livepatch-lab doctor` says whether this host can run the lab")
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], file: TextIO) -> None:
    from ..lab.report.summary import columns
    print(columns([header, *rows]), file=file)


def human(args: argparse.Namespace) -> TextIO:
    """Where the words go: stderr when the JSON takes stdout (``--json -``), else stdout."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def json_file(args: argparse.Namespace) -> None:
    """``--json FILE``'s directory checked writable before the command does anything."""
    if args.json and args.json != "-":
        writable_dir(Path(args.json).parent, "--json", keep=False)


def write_json(dest: str, data: Any) -> None:
    """``data`` as JSON to the file ``dest`` (written whole or not at all), or to stdout for ``-``."""
    from ..core import atomic
    text = json.dumps(data, indent=2, default=str) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        atomic.write(Path(dest), text)
