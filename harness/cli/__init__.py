"""``livepatch-lab``: the command line.

Exit status: 0 success; 1 a check failed (``doctor``, ``verify``); 2 bad usage or input;
``boot`` exits with the guest command's own status, or 125 when the lab could
not boot the guest or run the command.

Here ``main``: parse, set up the log, run the command, turn what it raised into
the exit status. The grammar is ``parser``; the commands are in ``commands``
and ``runs``.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from ..core.errors import ConfigError, HarnessError
from .commands import EXIT_LAB
from .logs import setup_logging
from .parser import build_parser

log = logging.getLogger("harness")


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
    setup_logging(-1 if args.quiet else args.verbose)
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
