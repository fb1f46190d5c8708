"""``livepatch-lab``: the command line.

Exit status: 0 success; 1 a check failed (``doctor``, ``verify``); 2 bad usage or input;
``boot`` exits with the guest command's own status, or 125 when the lab could
not boot the guest or run the command; 141 (as a shell reports SIGPIPE) when
whoever read stdout stopped reading, said nowhere: ``kernels | head -2`` is no error.

Here ``main``: parse, set up the log, run the command, turn what it raised into
the exit status. The grammar is ``parser``; the commands are in ``commands``
and ``runs``.
"""
from __future__ import annotations

import logging
import os
import select
import sys
from typing import Optional, Sequence

from ..core.errors import ConfigError, HarnessError
from .commands import EXIT_LAB
from .logs import setup_logging
from .parser import build_parser, verbosity

EXIT_PIPE = 128 + 13   # stdout's reader went away: what a shell reports for SIGPIPE

log = logging.getLogger("livepatch_lab")


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
    setup_logging(verbosity(args))
    try:
        status = args.func(args)
        sys.stdout.flush()   # a closed pipe shows here, not at exit as "Exception ignored"
        return status
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
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            # Python flushes stdout again at exit: into /dev/null, not the closed pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_PIPE
        log.error("%s%s", exc, "" if verbosity(args) > 0 else " (run with -v for where)")
        log.debug("where", exc_info=True)
        return EXIT_LAB if args.cmd == "boot" else 2


def _stdout_closed() -> bool:
    """Whether stdout is a pipe nobody reads any more (its reader closed it), rather than some
    other pipe or socket of the lab's that broke."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (OSError, ValueError):
        return False
