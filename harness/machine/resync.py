"""A resumed guest made current again: its clock and its randomness.

A guest restored from a snapshot wakes up where it was saved: its wall clock reads
the time it was saved at, and its kernel's random generator holds the saved state,
the same in every copy. (A guest that was paused to be saved is behind by the pause.)
The service and probe timings are read on the guest's clock, and copies must not
share their random numbers, so before the guest is handed out one perl process in
it (perl-base is Essential in Debian: every image has it)

- mixes 32 bytes from the host into the kernel's pool, credited (5.10 reseeds only
  from credited entropy: ``RNDADDENTROPY``), and reseeds the generator at once
  (``RNDRESEEDCRNG``): from here on the copies draw different numbers;
- answers time samples, the host's round trips as short as one write and one read,
  and steps the clock by the offset the shortest round trip measured
  (``clock_settime``: microseconds, where ``date -s`` would be off by its own exec).

What it cannot change: ``/proc/sys/kernel/random/boot_id`` is made on its first
read and then fixed (the lab reads it only after this, so copies differ; a guest
that read it before being saved keeps it); the network stack's secrets and the
running processes' memory layouts (init, sshd) are the saved ones.
"""
from __future__ import annotations

import logging
import secrets
import select
import time
from dataclasses import dataclass

from ..core.errors import GUEST, DeadlineExceeded, GuestCommandError

log = logging.getLogger(__name__)

SAMPLES = 3   # round trips; the shortest is kept (the first also waits for perl to start)
# x86_64: ioctl numbers of <linux/random.h>; syscalls 227/228 = clock_settime/clock_gettime
# (CLOCK_REALTIME = 0): no module to load (Time::HiRes alone costs ~0.5 s under TCG).
_PERL = r"""
$| = 1;
sub now { my $ts = pack("q q", 0, 0); syscall(228, 0, $ts) == 0 or die "clock_gettime: $!\n";
          my ($s, $ns) = unpack("q q", $ts); return $s + $ns / 1e9; }
open(my $rnd, "+<", "/dev/urandom") or die "/dev/urandom: $!\n";
my $seed = pack("H*", scalar <STDIN>);
ioctl($rnd, 0x40085203, pack("i i a*", 8 * length($seed), length($seed), $seed))
    or die "RNDADDENTROPY: $!\n";
ioctl($rnd, 0x5207, 0) or die "RNDRESEEDCRNG: $!\n";
while (my $line = <STDIN>) {
    if ($line =~ /^step (\S+)/) {
        my $t = now() + $1;
        my $s = int($t);
        syscall(227, 0, pack("q q", $s, int(($t - $s) * 1e9))) == 0 or die "clock_settime: $!\n";
        printf "%.6f\n", now();
        exit 0;
    }
    printf "%.6f\n", now();
}
"""
COMMAND = "exec perl -e '" + _PERL.replace("'", "'\\''") + "'"


@dataclass(frozen=True)
class Resync:
    offset: float        # guest clock - host clock before the step, seconds
    uncertainty: float   # half the round trip it was measured in
    seconds: float       # the whole exchange


def resync(channel, timeout: float, samples: int = SAMPLES) -> Resync:
    """Reseed the guest's random generator and step its clock to the host's."""
    start = time.monotonic()
    deadline = start + timeout
    chan = channel.open_stream(COMMAND, timeout)
    reader = _Lines(chan, deadline, timeout)
    try:
        chan.sendall(secrets.token_hex(32).encode() + b"\n")
        best = None
        rtts = []
        for _ in range(max(1, samples)):
            before = time.time()
            chan.sendall(b"t\n")
            guest = float(reader.line())
            after = time.time()
            rtts.append(round(after - before, 3))
            sample = (guest - (before + after) / 2, (after - before) / 2)
            if best is None or sample[1] < best[1]:
                best = sample
        assert best is not None
        chan.sendall(f"step {-best[0]:.6f}\n".encode())
        reader.line()
        log.debug("resync round trips %s, step done at %.3fs", rtts, time.monotonic() - start)
    finally:
        chan.close()
    result = Resync(best[0], best[1], time.monotonic() - start)
    log.info("guest clock stepped by %+.3fs (±%.3fs); randomness reseeded (%.2fs)",
             -result.offset, result.uncertainty, result.seconds)
    return result


class _Lines:
    """Lines from a guest command's stdout, each within the exchange's deadline."""

    def __init__(self, chan, deadline: float, timeout: float):
        self.chan, self.deadline, self.timeout = chan, deadline, timeout
        self.buf = b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("the guest's clock and randomness resync", self.timeout,
                                       self.buf.decode(errors="replace"), fault=GUEST)
            select.select([self.chan], [], [], min(left, 0.5))
            if self.chan.recv_ready():
                self.buf += self.chan.recv(4096)
            elif self.chan.exit_status_ready() or self.chan.closed:
                err = b""
                while self.chan.recv_stderr_ready():
                    err += self.chan.recv_stderr(4096)
                raise GuestCommandError("perl (clock and randomness resync)", self.chan.recv_exit_status(),
                                        self.buf.decode(errors="replace"), err.decode(errors="replace"))
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()
