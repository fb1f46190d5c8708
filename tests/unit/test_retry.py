"""The lab's retry policies: what each retries, how often, and that the last error surfaces."""
import time

import pytest

from livepatch_lab.core import retry
from livepatch_lab.core.errors import BootError, GuestConnectionError, HostCommandError, InfraError, PortInUse


def run_policy(policy, outcomes):
    """Run ``policy`` over a function that raises/returns ``outcomes`` in turn, with no real sleep.

    Returns (result or raised exception, number of calls, the sleeps the policy asked for).
    """
    calls, sleeps = [], []
    policy.sleep = sleeps.append

    def fn():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    try:
        result = policy(fn)
    except BaseException as exc:  # noqa: BLE001 - handed back to the test
        result = exc
    return result, len(calls), sleeps


def hce(n=1):
    return HostCommandError("apt-get download", ["apt-get", "download", "x"], n, "Temporary failure")


def test_download_retries_a_host_command_error_three_times_in_all_backing_off_2_to_10s():
    errors = [hce(1), hce(2), hce(3)]
    result, calls, sleeps = run_policy(retry.download_policy(), errors)
    assert calls == 3
    assert result is errors[-1]   # the last real error, not tenacity's RetryError
    assert len(sleeps) == 2 and all(2 <= s <= 10 for s in sleeps)


def test_download_succeeds_on_a_later_try():
    result, calls, _ = run_policy(retry.download_policy(), [hce(), "ok"])
    assert (result, calls) == ("ok", 2)


def test_download_does_not_retry_other_errors():
    err = InfraError("disk full")
    result, calls, sleeps = run_policy(retry.download_policy(), [err])
    assert (result, calls, sleeps) == (err, 1, [])


def test_port_clash_retries_only_port_in_use_five_times():
    errors = [PortInUse(f"clash {i}") for i in range(5)]
    result, calls, sleeps = run_policy(retry.port_clash_policy(), errors)
    assert calls == 5 and result is errors[-1]
    assert sleeps == [0.1] * 4

    boot = BootError("kernel panic")
    result, calls, _ = run_policy(retry.port_clash_policy(), [boot])
    assert (result, calls) == (boot, 1)

    result, calls, _ = run_policy(retry.port_clash_policy(), [PortInUse("clash"), "machine"])
    assert (result, calls) == ("machine", 2)


def test_ssh_ready_retries_connection_errors_until_the_boot_deadline():
    policy = retry.ssh_ready_policy(0.6)
    calls = []

    def refuse():
        calls.append(time.monotonic())
        raise GuestConnectionError("ssh 127.0.0.1:40022: [Errno 111] Connection refused")

    start = time.monotonic()
    with pytest.raises(GuestConnectionError, match="Connection refused"):
        policy(refuse)
    took = time.monotonic() - start
    assert 0.6 <= took < 0.6 + 0.5
    assert 3 <= len(calls) <= 4   # every 0.25 s


def test_ssh_ready_gives_up_at_once_on_anything_but_a_connection_error():
    policy = retry.ssh_ready_policy(10)
    err = BootError("guest panic during boot")
    result, calls, sleeps = run_policy(policy, [err])
    assert (result, calls, sleeps) == (err, 1, [])


def test_ssh_ready_returns_once_sshd_answers():
    result, calls, sleeps = run_policy(retry.ssh_ready_policy(10),
                                       [GuestConnectionError("refused"), GuestConnectionError("reset"), "up"])
    assert (result, calls, sleeps) == ("up", 3, [0.25, 0.25])


def test_each_call_makes_a_fresh_policy():
    # a policy object carries state per use; the lab asks for a new one each time
    first, second = retry.download_policy(), retry.download_policy()
    assert second is not first


def test_the_iterating_form_the_session_uses_behaves_the_same():
    policy = retry.port_clash_policy()
    policy.sleep = lambda s: None
    tries = 0
    for attempt in policy:
        with attempt:
            tries += 1
            if tries < 3:
                raise PortInUse("Could not set up host forwarding rule")
    assert tries == 3

    policy = retry.port_clash_policy()
    policy.sleep = lambda s: None
    with pytest.raises(PortInUse, match="for good"):
        for attempt in policy:
            with attempt:
                raise PortInUse("for good")
