"""The command line's grammar: every command, its options and their help, each command bound to
the function that runs it (``commands``, ``runs``). A bad option is one line naming it.

``-v``, ``-q`` and ``--cache-dir`` go before or after the command. The commands that run
something group their ``--help``: what to test, where, outputs, backends. ``--json FILE``
(``-`` for stdout) on every command that writes JSON.
"""
from __future__ import annotations

import argparse

from ..core.settings import ACCELS, BACKENDS
from ..lab.matrix import DEFAULT_KERNEL
from ..lab.scenario.specs import APPLY_TOOLS
from .commands import (cmd_boot, cmd_build, cmd_cache, cmd_doctor, cmd_fetch, cmd_image_build, cmd_kernels, cmd_report,
                       cmd_setup, cmd_verify)
from .runs import cmd_check, cmd_run, cmd_selftests, cmd_soak

Group = argparse._ActionsContainer   # a parser, or one of the groups its --help shows

JSON_DOCUMENT = ("write the results document to FILE (schema 1: verdicts, reasons, measurements, judged "
                 "windows, timelines, artifact paths; docs/matrix.md 'The results document'); - for stdout, "
                 "the words then go to stderr")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):   # one line naming the option and the value, not a usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(top: bool) -> _Parser:
    """-v, -q and --cache-dir, before the command (``top``) or after it. After it they count
    apart (``verbosity`` adds them up) and have no default, so they do not reset what came before."""
    p = _Parser(add_help=False)
    count, suffix = (0, "") if top else (argparse.SUPPRESS, "_after")
    p.add_argument("--cache-dir", metavar="DIR", default=None if top else argparse.SUPPRESS,
                   help="cache for kernels, images and runs (env LIVEPATCH_LAB_CACHE; "
                        "default ~/.cache/livepatch-lab)")
    p.add_argument("-v", "--verbose", action="count", default=count, dest="verbose" + suffix,
                   help="more detail: debug lines too (-vvv: also SSH's own)")
    p.add_argument("-q", "--quiet", action="count", default=count, dest="quiet" + suffix,
                   help="less: warnings and errors only (-qq: errors only)")
    return p


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` and ``-q`` wherever they were given: 0 the default, above it more, below it less."""
    return (args.verbose + getattr(args, "verbose_after", 0)
            - args.quiet - getattr(args, "quiet_after", 0))


def _json_list(sp: Group, what: str) -> None:
    sp.add_argument("--json", metavar="FILE", help=f"write {what} as JSON to FILE (not the results "
                    f"document); - for stdout, the table then goes to stderr")


def _backend_options(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("backends")
    g.add_argument("--backend", choices=BACKENDS, help="qemu (default: QEMU run by the lab) or libvirt "
                   "(env LIVEPATCH_LAB_BACKEND)")
    g.add_argument("--libvirt-uri", metavar="URI", help="libvirt connection, e.g. qemu:///system "
                   "(default) or qemu+ssh://user@host/system (env LIVEPATCH_LAB_LIBVIRT_URI)")
    g.add_argument("--no-snapshots", action="store_true",
                   help="boot every guest instead of resuming a copy of one saved after its first "
                   "boot (env LIVEPATCH_LAB_SNAPSHOTS=0)")


def _security_options(sp: Group) -> None:
    sp.add_argument("--sig-enforce", action="store_true",
                    help="boot with module.sig_enforce=1, as Secure Boot / lockdown would: an untrusted patch is "
                         "refused (check `signature`)")
    sp.add_argument("--sign-key", metavar="KEY", help="sign the run's modules with this private key "
                    "(the kernel's own scripts/sign-file), for kernels that trust it")
    sp.add_argument("--sign-cert", metavar="CERT", help="the signing key's X.509 certificate")


def _where(sp: argparse.ArgumentParser, debug: bool = True) -> Group:
    g = sp.add_argument_group("where")
    g.add_argument("--kernel", action="append", default=[], metavar="K",
                   help=f"kernel to run on, NAME or NAME@VERSION (repeatable; 'all' = every defined kernel). "
                        f"check, soak, selftests: default {DEFAULT_KERNEL}. run: narrows each scenario's own "
                        f"list; a scenario without one runs on the chosen kernels, else on every defined "
                        f"kernel (as the pytest plugin's --lab-kernel)")
    g.add_argument("--accel", choices=ACCELS, help="default auto: KVM if it really works, else TCG")
    if debug:
        g.add_argument("--debug", metavar="LIST|none",
                       help="the kernel's memory debugging the guest boots with: a comma-separated list of "
                            "slub, kfence, poison (default: all the kernel was built with; a scenario's "
                            "`debug:` for run), or none for a performance-faithful run")
    return g


def _outputs(sp: argparse.ArgumentParser, report: bool = True) -> None:
    g = sp.add_argument_group("outputs")
    g.add_argument("--json", metavar="FILE", help=JSON_DOCUMENT)
    g.add_argument("--artifacts", metavar="DIR", help="artifact folder (default lab-artifacts/<timestamp>)")
    if report:
        g.add_argument("--report", metavar="DIR",
                       help="write a sign-off report: DIR/index.html (one self-contained page), the "
                            "artifacts, and DIR/manifest.json (sha256 of every file; see verify)")
        _page_options(g)


def _page_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--title", help="the sign-off page's title: what is signed off (e.g. the patch and its "
                                   "version; a scenario's release: block names the patch per run)")
    g.add_argument("--note", help="a word to the page's reader, shown under its title")


def _matrix_options(sp: argparse.ArgumentParser) -> None:
    _where(sp)
    _outputs(sp)
    _backend_options(sp)


class _Version(argparse.Action):
    """argparse's own version action wraps its line to the terminal: this prints it whole."""
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: object = None) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit(0)


def _version() -> str:
    """The installed distribution's version, and where the package and its data are."""
    from importlib.metadata import PackageNotFoundError, version

    from ..core import paths
    try:
        number = version("livepatch-lab")
    except PackageNotFoundError:
        number = "(not installed)"
    return f"{number} ({paths.PACKAGE}; data {paths.DATA})"


def build_parser() -> argparse.ArgumentParser:
    from ..supply.recipes import DEFAULT_RECIPE
    p = _Parser(prog="livepatch-lab", description="Prove a kernel livepatch in real QEMU guests.",
                parents=[_common(top=True)])
    p.add_argument("--version", action=_Version, nargs=0, help="print the version, where the package and its "
                   "data are, and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    after = [_common(top=False)]

    k = sub.add_parser("kernels", parents=after,
                       help="list defined kernels, their exact versions and cache state")
    k.add_argument("--refresh", action="store_true", help="re-read the archive's package lists")
    k.add_argument("--offline", action="store_true", help="show the cache only; no archive look-up")
    _json_list(k, "the list, one object per kernel")
    k.set_defaults(func=cmd_kernels)

    f = sub.add_parser("fetch", parents=after, help="download and unpack kernels into the cache")
    f.add_argument("kernel", nargs="+", help="kernel name, optionally NAME@VERSION")
    f.add_argument("--refresh", action="store_true", help="look for a newer version in the archive")
    f.set_defaults(func=cmd_fetch)

    img = sub.add_parser("image", parents=after, help="guest images")
    isub = img.add_subparsers(dest="image_cmd", required=True, metavar="ACTION")
    ib = isub.add_parser("build", parents=after, help="build (or find cached) the guest base image")
    ib.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    ib.add_argument("--force", action="store_true", help="rebuild even if cached")
    ib.set_defaults(func=cmd_image_build)

    ca = sub.add_parser("cache", parents=after, help="what the cache holds; --prune removes what no kernel "
                                                     "or image in use needs")
    ca.add_argument("--prune", action="store_true",
                    help="remove superseded kernel versions and what was derived from them, "
                         "and older builds of the image recipes")
    _json_list(ca, "the survey (cache_dir, stores, prunable)")
    ca.set_defaults(func=cmd_cache)

    b = sub.add_parser("boot", parents=after,
                       help="boot KERNEL, run CMD over SSH, print its output, exit with its status",
                       usage="livepatch-lab boot [options] KERNEL [-- CMD...]")
    what = b.add_argument_group("what to run")
    what.add_argument("kernel", help=f"kernel name, optionally NAME@VERSION (e.g. {DEFAULT_KERNEL})")
    what.add_argument("command", nargs="*", help="command to run in the guest, after -- (default: uname -a)")
    what.add_argument("--timeout", type=float, help="deadline for CMD in seconds")
    where = b.add_argument_group("where")
    where.add_argument("--accel", choices=ACCELS, help="default auto: KVM if it really works, else TCG")
    where.add_argument("--memory", type=int, help="guest memory in MiB (default 1024)")
    where.add_argument("--cpus", type=int, help="guest vCPUs (default 2)")
    where.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="image recipe")
    b.add_argument_group("outputs").add_argument("--artifacts", help="keep the console log in this directory")
    _backend_options(b)
    b.set_defaults(func=cmd_boot)

    c = sub.add_parser("check", parents=after, help="validate one livepatch (kbuild dir, .ko or source diff) under "
                                                     "load; exit 0 pass, 1 fail, 2 error")
    what = c.add_argument_group("what to test")
    what.add_argument("patch", help="kbuild directory, prebuilt .ko, or a kernel source diff (.patch/.diff, -p1 "
                                    "paths) that kpatch-build turns into a module for each kernel")
    what.add_argument("--build-target", action="append", default=[], metavar="PATH.ko",
                      help="with a diff: a module the diff changes, as its path in the kernel tree "
                           "(fs/nfsd/nfsd.ko), built too (kpatch-build -t; repeatable)")
    what.add_argument("--target-module", action="append", default=[], metavar="M[:NAME=VALUE,...]",
                      help="module (dir or .ko) the patch patches, loaded first, with its module parameters "
                           "(repeatable)")
    what.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a module parameter of the patch (repeatable; quoted for the guest's shell)")
    what.add_argument("--upgrade-from", metavar="OLD",
                      help="the patch in the field (dir or .ko): loaded and settled before the baseline, then "
                           "PATCH is applied over it under load (atomic replace or stacking, as PATCH says)")
    what.add_argument("--probe", metavar="CMD", help="guest command run in a loop through the run")
    what.add_argument("--expect-patched", metavar="REGEX", help="the probe's output while patched")
    what.add_argument("--duration", type=float, metavar="S", help="seconds to hold the patch under load")
    what.add_argument("--serve-file", metavar="PATH",
                      help="the guest service answers with this file, read per request "
                           "(puts a /proc handler on the service's path)")
    what.add_argument("--apply-with", choices=APPLY_TOOLS, metavar="TOOL",
                      help="apply and revert the patch the way its users do: kpatch (`kpatch load` / `kpatch "
                           "unload`, in an image with Debian's kpatch package) or insmod (the default)")
    what.add_argument("--overhead", metavar="CMD",
                      help="measure what the patch costs a call of CMD (a guest command that runs the patched "
                           "code): blocks of calls timed in the guest before, while patched and after; the "
                           "per-call difference and ratio with 95%% intervals (measurements.overhead)")
    what.add_argument("--max-overhead", type=float, metavar="PERCENT",
                      help="fail `overhead` when the patched/unpatched ratio's 95%% interval lies above "
                           "+PERCENT (with --overhead, or the probe's command)")
    _security_options(what)
    _matrix_options(c)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("soak", parents=after, help="apply and revert one livepatch N times in one guest under "
                                                    "load; fail on a leak, a leftover or a steady slow-down")
    what = s.add_argument_group("what to test")
    what.add_argument("patch", help="kbuild directory or prebuilt .ko")
    what.add_argument("--cycles", type=int, default=20, metavar="N", help="apply/revert cycles (default 20)")
    what.add_argument("--hold", type=float, metavar="S", help="seconds patched in each cycle (default 2)")
    what.add_argument("--leak-kib", type=float, metavar="KIB",
                      help="unreclaimable slab growth a cycle that counts as a leak (default 256)")
    what.add_argument("--target-module", action="append", default=[], metavar="M[:NAME=VALUE,...]",
                      help="module the patch patches, loaded first (repeatable)")
    what.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a module parameter")
    what.add_argument("--probe", metavar="CMD", help="guest command run in a loop through the run")
    what.add_argument("--expect-patched", metavar="REGEX", help="the probe's output in every patched hold")
    _security_options(what)
    _matrix_options(s)
    s.set_defaults(func=cmd_soak)

    r = sub.add_parser("run", parents=after, help="run scenario files; exit 0 all pass, 1 a fail, 2 an error")
    r.add_argument_group("what to test").add_argument("scenario", nargs="+", help="scenario YAML file(s)")
    _matrix_options(r)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("verify", parents=after, help="check a sign-off report against its manifest: exit 0 "
                                                     "when every file matches, 1 naming each that differs, is "
                                                     "missing or was added")
    v.add_argument("report", metavar="DIR", help="the report directory (holds manifest.json)")
    v.set_defaults(func=cmd_verify)

    rp = sub.add_parser("report", parents=after, help="make a sign-off report from saved runs: every run "
                                                      "folder (with its verdict.json) at or under ARTIFACTS")
    rp.add_argument("artifacts", nargs="+", metavar="ARTIFACTS", help="run folders, or folders holding them "
                                                                      "(e.g. lab-artifacts/<timestamp>)")
    page = rp.add_argument_group("outputs")
    page.add_argument("--out", metavar="DIR", required=True,
                      help="the report directory: DIR/index.html, the runs' artifacts, DIR/manifest.json")
    _page_options(page)
    rp.set_defaults(func=cmd_report)

    st = sub.add_parser("selftests", parents=after, help="the kernel's own livepatch selftests (from its "
                                                         "linux-source package) in a guest of that kernel, one "
                                                         "result per case; exit 0 all pass or skip, 1 a fail, "
                                                         "2 an error")
    what = st.add_argument_group("what to test")
    what.add_argument("--script", action="append", default=[], metavar="NAME",
                      help="run only this script of the kernel's (e.g. test-livepatch.sh; repeatable)")
    what.add_argument("--extra-script", action="append", default=[], metavar="FILE",
                      help="also run this script of yours, beside the kernel's functions.sh (repeatable)")
    _where(st, debug=False).add_argument("--cpus", type=int, help="guest vCPUs (default 2)")
    _outputs(st, report=False)
    _backend_options(st)
    st.set_defaults(func=cmd_selftests)

    d = sub.add_parser("doctor", parents=after,
                       help="check this host: qemu, KVM, image tools, compiler, disk, cache")
    d.set_defaults(func=cmd_doctor)

    b = sub.add_parser("build", parents=after,
                       help="build a klp module's kbuild directory against a kernel's own headers and compiler, "
                            "or a kernel source diff into a livepatch with kpatch-build")
    b.add_argument("source", metavar="SOURCE", help="the kbuild directory (Kbuild, or a Makefile with obj-m), or a "
                                                    "unified diff against the kernel source (.patch/.diff, -p1)")
    b.add_argument("--build-target", action="append", default=[], metavar="PATH.ko",
                   help="with a diff: a module the diff changes (fs/nfsd/nfsd.ko), built too (repeatable)")
    b.add_argument("--kernel", action="append", metavar="K", help=f"kernel to build for, NAME or NAME@VERSION "
                   f"(repeatable; default {DEFAULT_KERNEL})")
    b.add_argument("--out", metavar="DIR", default=".", help="where the .ko goes (DIR/KERNEL/ for more than one "
                   "kernel; default the current directory)")
    b.set_defaults(func=cmd_build)

    su = sub.add_parser("setup", parents=after,
                        help="install what this Debian or Ubuntu host needs to run the lab (as root or via sudo)")
    su.add_argument("--libvirt", action="store_true", help="also what the libvirt backend needs (libvirtd, "
                    "its TCG wrapper; then pip install 'livepatch-lab[libvirt]')")
    su.add_argument("--test", action="store_true", help="also what the lab's own test suite needs (implies "
                    "--libvirt)")
    su.add_argument("--print", action="store_true", dest="print_only",
                    help="print the packages this host would get, one per line, and install nothing")
    su.set_defaults(func=cmd_setup)
    return p
