"""The probe: a detached bash loop in the guest that runs a command every ``interval`` and logs
guest time, exit status and output."""
from __future__ import annotations

import base64
import binascii
import logging
import math
from dataclasses import dataclass
from typing import Optional

from ....core.errors import ConfigError, GuestCommandError
from ...scenario.specs import ProbeSpec
from . import detached
from .detached import q

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSample:
    t: float       # guest epoch seconds when the run started (microseconds)
    rc: int        # the command's exit status; 124 when it overran Timeouts.probe_command
    output: str    # stdout and stderr together, decoded as UTF-8 (undecodable bytes replaced)
    # When the run ended: under TCG one run can take a second, and its output may show
    # the state at any moment in [t, t_end], so a phase owns only runs wholly inside it.
    t_end: Optional[float] = None


# Under TCG, with the default stress, every exec costs ~100 ms, and
# `timeout sh -c CMD` + `base64` made a run of `cat /proc/cmdline` take 0.5 s
# (measured): too slow for a 0.5 s rhythm, and load of its own. So the loop is
# bash, and a run costs one fork, the command's own execs and one base64:
# * the command is sourced in a subshell, in a process group of its own (set -m),
#   killed whole if it runs past ``limit`` (then rc 124, like timeout(1));
# * the clock is $EPOCHREALTIME (the clock `date +%s.%N` reads, in µs), and the
#   waits are `read -t` on a FIFO: a run's end arrives there as "rc N STATUS",
#   and stop writes "wake" to end the wait for the next run early.
# Run n starts at start + n * interval; after a run that overruns the interval
# the next starts at once, and the rhythm restarts from there.
# One record per run: "<start> <rc> <base64 of stdout+stderr, one line> <end>" (epoch s).
PROBE_LOOP = r'''
export LC_ALL=C
d=$1 step=$2 limit=$3           # step and limit in microseconds
cd / || exit 1
set -m
rm -f "$d/probe.tick" && mkfifo "$d/probe.tick" && exec 3<>"$d/probe.tick" || exit 1
# wait_msg END: the next message on the FIFO into $msg; false once END (µs) has passed
wait_msg() {
    local now=${EPOCHREALTIME/./} w
    ((now < $1)) || return 1
    printf -v w '%d.%06d' $((($1 - now) / 1000000)) $((($1 - now) % 1000000))
    read -r -t "$w" -u 3 msg
}
n=0 woken=0 next=${EPOCHREALTIME/./}
while [[ -e $d/probe.run ]] && ((!woken)); do
    n=$((n + 1)) t=$EPOCHREALTIME rc=124
    ( (. "$d/probe.cmd"); echo "rc $n $?" >&3 ) </dev/null >"$d/probe.out" 2>&1 &
    c=$!
    while wait_msg $((${t/./} + limit)) || { kill -KILL -- "-$c" 2>/dev/null; false; }; do
        case $msg in
            "rc $n "*) rc=${msg##* }; break ;;
            wake) woken=1 ;;
        esac
    done
    te=$EPOCHREALTIME
    wait "$c" 2>/dev/null
    printf '%s %s %s %s\n' "$t" "$rc" "$(base64 -w0 <"$d/probe.out")" "$te" >>"$d/probe.log"
    next=$((next + step)) now=${EPOCHREALTIME/./}
    ((next > now)) || next=$now
    while ((!woken)) && wait_msg "$next"; do
        [[ $msg == wake ]] && woken=1
    done
done
'''


def start_script(spec: ProbeSpec, timeouts) -> str:
    """Shell that writes the loop and the command and starts the loop detached: run ``spec.command``
    every ``spec.interval`` s (bash sources it in a subshell); one record per run goes to
    probe.log. A run longer than ``Timeouts.probe_command`` is killed, with all it started,
    and recorded with rc 124."""
    if not spec.command:
        raise ConfigError("a probe needs a command", field="probe.command")
    step_us = max(1, round(spec.interval * 1e6))
    limit_us = max(1, round(timeouts.probe_command * 1e6))
    # printf is a builtin: no fork per file written (each costs tens of ms under TCG)
    return (f"mkdir -p {q(detached.GUEST_DIR)} && printf '%s' {q(PROBE_LOOP)} >{q(detached.path('probe.sh'))} && "
            f"printf '%s\\n' {q(spec.command)} >{q(detached.path('probe.cmd'))} && "
            f"rm -f {q(detached.path('probe.log'))} && : >{q(detached.path('probe.run'))} || exit 1\n"
            + detached.start_script("probe", f"exec bash {q(detached.path('probe.sh'))} "
                                             f"{q(detached.GUEST_DIR)} {step_us} {limit_us}"))


def start(guest, spec: ProbeSpec) -> None:
    detached.stop(guest, "probe", guest.timeouts.service_stop)   # a leftover loop
    guest.run(start_script(spec, guest.timeouts), check=True)


def read_log() -> str:
    """Shell that prints probe.log (for ``parse_log``)."""
    return f"cat {q(detached.path('probe.log'))}"


def stop(guest) -> list[ProbeSample]:
    """End the loop (after its current run, within ``Timeouts.service_stop``) and parse its log."""
    grace = guest.timeouts.service_stop
    # Let the loop end by itself after its current run (the write wakes its sleep);
    # only a run that hangs past the grace time is killed.
    detached.stop(guest, "probe", grace, before=f"""
        rm -f {q(detached.path('probe.run'))}
        echo wake 1<>{q(detached.path('probe.tick'))}
        gone && exit 0""")
    res = guest.run(read_log(), check=False)
    if not res.ok:
        raise GuestCommandError(read_log(), res.rc, res.stdout, res.stderr)
    return parse_log(res.stdout)


def parse_log(text: str) -> list[ProbeSample]:
    """Records of probe.log. A last line without its newline (the loop was killed while
    writing it) and malformed lines are skipped, the latter with a warning."""
    lines = text.split("\n")
    lines.pop()   # "" after a final newline, else an unfinished record
    samples, bad = [], 0
    for line in lines:
        parts = line.split(" ")
        try:
            t, rc = float(parts[0]), int(parts[1])
            raw = base64.b64decode(parts[2] if len(parts) > 2 else "", validate=True)
            t_end = float(parts[3]) if len(parts) > 3 else None
        except (IndexError, ValueError, binascii.Error):
            bad += 1
            continue
        if not math.isfinite(t):
            bad += 1
            continue
        samples.append(ProbeSample(t, rc, raw.decode("utf-8", errors="replace"), t_end))
    if bad:
        log.warning("probe log: %d malformed line(s) skipped", bad)
    return samples
