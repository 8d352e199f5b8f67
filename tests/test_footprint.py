"""Footprint: real servers are measured, their memory adds up, and the fit recovers M_k, M_s."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import psutil
import pytest

from bench.footprint import EXPERIMENT as FOOTPRINT
from bench.footprint import METRICS
from harness.experiment import probe_cases

from .helpers import run_worker


def cases(transport: str, n: int, start: str) -> list[dict]:
    return [asdict(c) for c in probe_cases(FOOTPRINT, transport, METRICS, k=n, start=start)]


@pytest.mark.parametrize("variant", ["fork", "exec"])
def test_servers_add_memory_and_leave_nothing(variant):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    one = run_worker(cases("pipe", 1, variant))
    four = run_worker(cases("pipe", 4, variant))
    for metric in METRICS:
        assert one[metric]["values"][0] > 0
    # Three more servers cost memory, both in private pages and in the PSS total.
    assert four["uss_total"]["values"][0] > one["uss_total"]["values"][0]
    assert four["pss_total"]["values"][0] > one["pss_total"]["values"][0]
    # PSS shares what USS leaves out: the total can only be larger.
    assert four["pss_total"]["values"][0] >= four["uss_total"]["values"][0]
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


def test_objects_in_process_start_no_server():
    result = run_worker(cases("call", 8, "object"))
    assert result["uss_client"]["values"] == result["uss_total"]["values"]


def synthetic(m_k: float, m_s: float, ns: list[int], workers: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for n in ns:
        for w in range(workers):
            for metric in ("pss_total", "uss_total"):
                rows.append({"experiment": "footprint", "transport": "pipe", "start": "fork",
                             "k": n, "metric": metric, "worker": w, "batch": 0,
                             "value": m_k + n * m_s + rng.normal(0, 20_000)})
    return pd.DataFrame(rows)


def test_fit_recovers_known_parameters():
    model = {m.parameter: m for m in FOOTPRINT.model(synthetic(30e6, 1.5e6, [1, 2, 4, 8, 16]))}
    assert model["footprint_M_k"].value == pytest.approx(30e6, rel=0.01)
    assert model["footprint_M_s"].value == pytest.approx(1.5e6, rel=0.01)
    assert model["footprint_M_s"].ci_low < 1.5e6 < model["footprint_M_s"].ci_high
    assert model["footprint_r2"].value > 0.99


@pytest.mark.parametrize("table, message", [
    ({"modes": ["clone"]}, "unknown mode 'clone'"),
    ({"servers": [4]}, "at least two server counts"),
    ({"transports": ["mq"], "modes": ["exec"]}, "exec'd servers speak pipe only"),
])
def test_bad_parameters_are_named(table, message):
    params = FOOTPRINT.params_type.from_table("experiments.footprint", {"servers": [1, 2], **table})
    with pytest.raises(ValueError, match=message):
        FOOTPRINT.plan(params)
