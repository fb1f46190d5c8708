"""Processes started detached in the guest, each in a session of its own, with its pid, log and
exit status under ``/run/lab``; stopped by signalling every process of that session."""
from __future__ import annotations

import logging
import shlex
from typing import Optional, Sequence

log = logging.getLogger(__name__)

GUEST_DIR = "/run/lab"          # pids, logs and scripts of everything started here


def q(s: str) -> str:
    return shlex.quote(s)


def path(name: str) -> str:
    return f"{GUEST_DIR}/{name}"


def start_script(name: str, command: str, env: Optional[dict[str, str]] = None) -> str:
    """Shell that runs ``command`` (a shell command line) detached, in a session of its own.

    ``<name>.pid`` holds the session leader's pid (= its session and process
    group), ``<name>.log`` the output; ``<name>.rc`` appears with the command's
    exit status when it ends by itself. Several such scripts can run in one round trip.
    """
    assignments = " ".join(f"{k}={q(v)}" for k, v in (env or {}).items())
    # The command runs in a subshell so that even `exit` or a failed `exec` leaves
    # the leader to record the status (newlines: the command may end in a comment).
    # The status file appears whole (rename), never empty to a reader that races it.
    rc = q(path(name + '.rc'))
    wrapped = f"(\n{command}\n)\necho $? >{rc}.tmp && mv {rc}.tmp {rc}"
    # Not a process group leader (no job control in a non-interactive shell), so
    # setsid(1) does not fork: $! is the new session's leader.
    return (f"mkdir -p {q(GUEST_DIR)} && cd / && rm -f {q(path(name + '.rc'))} || exit 1\n"
            f"{assignments} setsid sh -c {q(wrapped)} </dev/null >{q(path(name + '.log'))} 2>&1 &\n"
            f"echo $! >{q(path(name + '.pid'))}\n")


def start(guest, name: str, command: str, env: Optional[dict[str, str]] = None,
          stop_first: bool = True) -> None:
    """``start_script`` in the guest; a leftover of the same name is stopped first."""
    if stop_first:
        stop(guest, name, guest.timeouts.service_stop)
    guest.run(start_script(name, command, env), check=True)


def _session_sh(name: str) -> str:
    """Shell: ``p`` = the session of ``name``; ``alive`` while a process of it lives (a zombie,
    waiting for its reaper, does not count)."""
    return f"""
        p=; read -r p <{q(path(name + '.pid'))} 2>/dev/null
        alive() {{ [ -n "$p" ] && ps -o stat= --sid "$p" 2>/dev/null | grep -qv '^Z'; }}"""


def signal_script(names: Sequence[str], sig: str) -> str:
    """Shell that sends ``sig`` (STOP, CONT) to every process of the sessions of ``names`` that
    run; no fork per name but pkill's."""
    return "".join(f"{_session_sh(n)}\n        [ -n \"$p\" ] && pkill -{sig} -s \"$p\"\n" for n in names)


def stop(guest, name: str, grace: float, before: str = "") -> bool:
    """TERM every process of the session of ``name``, KILL them after ``grace`` s. True if
    it was running.

    ``before`` (shell) runs first in the same round trip, once the session is
    known to be alive; ``gone`` there waits up to ``grace`` for it to end.
    """
    ticks = max(1, int(grace * 10))
    script = f"""{_session_sh(name)}
        gone() {{ i=0; while alive && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; ! alive; }}
        [ -n "$p" ] || exit 3
        rm -f {q(path(name + '.pid'))}
        alive || exit 4
        {before}
        pkill -TERM -s "$p"
        gone && exit 0
        pkill -KILL -s "$p"
        exit 5"""
    res = guest.run(script, 2 * grace + guest.timeouts.command)
    if res.rc == 5:
        log.warning("%s did not end within %.1fs of SIGTERM: killed", name, grace)
    return res.rc in (0, 5)


def stop_all(guest, names: Sequence[str], grace: float, then: str = "") -> str:
    """End every named session at once, then run ``then`` (shell) in the same round trip and return
    what it printed. TERM each session's process group (a shell builtin), a moment, then one
    ``pkill -KILL`` for whatever is left in those sessions (other process groups included):
    nothing here needs a graceful end (a line a killed probe was writing is skipped by its
    parser), and every process listing costs a fork and a /proc scan that a guest busy with
    stress-ng under TCG pays seconds for (measured)."""
    pause = min(0.2, grace)
    sessions = " ".join(q(path(n + ".pid")) for n in names)
    script = f"""
        live=; for f in {sessions}; do p=; read -r p <"$f" 2>/dev/null && rm -f "$f" && [ -n "$p" ] && \
            live="${{live:+$live,}}$p" && kill -TERM -- "-$p" 2>/dev/null; done
        [ -n "$live" ] && sleep {pause:g} && pkill -KILL -s "$live" && echo "killed what was left" >&2
        {then}"""
    res = guest.run(script, grace + guest.timeouts.command)
    if "killed what was left" in res.stderr:
        log.debug("%s: killed what SIGTERM had not ended within %.1fs", ", ".join(names), pause)
    return res.stdout


def ended(guest, name: str, after: float = 0.0) -> Optional[str]:
    """None while ``name`` runs (``after`` s from now); else its exit status as text ("?" if
    it was killed). Shell builtins only: the session's leader (the wrapper that records the
    status) lives exactly as long as the command."""
    rc = q(path(name + '.rc'))
    res = guest.run(f"""{f"sleep {after:g}; " if after else ""}p=; read -r p <{q(path(name + '.pid'))} 2>/dev/null
        if [ -e {rc} ]; then read -r s <{rc}; echo "$s"
        elif [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo running
        elif [ -e {rc} ]; then read -r s <{rc}; echo "$s"   # it ended between the two looks
        else echo '?'; fi""", check=False)
    out = res.stdout.strip()
    return None if out == "running" else out or "?"


def tail(guest, name: str, lines: int = 30) -> str:
    return guest.run(f"tail -n {lines} {q(path(name + '.log'))}", check=False).stdout
