"""Tail latency: every round trip recorded, the histogram agreeing with the raw values."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

from bench.probes.tail import DIGITS, HIGHEST_NS, LOWEST_NS, METRICS, clock_cost_ns
from bench.tail import EXPERIMENT as TAIL
from bench.tail import merged_histogram, percentile_curve
from harness.experiment import probe_cases
from harness.ipcnames import SHM_DIR

from .helpers import run_worker


def histogram_of(values: np.ndarray) -> HdrHistogram:
    histogram = HdrHistogram(LOWEST_NS, HIGHEST_NS, DIGITS)
    for value in values:
        histogram.record_value(int(value))
    return histogram


def test_the_histogram_agrees_with_the_raw_values():
    """Within HDR's 3 significant digits, at every percentile up to p99.99 and the max."""
    rng = np.random.default_rng(11)
    raw = np.round(rng.lognormal(np.log(4000), 0.3, 50_000) + rng.pareto(1.5, 50_000) * 100)
    histogram = histogram_of(raw)
    assert histogram.get_total_count() == len(raw)
    for q in (50, 90, 99, 99.9, 99.99):
        exact = np.percentile(raw, q, method="inverted_cdf")
        assert histogram.get_value_at_percentile(q) == pytest.approx(exact, rel=2e-3), q
    assert histogram.get_max_value() == pytest.approx(raw.max(), rel=1e-3)


def test_workers_histograms_merge_into_one_count():
    a, b = histogram_of(np.full(300, 1000)), histogram_of(np.full(700, 5000))
    rows = pd.DataFrame({"histogram": [a.encode().decode(), "", b.encode().decode()]})
    merged = merged_histogram(rows)
    assert merged is not None and merged.get_total_count() == 1000
    assert merged.get_value_at_percentile(25) == pytest.approx(1000, rel=1e-3)
    assert merged.get_value_at_percentile(90) == pytest.approx(5000, rel=1e-3)
    xs, ys = percentile_curve(merged)
    assert xs[0] == pytest.approx(np.log10(2)) and ys == sorted(ys)
    assert merged_histogram(pd.DataFrame({"histogram": ["", np.nan]})) is None


@pytest.mark.parametrize("transport", ["call", "pipe"])
def test_a_real_worker_times_every_round_trip_and_leaves_nothing(transport):
    before = {p.name for p in SHM_DIR.iterdir()}
    cases = probe_cases(TAIL, transport, METRICS, payload_bytes=64, round_trips=500)
    result = run_worker([asdict(c) for c in cases],
                        {"workers": 1, "batches": 3, "warmups": 0, "batch_ms": 5.0,
                         "timeout_s": 10.0})
    value = {metric: r["values"][0] for metric, r in result.items()}
    assert value["round_trips"] == 3 * 500  # every timed round trip, no warm-up one
    encoded = next(r["histogram"] for r in result.values() if r["histogram"])
    histogram = HdrHistogram.decode(encoded.encode("ascii"))
    assert histogram.get_total_count() == 3 * 500
    assert value["p50_ns"] == histogram.get_value_at_percentile(50)
    assert 0 < value["p50_ns"] <= value["p99_ns"] <= value["p9999_ns"]
    assert value["max_ns"] >= value["p9999_ns"] * (1 - 1e-3)
    assert 0 < value["clock_ns"] < value["p50_ns"] or transport == "call"
    assert {p.name for p in SHM_DIR.iterdir()} <= before


def test_the_clock_s_own_cost_is_a_positive_count_of_ns():
    cost = clock_cost_ns(1001)
    assert cost > 0 and cost == int(cost)  # the median of 1001 whole-ns gaps


def test_plan_names_placement_and_skips_what_the_machine_lacks(monkeypatch):
    from bench import timed
    from harness.cputopology import Topology

    vm = (Path(__file__).parent / "data" / "topology" / "kvm-2vcpu.txt").read_text()
    monkeypatch.setattr(timed, "this_machine", lambda: Topology.from_record(vm))
    params = TAIL.params_type.from_table("experiments.tail", {
        "transports": ["pipe"], "placements": ["same-cpu", "same-llc", "cross-package"]})
    plan = TAIL.plan(params)
    names = {c.name for c in plan.runnable}
    assert {"tail/pipe/k1/round_trips=20000/64B/p99_ns",
            "tail/pipe/same-llc/k1/round_trips=20000/64B/p99_ns"} <= names
    skipped = {r.case.name: r.note for r in plan.skipped}
    assert "one package" in skipped["tail/pipe/cross-package/k1/round_trips=20000/64B/p99_ns"]
    with pytest.raises(ValueError, match="round_trips: must be >= 100"):
        TAIL.params_type.from_table("experiments.tail", {"round_trips": 10})
