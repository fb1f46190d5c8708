"""The commands that run patches and judge them: ``check``, ``soak`` and ``run`` go through the
matrix (scenarios x kernels), each cell explained as it ends, then its table, results document
and sign-off report; ``selftests`` runs the kernel's own livepatch selftests.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Sequence

from ..core.errors import ConfigError
from ..core.settings import Settings
from ..lab.matrix import DEFAULT_KERNEL
from .commands import human
from .settings import settings_for, writable_dir

log = logging.getLogger("livepatch_lab")


def cmd_check(args: argparse.Namespace) -> int:
    from ..lab.scenario import loader as scenario
    sc = scenario.from_options(Path(args.patch), targets=args.target_module, probe=args.probe,
                               expect_patched=args.expect_patched, duration=args.duration,
                               serve_file=args.serve_file, params=args.param,
                               upgrade_from=Path(args.upgrade_from) if args.upgrade_from else None,
                               security=_security(args), apply_with=args.apply_with, debug=args.debug,
                               overhead=args.overhead, max_overhead=args.max_overhead,
                               build_targets=args.build_target)
    return _run_matrix([sc], args.kernel or [DEFAULT_KERNEL], args, marks=False)


def _security(args: argparse.Namespace) -> dict:
    return {"sig_enforce": args.sig_enforce, "sign_key": args.sign_key, "sign_cert": args.sign_cert}


def cmd_soak(args: argparse.Namespace) -> int:
    from ..lab.scenario import loader as scenario
    sc = scenario.from_options(Path(args.patch), targets=args.target_module, probe=args.probe,
                               expect_patched=args.expect_patched, params=args.param,
                               soak={"cycles": args.cycles, "hold": args.hold, "leak_kib": args.leak_kib},
                               security=_security(args), debug=args.debug)
    return _run_matrix([sc], args.kernel or [DEFAULT_KERNEL], args, marks=False)


def cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..lab.scenario import loader as scenario
    from ..lab.scenario.schema import debug_facilities
    from ..lab.scenario.specs import DebugSpec
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


def cmd_selftests(args: argparse.Namespace) -> int:
    from ..lab.selftests import results, suite
    from ..machine.signals import raise_on_sigterm
    from ..supply.kernels import defs as kerneldefs
    settings = settings_for(args)
    raise_on_sigterm()
    names = list(args.kernel) or [DEFAULT_KERNEL]
    if names == ["all"]:
        names = sorted(kerneldefs.load_definitions())
    out_root = _checked_before_running(args, names, settings)
    lines = []
    for name in names:
        log.info("the kernel's livepatch selftests on %s", name)
        lines.append(suite.run_line(name, settings, out_root / "selftests" / name.replace("@", "_"),
                                    scripts=args.script or None,
                                    extra_scripts=[Path(p) for p in args.extra_script]))
        print(results.report(lines[-1]) + "\n", file=human(args), flush=True)
    if args.json:   # the one results document (lab/matrix.py), its cases under ``selftests``
        from ..lab import matrix
        matrix.write(Path(args.json), matrix.document(
            [], [e for line in lines for e in results.entries(SELFTESTS, line)]))
    return results.exit_status(lines)


def _checked_before_running(args: argparse.Namespace, kernels: Sequence[str], settings: Settings) -> Path:
    """The artifact folder, after everything that could refuse the command was checked, so that a
    refused one leaves none: the kernels named (a typo, or a pin the archive does not list) and
    every place it writes (--artifacts, --json, --report), checked without keeping anything."""
    from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
    out_root = Path(args.artifacts or Path("lab-artifacts") / time.strftime("%Y%m%d-%H%M%S"))
    defns = [kerneldefs.get_definition(name) for name in dict.fromkeys(kernels)]
    writable_dir(out_root, "--artifacts", keep=False)
    if args.json and args.json != "-":   # found unwritable now, not after the runs it would have recorded
        writable_dir(Path(args.json).parent, "--json", keep=False)
    if getattr(args, "report", None):
        from ..lab.report import signoff
        signoff.check_destination(Path(args.report), out_root)
    for defn in defns:   # last: it may need the archive's lists
        kernelfetch.check_pin(defn, settings)
    return out_root


SELFTESTS = "selftests"   # the suite's name in the results document, as the shipped selftests file names it


def _run_matrix(scenarios, kernel_args: Sequence[str], args: argparse.Namespace, marks: bool = True) -> int:
    """The cells of ``scenarios`` × the chosen kernels (lab/matrix.py: the plugin's rule), run
    one by one, each explained as it ends; then the table, the document and the report.
    ``marks``: the table marks a verdict the scenario does not expect (scenario files; a
    ``check`` expects nothing)."""
    from ..lab import matrix
    from ..lab.report import summary as report
    from ..machine.signals import raise_on_sigterm
    from ..supply.kernels import defs as kerneldefs
    settings = settings_for(args)
    raise_on_sigterm()
    defined = sorted(kerneldefs.load_definitions())
    cells = matrix.expand(scenarios, kernel_args, defined)
    # a typo or an unlisted pin, chosen or in a scenario's list, is a usage error before anything boots
    out_root = _checked_before_running(
        args, [*(n for n in kernel_args if n != matrix.ALL), *(c.kernel for c in cells)], settings)
    if not cells:
        raise ConfigError(f"no kernel to run on: the scenarios list "
                          f"{', '.join(sorted({k for sc in scenarios for k in sc.kernels or ()}))}, "
                          f"and --kernel chose {', '.join(kernel_args)}", field="--kernel")
    writable_dir(out_root, "--artifacts")
    results = []
    out = human(args)
    try:
        for cell in cells:
            log.info("scenario %s on %s", cell.scenario.name, cell.kernel)
            results.append(matrix.run_cell(cell, settings, out_root))
            print(report.explain(results[-1].outcome), file=out, flush=True)
    except KeyboardInterrupt as exc:   # what finished is kept, the interrupted run as an error
        from ..lab import runner
        if isinstance(exc, runner.Interrupted):
            results.append(matrix.judge(cells[len(results)], exc.outcome))
            print(report.explain(exc.outcome), file=out, flush=True)
        if results:
            _record(results, args, settings, marks)
        raise
    return _record(results, args, settings, marks)


def _record(results, args: argparse.Namespace, settings: Settings, marks: bool = True) -> int:
    """The matrix's table, JSON and report; the exit status its verdicts make."""
    from ..lab import matrix
    from ..lab.report import summary as report
    doc = matrix.document([r.as_dict() for r in results])
    print("\n" + report.table(doc["results"], marks=marks), file=human(args))
    if args.json:
        matrix.write(Path(args.json), doc)
    if args.report:
        from ..lab.report import signoff
        digest = signoff.write(Path(args.report), [Path(r.outcome.artifacts) for r in results], settings,
                               expected={Path(r.outcome.artifacts): (r.expected, r.as_expected) for r in results},
                               title=args.title, note=args.note)
        print(f"report: {Path(args.report) / 'index.html'} (manifest sha256 {digest})", file=human(args))
    return matrix.exit_status(doc["results"])

