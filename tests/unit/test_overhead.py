"""What a patch costs a call: intervals that contain the truth, hold under drift, and a threshold
that cannot false-alarm."""
import numpy as np
import pytest

from livepatch_lab.lab.judge import overhead
from livepatch_lab.lab.judge import verdict as V
from livepatch_lab.lab.scenario.specs import Thresholds
from livepatch_lab.lab.run.workload import cost


def arms(before_ms, patched_ms, after_ms, n=20, noise=0.05, seed=1, repeat=10):
    """Block times (seconds a block of ``repeat`` calls) around per-call medians, with noise."""
    rng = np.random.default_rng(seed)
    def blocks(ms):
        return list((ms + rng.normal(0, noise, n)) * repeat / 1000.0)
    return {"before": blocks(before_ms), "patched": blocks(patched_ms), "after": blocks(after_ms)}


def test_a_known_cost_lies_in_its_interval_and_the_ratio_says_how_much():
    o = overhead.compare(arms(0.5, 1.5, 0.5), 10, "read -r l < /proc/cmdline")
    low, high = o["difference_ms"]["ci95"]
    assert low < 1.0 < high and high - low < 0.1
    assert o["ratio"]["ci95"][0] < 3.0 < o["ratio"]["ci95"][1]
    assert o["p_value"] < 1e-6
    assert o["blocks"] == {"before": 20, "patched": 20, "after": 20}
    assert o["median_ms"]["patched"] == pytest.approx(1.5, abs=0.05)
    assert len(o["per_call_ms"]["patched"]) == 20


def test_no_added_work_gives_an_interval_that_contains_zero():
    o = overhead.compare(arms(0.5, 0.5, 0.5, seed=7), 10, "x")
    low, high = o["difference_ms"]["ci95"]
    assert low < 0 < high and o["p_value"] > 0.01


def test_a_host_that_drifts_between_the_arms_widens_the_interval_instead_of_moving_it():
    # the unpatched arms 0.4 ms apart; the patched arm between them: no cost at all
    o = overhead.compare(arms(0.3, 0.5, 0.7, seed=3), 10, "x")
    low, high = o["difference_ms"]["ci95"]
    assert low < 0 < high
    assert o["drift_ms"]["estimate"] == pytest.approx(0.4, abs=0.05)


def test_the_interval_is_the_same_for_the_same_blocks():
    a = arms(0.5, 0.9, 0.5)
    first = overhead.compare(a, 10, "x")
    again = overhead.compare({arm: list(blocks) for arm, blocks in a.items()}, 10, "x")   # a fresh copy
    assert first is not None and again == first


def test_too_few_blocks_make_no_figure():
    assert overhead.compare({"before": [0.01] * 3, "patched": [0.02] * 3}, 10, "x") is None


def judged(measured_arms, limit) -> V.Verdict:
    """The verdict on a clean run whose cost workload timed ``measured_arms``, ``limit`` % allowed."""
    from tests.unit.test_verdict import clean_record, judge
    rec = clean_record(cost=measured_arms, cost_repeat=10, cost_workload="x")
    return judge(rec, thresholds=Thresholds(overhead_max_percent=limit))


def test_without_a_threshold_the_cost_is_reported_never_judged():
    v = judged(arms(0.5, 5.0, 0.5), None)
    assert v.verdict == "pass" and v.measurements["overhead"]["ratio"]["estimate"] == pytest.approx(10, rel=0.05)


def test_overhead_fails_only_when_the_whole_interval_is_above_the_limit():
    fail = judged(arms(0.5, 0.6, 0.5, noise=0.01), 10)    # +20 %, tight
    assert [r.check for r in fail.reasons] == ["overhead"]
    assert fail.reasons[0].message.startswith("the patch costs +20.")
    noisy = judged(arms(0.5, 0.6, 0.5, noise=0.4), 10)     # +20 %, but the interval reaches below +10 %
    assert noisy.verdict == "pass", noisy.reasons
    assert judged(arms(0.5, 0.52, 0.5, noise=0.01), 10).verdict == "pass"


def test_the_service_latency_difference_while_patched_has_an_interval():
    from tests.unit.test_verdict import clean_record, judge
    d = judge(clean_record()).measurements["service_difference_ms"]
    assert set(d) == {"patched"} and d["patched"]["ci95"][0] <= d["patched"]["estimate"] <= d["patched"]["ci95"][1]


def test_cost_blocks_are_parsed_from_the_guests_lines():
    assert cost.parse("@@block 1500\nnoise\n@@block 2500\n@@block x\n") == [0.0015, 0.0025]
    assert "cost 'cat /proc/cmdline' 20 5" in cost.command("cat /proc/cmdline", 20, 5)
