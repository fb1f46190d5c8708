"""The workload in a real guest: service + stress + probe under open-loop load, and a stall seen.

One debian-6.1 boot (TCG here): the default server answering with /proc/cmdline
read per request, stress-ng at its default, a probe running ``cat /proc/cmdline``
every 0.5 s, and 20 requests/s from the host for 15 s, during which the server
is stopped (SIGSTOP) for one second. Run with ``-s`` to see the numbers.
"""
import statistics
import time
import urllib.request

import pytest

from livepatch_lab.core.errors import GuestCommandError
from livepatch_lab.lab.scenario import specs
from livepatch_lab.lab.run.workload import clock, httpload, probe, service, stats, stress

pytestmark = [pytest.mark.vm, pytest.mark.network]

DURATION = 15.0
STALL_AT = 7.0


def _ms(x):
    return "-" if x is None else f"{x * 1000:.0f} ms"


def test_service_stress_and_probe_under_load_and_a_stall_is_seen(lab_boot, tmp_path, no_leftovers):
    spec = specs.ServiceSpec(serve_file="/proc/cmdline")
    with lab_boot("debian-6.1", forward_ports=(spec.port,)) as guest:
        offset, uncertainty = clock.measure_clock(guest)
        cmdline = guest.run("cat /proc/cmdline", check=True).stdout
        t = time.monotonic()
        service.start(guest, spec)
        started_service = time.monotonic() - t
        url = f"http://127.0.0.1:{guest.host_port(spec.port)}/"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and resp.read().decode() == cmdline
        stress.start(guest, specs.StressSpec())
        probe.start(guest, specs.ProbeSpec("cat /proc/cmdline", interval=0.5))

        load = httpload.HttpLoad("127.0.0.1", guest.host_port(spec.port), spec, tmp_path / "requests.jsonl")
        t0 = time.time()
        load.start()
        time.sleep(STALL_AT)
        s0 = time.time()
        # the service's session: the wrapper shell and the server in it
        guest.run("p=$(cat /run/lab/service.pid) && kill -STOP -- -$p && sleep 1 && kill -CONT -- -$p",
                  check=True)
        s1 = time.time()
        time.sleep(max(0.0, t0 + DURATION - time.time()))
        t1 = time.time()
        requests = load.stop(spec.timeout + 2)
        stopped_load = time.time() - t1

        t = time.monotonic()
        samples = probe.stop(guest)
        stopped_probe = time.monotonic() - t
        t = time.monotonic()
        stress.stop(guest)
        stopped_stress = time.monotonic() - t
        service.stop(guest)
        left = guest.run("ps -eo args", check=True).stdout
        assert not [line for line in left.splitlines()   # a zombie awaits init's reaping: ended
                    if ("stress-ng" in line or "httpd.py" in line or "probe.sh" in line)
                    and "<defunct>" not in line], left

        # another service command (busybox httpd), and one that dies, in the same guest
        guest.run("mkdir -p /run/lab/www && echo static >/run/lab/www/index.html", check=True)
        service.start(guest, specs.ServiceSpec(command=f"busybox httpd -f -p {spec.port} -h /run/lab/www"))
        assert httpload.http_get("127.0.0.1", guest.host_port(spec.port), "/", 5.0) == 200
        service.stop(guest)
        with pytest.raises(GuestCommandError) as err:
            service.start(guest, specs.ServiceSpec(command="echo no such server >&2; exit 3"))
        assert err.value.rc == 3 and "no such server" in err.value.stdout

    whole = stats.window_stats(requests, t0, t1)
    before = stats.window_stats(requests, t0, s0)
    stall = stats.window_stats(requests, s0, s1 + 1.0)
    after = stats.window_stats(requests, s1 + 1.0, t1)
    lateness = max(r.sent - r.intended for r in requests)
    times = [s.t - offset for s in samples]           # on the host clock
    spacing = [b - a for a, b in zip(times, times[1:])]
    print(f"\nclock offset guest-host {offset:+.3f} s (±{uncertainty * 1000:.0f} ms); "
          f"service answered after {started_service:.1f} s")
    for name, st in (("whole", whole), ("before stall", before), ("stall +1 s", stall), ("after", after)):
        print(f"{name:13s} n={st.count} failed={st.failed} p50={_ms(st.p50)} p99={_ms(st.p99)} "
              f"max={_ms(st.max_latency)} longest gap={_ms(st.longest_gap)}")
    print(f"stall sent on host {s0 - t0:.2f}..{s1 - t0:.2f} s; worst send lateness {_ms(lateness)}; "
          f"load thread CPU {load.cpu_seconds:.2f} s over {t1 - t0:.1f} s "
          f"({load.cpu_seconds / (t1 - t0) * 100:.1f}% of a core); stop() took {stopped_load:.2f} s")
    print(f"probe: {len(samples)} samples, spacing min/median/max {min(spacing):.3f}/"
          f"{statistics.median(spacing):.3f}/{max(spacing):.3f} s; stop_probe {stopped_probe:.1f} s, "
          f"stop_stress {stopped_stress:.1f} s")

    # the load: on schedule, everything answered, and all of it logged
    assert abs(whole.count - DURATION * spec.rate) <= 2
    assert whole.failed == 0, [r for r in requests if not r.ok][:5]
    assert lateness < 0.25
    assert httpload.load_requests(tmp_path / "requests.jsonl") == requests
    # the stall: seen in latency and gap, measured from the intended send times
    assert stall.max_latency >= 0.9 and stall.longest_gap >= 0.9
    assert before.max_latency < stall.max_latency and after.max_latency < stall.max_latency
    assert before.longest_gap < stall.longest_gap
    # the probe: every 0.5 s through the whole run (a run that takes longer, as on a host
    # busy with other guests, delays the next), each run the kernel's cmdline
    assert len(samples) >= 0.6 * (t1 - t0) / 0.5
    assert all(s.rc == 0 and s.output == cmdline and s.t < s.t_end for s in samples)
    assert statistics.median(spacing) == pytest.approx(0.5, abs=0.1)
    assert t0 - 10 < times[0] < t0 + 1 and t1 - 1 < times[-1] < t1 + 15
