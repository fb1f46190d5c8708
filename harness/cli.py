"""``livepatch-lab``: the command line.

Exit status: 0 success; 1 a check failed (``doctor``, ``verify``); 2 bad usage or input;
``boot`` exits with the guest command's own status, or 125 when the lab could
not boot the guest or run the command.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .core.errors import BootError, ConfigError, HarnessError
from .core.settings import ACCELS, BACKENDS, Settings
from .lab.matrix import DEFAULT_KERNEL
from .lab.scenario.specs import APPLY_TOOLS

log = logging.getLogger("harness")
EXIT_LAB = 125


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[lab {time.strftime('%H:%M:%S')}] {level}{record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbosity: int) -> None:
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger("harness")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO if verbosity >= 0 else logging.WARNING)
    # SSH attempts to a booting guest fail by design; the lab reports its own errors.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)


# Settings fields set by an option, so an error names what the user typed.
_OPTIONS = {"memory_mib": "--memory", "cpus": "--cpus", "libvirt_uri": "--libvirt-uri", "accel": "--accel",
            "backend": "--backend"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):   # one line naming the option and the value, not a usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _settings(args: argparse.Namespace, *, check_cache: bool = True) -> Settings:
    try:
        settings = Settings.from_env(cache_dir=args.cache_dir, accel=getattr(args, "accel", None),
                                     memory_mib=getattr(args, "memory", None), cpus=getattr(args, "cpus", None),
                                     backend=getattr(args, "backend", None),
                                     libvirt_uri=getattr(args, "libvirt_uri", None),
                                     snapshots=False if getattr(args, "no_snapshots", False) else None)
    except ConfigError as exc:
        if exc.source is None and exc.field in _OPTIONS:
            raise ConfigError(exc.message, field=_OPTIONS[exc.field]) from None
        raise
    if not check_cache:   # doctor reports an unusable cache as one of its checks
        return settings
    return settings.usable_cache("--cache-dir" if args.cache_dir else "LIVEPATCH_LAB_CACHE")


def _writable_dir(path, option: str) -> Optional[Path]:
    """``path`` made if missing and writable, or a ``ConfigError`` naming ``option``; None stays None."""
    if path is None:
        return None
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise ConfigError(f"cannot write to {path}: {exc.strerror or exc}", field=option) from None
    return path


def _backend_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--backend", choices=BACKENDS, help="qemu (default: QEMU run by the lab) or libvirt "
                    "(env LIVEPATCH_LAB_BACKEND)")
    sp.add_argument("--libvirt-uri", metavar="URI", help="libvirt connection, e.g. qemu:///system "
                    "(default) or qemu+ssh://user@host/system (env LIVEPATCH_LAB_LIBVIRT_URI)")
    sp.add_argument("--no-snapshots", action="store_true",
                    help="boot every guest instead of resuming a copy of one saved after its first "
                    "boot (env LIVEPATCH_LAB_SNAPSHOTS=0)")


# commands -----------------------------------------------------------------
def cmd_kernels(args: argparse.Namespace) -> int:
    from .supply.kernels import cache as kernelcache, defs as kerneldefs, fetch as kernelfetch
    settings = _settings(args)
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
    if args.json:
        print(json.dumps([dict(zip(("name", "kind", "source", "archive", "cached"), r)) for r in rows],
                         indent=2))
        return 0
    _table(("KERNEL", "KIND", "SOURCE", "ARCHIVE VERSION", "CACHED"), rows)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .supply.kernels import defs as kerneldefs, fetch as kernelfetch
    settings = _settings(args)
    for spec in args.kernel:
        k = kernelfetch.fetch(kerneldefs.get_definition(spec), settings, refresh=args.refresh)
        print(f"{k.name}\t{k.version}\t{k.release}\t{k.vmlinuz}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .supply import cache
    from .supply.kernels import defs as kerneldefs
    from .supply.recipes import DEFAULT_RECIPE, load_recipe
    settings = _settings(args)
    recipes = [load_recipe(p) for p in sorted(DEFAULT_RECIPE.parent.glob("*.yaml"))]
    entries = cache.survey(settings, kerneldefs.load_definitions(), recipes)
    removable = [e for e in entries if not e.keep]
    if args.json:
        print(json.dumps({"cache_dir": str(settings.cache_dir),
                          "stores": [dict(zip(("store", "entries", "bytes", "prunable_bytes"), r))
                                     for r in cache.totals(entries)],
                          "prunable": [{"store": e.store, "path": str(e.path), "bytes": e.size,
                                        "why": e.why} for e in removable]}, indent=2))
    else:
        print(f"cache: {settings.cache_dir}")
        rows = [(store, str(n), cache.human(size), cache.human(free) if free else "-")
                for store, n, size, free in cache.totals(entries)]
        total = sum(e.size for e in entries)
        _table(("STORE", "ENTRIES", "SIZE", "PRUNABLE"),
               [*rows, ("total", str(len(entries)), cache.human(total),
                        cache.human(sum(e.size for e in removable)) if removable else "-")])
        for e in removable:
            print(f"{'removing' if args.prune else 'prunable'}: {e.path} "
                  f"({cache.human(e.size)}; {e.why})")
    if args.prune:
        count, size = cache.prune(removable, settings)
        if not args.json:
            print(f"removed {count} entries, {cache.human(size)}")
    elif removable and not args.json:
        print("run `livepatch-lab cache --prune` to remove them")
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from .supply import images, recipes
    settings = _settings(args)
    image = images.build(recipes.load_recipe(Path(args.recipe)), settings, force=args.force)
    print(f"{image.name}\t{image.digest[:12]}\t{image.path}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from .machine import session
    from .machine.signals import raise_on_sigterm
    from .supply import images, recipes
    from .supply.kernels import defs as kerneldefs, fetch as kernelfetch
    settings = _settings(args)
    raise_on_sigterm()
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise ConfigError(f"must be positive and finite, not {args.timeout!r}", field="--timeout")
    artifacts = _writable_dir(args.artifacts, "--artifacts")
    defn = kerneldefs.get_definition(args.kernel)
    recipe = recipes.load_recipe(Path(args.recipe))
    command = " ".join(args.command) if args.command else "uname -a"
    kernel = kernelfetch.fetch(defn, settings)
    image = images.build(recipe, settings)
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


def _run_matrix(scenarios, kernel_args: Sequence[str], args: argparse.Namespace, marks: bool = True) -> int:
    """The cells of ``scenarios`` × the chosen kernels (lab/matrix.py: the plugin's rule), run
    one by one, each explained as it ends; then the table, the document and the report.
    ``marks``: the table marks a verdict the scenario does not expect (scenario files; a
    ``check`` expects nothing)."""
    from .core.errors import ConfigError
    from .lab import matrix
    from .lab.report import summary as report
    from .machine.signals import raise_on_sigterm
    from .supply.kernels import defs as kerneldefs
    settings = _settings(args)
    raise_on_sigterm()
    defined = sorted(kerneldefs.load_definitions())
    cells = matrix.expand(scenarios, kernel_args, defined)
    # a typo, chosen or in a scenario's list, is a usage error before anything boots
    for name in dict.fromkeys([*(n for n in kernel_args if n != matrix.ALL), *(c.kernel for c in cells)]):
        kerneldefs.get_definition(name)
    if not cells:
        raise ConfigError(f"no kernel to run on: the scenarios list "
                          f"{', '.join(sorted({k for sc in scenarios for k in sc.kernels or ()}))}, "
                          f"and --kernel chose {', '.join(kernel_args)}", field="--kernel")
    out_root = _writable_dir(args.artifacts or Path("lab-artifacts") / time.strftime("%Y%m%d-%H%M%S"),
                             "--artifacts")
    assert out_root is not None   # given a path, never None
    if args.json and args.json != "-":   # found unwritable now, not after the runs it would have recorded
        _writable_dir(Path(args.json).parent, "--json")
    if args.report:
        from .lab.report import signoff
        signoff.check_destination(Path(args.report), out_root)   # before anything boots
    results = []
    human = _human(args)
    try:
        for cell in cells:
            log.info("scenario %s on %s", cell.scenario.name, cell.kernel)
            results.append(matrix.run_cell(cell, settings, out_root))
            print(report.explain(results[-1].outcome), file=human, flush=True)
    except KeyboardInterrupt as exc:   # what finished is kept, the interrupted run as an error
        from .lab import runner
        if isinstance(exc, runner.Interrupted):
            results.append(matrix.judge(cells[len(results)], exc.outcome))
            print(report.explain(exc.outcome), file=human, flush=True)
        if results:
            _record(results, args, settings, marks)
        raise
    return _record(results, args, settings, marks)


def _human(args: argparse.Namespace):
    """Where the words go: stderr when the JSON document takes stdout (``--json -``)."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def _record(results, args: argparse.Namespace, settings: Settings, marks: bool = True) -> int:
    """The matrix's table, JSON and report; the exit status its verdicts make."""
    from .lab import matrix
    from .lab.report import summary as report
    doc = matrix.document([r.as_dict() for r in results])
    print("\n" + report.table(doc["results"], marks=marks), file=_human(args))
    if args.json:
        matrix.write(Path(args.json), doc)
    if args.report:
        from .lab.report import signoff
        digest = signoff.write(Path(args.report), [Path(r.outcome.artifacts) for r in results], settings,
                               expected={Path(r.outcome.artifacts): (r.expected, r.as_expected) for r in results})
        print(f"report: {Path(args.report) / 'index.html'} (manifest sha256 {digest})", file=_human(args))
    return matrix.exit_status(doc["results"])


def cmd_check(args: argparse.Namespace) -> int:
    from .lab.scenario import loader as scenario
    sc = scenario.from_options(Path(args.patch), targets=args.target_module, probe=args.probe,
                               expect_patched=args.expect_patched, duration=args.duration,
                               serve_file=args.serve_file, params=args.param,
                               upgrade_from=Path(args.upgrade_from) if args.upgrade_from else None,
                               security=_security(args), apply_with=args.apply_with, debug=args.debug,
                               overhead=args.overhead, max_overhead=args.max_overhead)
    return _run_matrix([sc], args.kernel or [DEFAULT_KERNEL], args, marks=False)


def _security(args: argparse.Namespace) -> dict:
    return {"sig_enforce": args.sig_enforce, "sign_key": args.sign_key, "sign_cert": args.sign_cert}


def _security_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--sig-enforce", action="store_true",
                    help="boot with module.sig_enforce=1, as Secure Boot / lockdown would: an untrusted patch is "
                         "refused (check `signature`)")
    sp.add_argument("--sign-key", metavar="KEY", help="sign the run's modules with this private key "
                    "(the kernel's own scripts/sign-file), for kernels that trust it")
    sp.add_argument("--sign-cert", metavar="CERT", help="the signing key's X.509 certificate")


def cmd_soak(args: argparse.Namespace) -> int:
    from .lab.scenario import loader as scenario
    sc = scenario.from_options(Path(args.patch), targets=args.target_module, probe=args.probe,
                               expect_patched=args.expect_patched, params=args.param,
                               soak={"cycles": args.cycles, "hold": args.hold, "leak_kib": args.leak_kib},
                               security=_security(args), debug=args.debug)
    return _run_matrix([sc], args.kernel or [DEFAULT_KERNEL], args, marks=False)


def cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from .core.errors import ConfigError
    from .lab.scenario import loader as scenario
    from .lab.scenario.schema import debug_facilities
    from .lab.scenario.specs import DebugSpec
    debug = None
    if args.debug is not None:   # refused before any scenario loads or anything boots
        try:
            debug = DebugSpec(debug_facilities(args.debug))
        except ValueError as exc:
            raise ConfigError(str(exc), source="livepatch-lab run", field="--debug") from None
    scenarios = [scenario.load(Path(p)) for p in args.scenario]
    if debug is not None:
        scenarios = [dataclasses.replace(sc, debug=debug) for sc in scenarios]
    return _run_matrix(scenarios, args.kernel, args)


def cmd_verify(args: argparse.Namespace) -> int:
    from .lab.report import signoff
    check = signoff.verify(Path(args.report))
    for line in check.problems():
        print(line)
    if check.ok:
        print(f"{args.report}: all {check.matched} files match its manifest "
              f"(manifest sha256 {check.manifest_sha256})")
        return 0
    print(f"{args.report}: {len(check.problems())} file(s) do not match its manifest")
    return 1


def cmd_selftests(args: argparse.Namespace) -> int:
    from .lab.selftests import results, suite
    from .machine.signals import raise_on_sigterm
    from .supply.kernels import defs as kerneldefs
    settings = _settings(args)
    raise_on_sigterm()
    names = list(args.kernel) or [DEFAULT_KERNEL]
    if names == ["all"]:
        names = sorted(kerneldefs.load_definitions())
    for name in names:
        kerneldefs.get_definition(name)  # a typo is a usage error before anything boots
    out_root = Path(args.artifacts or Path("lab-artifacts") / time.strftime("%Y%m%d-%H%M%S"))
    lines = []
    for name in names:
        log.info("the kernel's livepatch selftests on %s", name)
        lines.append(suite.run_line(name, settings, out_root / "selftests" / name.replace("@", "_"),
                                    scripts=args.script or None,
                                    extra_scripts=[Path(p) for p in args.extra_script]))
        print(results.report(lines[-1]) + "\n", flush=True)
    if args.json:
        results.write_json(Path(args.json), lines)
    return results.exit_status(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks
    settings = _settings(args, check_cache=False)
    failed = 0
    for check in run_checks(settings):
        failed += check.status == "FAIL"
        print(f"{check.status:<5} {check.name:<18} {check.detail}")
    return 1 if failed else 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from .lab.report.summary import columns
    print(columns([header, *rows]))


# parser -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .supply.recipes import DEFAULT_RECIPE
    p = _Parser(prog="livepatch-lab", description="Prove a kernel livepatch in real QEMU guests.")
    p.add_argument("--cache-dir", help="cache for kernels, images and runs "
                   "(env LIVEPATCH_LAB_CACHE; default ~/.cache/livepatch-lab)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    k = sub.add_parser("kernels", help="list defined kernels, their exact versions and cache state")
    k.add_argument("--refresh", action="store_true", help="re-read the archive's package lists")
    k.add_argument("--offline", action="store_true", help="show the cache only; no archive look-up")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_kernels)

    f = sub.add_parser("fetch", help="download and unpack kernels into the cache")
    f.add_argument("kernel", nargs="+", help="kernel name, optionally NAME@VERSION")
    f.add_argument("--refresh", action="store_true", help="look for a newer version in the archive")
    f.set_defaults(func=cmd_fetch)

    img = sub.add_parser("image", help="guest images")
    isub = img.add_subparsers(dest="image_cmd", required=True, metavar="ACTION")
    ib = isub.add_parser("build", help="build (or find cached) the guest base image")
    ib.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    ib.add_argument("--force", action="store_true", help="rebuild even if cached")
    ib.set_defaults(func=cmd_image_build)

    ca = sub.add_parser("cache", help="what the cache holds; --prune removes what no kernel or "
                                      "image in use needs")
    ca.add_argument("--prune", action="store_true",
                    help="remove superseded kernel versions and what was derived from them, "
                         "and older builds of the image recipes")
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(func=cmd_cache)

    b = sub.add_parser("boot", help="boot KERNEL, run CMD over SSH, print its output, exit with its status",
                       usage="livepatch-lab boot [options] KERNEL [-- CMD...]")
    b.add_argument("kernel", help=f"kernel name, optionally NAME@VERSION (e.g. {DEFAULT_KERNEL})")
    b.add_argument("command", nargs="*", help="command to run in the guest, after -- (default: uname -a)")
    b.add_argument("--accel", choices=ACCELS, help="default auto: KVM if it really works, else TCG")
    b.add_argument("--memory", type=int, help="guest memory in MiB (default 1024)")
    b.add_argument("--cpus", type=int, help="guest vCPUs (default 2)")
    b.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="image recipe")
    b.add_argument("--timeout", type=float, help="deadline for CMD in seconds")
    b.add_argument("--artifacts", help="keep the console log in this directory")
    _backend_options(b)
    b.set_defaults(func=cmd_boot)

    def matrix_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--kernel", action="append", default=[], metavar="K",
                        help=f"kernel to run on (repeatable; 'all' = every defined kernel). check and soak: "
                             f"default {DEFAULT_KERNEL}. run: narrows each scenario's own list; a scenario "
                             f"without one runs on the chosen kernels, else on every defined kernel (as "
                             f"the pytest plugin's --lab-kernel)")
        sp.add_argument("--accel", choices=ACCELS)
        sp.add_argument("--json", metavar="FILE", help="write the results document (schema 1: verdicts, "
                        "reasons, measurements, judged windows, timelines, artifact paths; README 'The "
                        "results document'); - for stdout")
        sp.add_argument("--artifacts", metavar="DIR",
                        help="artifact folder (default lab-artifacts/<timestamp>)")
        sp.add_argument("--report", metavar="DIR",
                        help="write a sign-off report: DIR/index.html (one self-contained page), the "
                             "artifacts, and DIR/manifest.json (sha256 of every file; see verify)")
        _backend_options(sp)

    def debug_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--debug", metavar="LIST|none",
                        help="the kernel's memory debugging the guest boots with: a comma-separated list of "
                             "slub, kfence, poison (default: all the kernel was built with; a scenario's "
                             "`debug:` for run), or none for a performance-faithful run")

    c = sub.add_parser("check", help="validate one livepatch (kbuild dir or .ko) under load; "
                                     "exit 0 pass, 1 fail, 2 error")
    c.add_argument("patch", help="kbuild directory or prebuilt .ko")
    c.add_argument("--target-module", action="append", default=[], metavar="M[:NAME=VALUE,...]",
                   help="module (dir or .ko) the patch patches, loaded first, with its module parameters "
                        "(repeatable)")
    c.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a module parameter of the patch (repeatable; quoted for the guest's shell)")
    c.add_argument("--upgrade-from", metavar="OLD",
                   help="the patch in the field (dir or .ko): loaded and settled before the baseline, then "
                        "PATCH is applied over it under load (atomic replace or stacking, as PATCH says)")
    c.add_argument("--probe", metavar="CMD", help="guest command run in a loop through the run")
    c.add_argument("--expect-patched", metavar="REGEX", help="the probe's output while patched")
    c.add_argument("--duration", type=float, metavar="S", help="seconds to hold the patch under load")
    c.add_argument("--serve-file", metavar="PATH",
                   help="the guest service answers with this file, read per request "
                        "(puts a /proc handler on the service's path)")
    c.add_argument("--apply-with", choices=APPLY_TOOLS, metavar="TOOL",
                   help="apply and revert the patch the way its users do: kpatch (`kpatch load` / `kpatch "
                        "unload`, in an image with Debian's kpatch package) or insmod (the default)")
    c.add_argument("--overhead", metavar="CMD",
                   help="measure what the patch costs a call of CMD (a guest command that runs the patched "
                        "code): blocks of calls timed in the guest before, while patched and after; the "
                        "per-call difference and ratio with 95%% intervals (measurements.overhead)")
    c.add_argument("--max-overhead", type=float, metavar="PERCENT",
                   help="fail `overhead` when the patched/unpatched ratio's 95%% interval lies above +PERCENT "
                        "(with --overhead, or the probe's command)")
    _security_options(c)
    debug_option(c)
    matrix_options(c)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("soak", help="apply and revert one livepatch N times in one guest under load; fail on "
                                    "a leak, a leftover or a steady slow-down")
    s.add_argument("patch", help="kbuild directory or prebuilt .ko")
    s.add_argument("--cycles", type=int, default=20, metavar="N", help="apply/revert cycles (default 20)")
    s.add_argument("--hold", type=float, metavar="S", help="seconds patched in each cycle (default 2)")
    s.add_argument("--leak-kib", type=float, metavar="KIB",
                   help="unreclaimable slab growth a cycle that counts as a leak (default 256)")
    s.add_argument("--target-module", action="append", default=[], metavar="M[:NAME=VALUE,...]",
                   help="module the patch patches, loaded first (repeatable)")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a module parameter")
    s.add_argument("--probe", metavar="CMD", help="guest command run in a loop through the run")
    s.add_argument("--expect-patched", metavar="REGEX", help="the probe's output in every patched hold")
    _security_options(s)
    debug_option(s)
    matrix_options(s)
    s.set_defaults(func=cmd_soak)

    r = sub.add_parser("run", help="run scenario files; exit 0 all pass, 1 a fail, 2 an error")
    r.add_argument("scenario", nargs="+", help="scenario YAML file(s)")
    debug_option(r)
    matrix_options(r)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("verify", help="check a sign-off report against its manifest: exit 0 when every "
                                      "file matches, 1 naming each that differs, is missing or was added")
    v.add_argument("report", metavar="DIR", help="the report directory (holds manifest.json)")
    v.set_defaults(func=cmd_verify)
    st = sub.add_parser("selftests", help="the kernel's own livepatch selftests (from its linux-source "
                                          "package) in a guest of that kernel, one result per case; "
                                          "exit 0 all pass or skip, 1 a fail, 2 an error")
    st.add_argument("--script", action="append", default=[], metavar="NAME",
                    help="run only this script of the kernel's (e.g. test-livepatch.sh; repeatable)")
    st.add_argument("--extra-script", action="append", default=[], metavar="FILE",
                    help="also run this script of yours, beside the kernel's functions.sh (repeatable)")
    st.add_argument("--cpus", type=int, help="guest vCPUs (default 2)")
    matrix_options(st)
    st.set_defaults(func=cmd_selftests)

    d = sub.add_parser("doctor", help="check this host: qemu, KVM, image tools, compiler, disk, cache")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the guest command, options and all.
    guest_cmd = argv[argv.index("--") + 1:] if "--" in argv else None
    args = parser.parse_args(argv[:argv.index("--")] if guest_cmd is not None else argv)
    if guest_cmd is not None:
        if args.cmd != "boot":
            parser.error(f"'--' only separates a guest command for boot, not for {args.cmd}")
        args.command = [*args.command, *guest_cmd]
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        return args.func(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; the guest was shut down and its overlay removed")
        return 130
    except HarnessError as exc:
        log.error("%s", exc)
        return EXIT_LAB if args.cmd == "boot" else 2 if args.cmd in ("check", "run", "soak", "selftests") else 1
    except OSError as exc:   # the host refused a file operation the lab did not foresee: one line
        log.error("%s%s", exc, "" if args.verbose else " (run with -v for where)")
        log.debug("where", exc_info=True)
        return EXIT_LAB if args.cmd == "boot" else 2


if __name__ == "__main__":
    sys.exit(main())
