"""A service that fails only while the rest of the host took the guest's CPU is not judged: the
verdict is an error naming the host. Anything else the patch did still fails it."""
import os
import threading
from pathlib import Path

from livepatch_lab.lab.judge import contention

from livepatch_lab.lab.run.record import Window
from livepatch_lab.machine import hostcpu
from tests.unit.test_verdict import Req, clean_record, judge


def samples(per_window):
    """Cumulative (t, host busy, guest run, guest wait) at each window edge of clean_record's
    windows (0, 10, 12, 20, 22, 26) from (others' cores, guest cores, guest wait s/s) a window."""
    edges = (0, 10, 12, 20, 22, 26)
    out, busy, run, wait = [(0.0, 0.0, 0.0, 0.0)], 0.0, 0.0, 0.0
    for (others, guest, w), a, b in zip(per_window, edges, edges[1:]):
        busy += (others + guest) * (b - a)
        run += guest * (b - a)
        wait += w * (b - a)
        out.append((float(b), busy, run, wait))
    return out


QUIET = (0.3, 1.5, 0.05)
BUSY = (1.4, 1.0, 0.5)
SLOWER_PATCHED = [Req(i * 0.1, i * 0.1 + (0.09 if 12 <= i * 0.1 < 20 else 0.02)) for i in range(260)]


def test_a_miss_while_other_processes_took_the_guests_cpu_is_an_error_naming_the_host():
    rec = clean_record(requests=SLOWER_PATCHED, host_cpu=samples([QUIET, QUIET, BUSY, QUIET, QUIET]))
    result = judge(rec)
    assert result.verdict == "error"
    assert result.reasons[0].check == "host"
    assert "other host processes used 1.40 cores against 0.30" in result.reasons[0].message
    assert "waited 0.50 s per second" in result.reasons[0].message
    assert any(r.check == "service" for r in result.reasons)   # the evidence stays
    assert result.measurements["host_cpu"]["patched"] == {"others_cores": 1.4, "guest_wait": 0.5}


def test_the_same_miss_on_a_quiet_host_fails_the_patch():
    rec = clean_record(requests=SLOWER_PATCHED, host_cpu=samples([QUIET] * 5))
    assert judge(rec).verdict == "fail"


def test_a_patch_that_burns_the_guests_cpu_is_not_excused_by_its_own_threads_waiting():
    own = (0.3, 2.0, 0.5)   # the guest's threads ran and waited more; the rest of the host did not
    rec = clean_record(requests=SLOWER_PATCHED, host_cpu=samples([QUIET, QUIET, own, QUIET, QUIET]))
    assert judge(rec).verdict == "fail"


def test_timeouts_and_seconds_of_latency_on_a_busy_host_are_not_judged_either():
    # seen on a real guest under single-threaded TCG with burners on the host: medians of 1 s
    stalled = [Req(i * 0.1, i * 0.1 + (1.1 if 12 <= i * 0.1 < 20 else 0.02)) for i in range(260)]
    stalled[150] = Req(15.0, None, None, "timeout")
    rec = clean_record(requests=stalled, host_cpu=samples([QUIET, QUIET, BUSY, QUIET, QUIET]))
    assert judge(rec).verdict == "error"


def test_another_failed_check_keeps_the_fail_and_the_host_note_is_not_a_reason_then():
    rec = clean_record(requests=SLOWER_PATCHED, host_cpu=samples([QUIET, QUIET, BUSY, QUIET, QUIET]),
                       taint_patched=0)
    result = judge(rec)
    assert result.verdict == "fail" and "host" not in {r.check for r in result.reasons}


def test_a_busy_host_alone_fails_nothing():
    assert judge(clean_record(host_cpu=samples([QUIET, QUIET, BUSY, QUIET, QUIET]))).verdict == "pass"


def test_without_samples_nothing_is_excused():
    assert judge(clean_record(requests=SLOWER_PATCHED)).verdict == "fail"
    rec = clean_record(requests=SLOWER_PATCHED, host_cpu=[(0.0, 0, 0, 0)])
    assert contention.share(rec, rec.windows["patched"]) is None and judge(rec).verdict == "fail"


def test_a_sample_reads_the_hosts_busy_time_and_the_threads_schedstat(tmp_path: Path):
    (tmp_path / "stat").write_text("cpu  100 0 50 900 10 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n")
    for tid, line in (("11", "2000000000 500000000 7"), ("12", "1000000000 250000000 3")):
        (tmp_path / "42" / "task" / tid).mkdir(parents=True)
        (tmp_path / "42" / "task" / tid / "schedstat").write_text(line + "\n")
    got = hostcpu.sample(42, 5.0, proc=tmp_path)
    tick = hostcpu._TICK
    assert got == hostcpu.CpuSample(5.0, 160 / tick, 3.0, 0.75)
    assert hostcpu.sample(None, 5.0, proc=tmp_path) is None
    assert hostcpu.sample(43, 5.0, proc=tmp_path) is None   # QEMU gone: no evidence, no error


def test_while_the_guest_runs_samples_come_often_so_a_one_second_transition_has_its_own():
    # samples only at step ends left a 1 s transition window (plus its tail) without evidence
    step_ends = [(0.0, 0, 0, 0), (10.0, 18, 15, 0.5), (10.8, 20, 16, 0.9), (40.0, 60, 45, 2.0)]
    dense = [(i * hostcpu.PERIOD, i * 2.0, i * 1.5, i * 0.05) for i in range(int(41 / hostcpu.PERIOD))]
    rec = clean_record(host_cpu=step_ends)
    w = Window("transition", 10.0, 11.8)
    assert contention.share(rec, w) is None
    rec = clean_record(host_cpu=dense)
    got = contention.share(rec, w)
    assert got is not None and abs(got.seconds - 1.8) <= 2 * hostcpu.PERIOD


def test_the_sampler_samples_this_process_until_the_block_ends_and_leaves_no_thread():
    got, enough = [], threading.Event()

    def sink(s):
        got.append(s)
        if len(got) >= 4:
            enough.set()

    with hostcpu.Sampler(os.getpid(), sink, period=0.01):
        assert enough.wait(10)
    n = len(got)
    assert [s.t for s in got] == sorted(s.t for s in got) and got[-1].guest_run >= got[0].guest_run
    assert not [t for t in threading.enumerate() if t.name == "host-cpu"]   # so no sample comes later
    with hostcpu.Sampler(None, sink, period=0.01):   # no local QEMU: nothing to read, no thread
        assert not [t for t in threading.enumerate() if t.name == "host-cpu"]
    assert len(got) == n
