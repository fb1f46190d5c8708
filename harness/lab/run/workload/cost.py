"""The cost workload: blocks of calls of a command, timed inside the guest.

Timed in the guest, not over SSH: a round trip costs 0.1-0.3 s under TCG and
varies more than the cost being measured. One bash process runs ``blocks``
blocks of ``repeat`` calls of the command (``eval``'d: its own forks are part of
what it costs, as for any caller), reading ``$EPOCHREALTIME`` (µs, no fork)
around each block, and prints one block's microseconds a line. The run's own
background work that comes and goes (stress-ng's phases, the probe's runs) is
paused (SIGSTOP) while the blocks run and resumed after, whatever happens:
measured here, with it running, the good patch's arms differed by +17 % on a
2-core TCG host, more than the 1 ms a call a patch was to be told by.
"""
from __future__ import annotations

from ....core.errors import GuestCommandError
from typing import Sequence

from . import detached
from .detached import q

BLOCKS = r'''
export LC_ALL=C
cmd=$1 repeat=$2 blocks=$3
cd / || exit 1
for ((b = 0; b < blocks; b++)); do
    t0=${EPOCHREALTIME/./}
    for ((i = 0; i < repeat; i++)); do eval "$cmd" </dev/null >/dev/null 2>&1; done
    t1=${EPOCHREALTIME/./}
    echo "@@block $((t1 - t0))"
done
'''


def command(cmd: str, repeat: int, blocks: int) -> str:
    return f"bash -c {q(BLOCKS)} cost {q(cmd)} {int(repeat)} {int(blocks)}"


def parse(text: str) -> list[float]:
    """Block times in seconds."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "@@block" and parts[1].isdigit():
            out.append(int(parts[1]) / 1e6)
    return out


def measure(guest, cmd: str, repeat: int, blocks: int, timeout: float, quiet: Sequence[str] = ()) -> list[float]:
    """Run the blocks, the detached workloads ``quiet`` paused meanwhile; their times (seconds),
    one a block."""
    line = command(cmd, repeat, blocks)
    if quiet:
        resume = detached.signal_script(quiet, "CONT")
        line = (f"trap {q(resume)} EXIT\n{detached.signal_script(quiet, 'STOP')}\n{line}")
    res = guest.run(line, timeout)
    times = parse(res.stdout)
    if not res.ok or len(times) != blocks:
        raise GuestCommandError(line, res.rc, res.stdout[-2000:], res.stderr[-2000:] or
                                f"{len(times)} of {blocks} cost blocks timed")
    return times
