"""Statistics and model rows recover known values from synthetic samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.latency import EXPERIMENT as LATENCY
from bench.payload import EXPERIMENT as PAYLOAD
from harness.stats import ratio_of_medians, summarize


def synthetic(rng, center, workers=6, batches=10, spread=0.02, worker_spread=0.03):
    offsets = rng.normal(0, worker_spread, workers)
    values = np.concatenate([center * (1 + o + rng.normal(0, spread, batches)) for o in offsets])
    groups = np.repeat(np.arange(workers), batches)
    return values, groups


def test_summary_describes_the_values():
    rng = np.random.default_rng(1)
    values, groups = synthetic(rng, 5000.0)
    s = summarize(values, groups, "case")
    assert s.n == 60
    assert s.median == pytest.approx(np.median(values))
    assert s.p5 <= s.median <= s.p95 <= s.p99
    assert s.ci_low <= s.median <= s.ci_high


def test_summary_is_deterministic():
    values, groups = synthetic(np.random.default_rng(2), 100.0)
    assert summarize(values, groups, "x") == summarize(values, groups, "x")


def test_interval_covers_the_true_median_at_about_95_percent():
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(200):
        values, groups = synthetic(rng, 1000.0)
        s = summarize(values, groups, f"trial{trial}")
        covered += s.ci_low <= 1000.0 <= s.ci_high
    assert 0.85 <= covered / 200 <= 1.0


def test_ratio_of_medians_recovers_a_known_ratio():
    rng = np.random.default_rng(4)
    num, ng = synthetic(rng, 6000.0)
    den, dg = synthetic(rng, 40.0)
    value, low, high = ratio_of_medians(num, ng, den, dg, "r")
    assert low <= 150.0 <= high
    assert value == pytest.approx(150.0, rel=0.05)


def samples_frame(rows):
    return pd.DataFrame(rows, columns=["experiment", "transport", "placement", "payload_bytes",
                                       "k", "metric", "worker", "value"])


def test_copy_slope_recovers_a_known_slope():
    rng = np.random.default_rng(5)
    rows = []
    for size in (0, 64, 256, 1024, 4096, 16384, 65536, 1 << 20):
        values, groups = synthetic(rng, 5000 + 0.2 * size, spread=0.01, worker_spread=0.005)
        rows += [("payload", "pipe", "same-cpu", size, 1, "round_trip", g, v)
                 for v, g in zip(values, groups, strict=True)]
    [row] = PAYLOAD.model(samples_frame(rows))
    assert row.parameter == "copy_ns_per_byte"
    assert row.ci_low <= 0.2 <= row.ci_high
    assert row.ci_high - row.ci_low < 0.05


def test_latency_ratio_rows_pair_each_transport_with_call():
    rng = np.random.default_rng(6)
    rows = []
    for transport, center in (("call", 50.0), ("pipe", 5000.0), ("mq", 8000.0)):
        values, groups = synthetic(rng, center)
        rows += [("latency", transport, "same-cpu", 64, 1, "round_trip", g, v)
                 for v, g in zip(values, groups, strict=True)]
    model = {r.transport: r for r in LATENCY.model(samples_frame(rows))}
    assert set(model) == {"pipe", "mq"}
    assert model["pipe"].ci_low <= 100 <= model["pipe"].ci_high
    assert model["mq"].ci_low <= 160 <= model["mq"].ci_high
