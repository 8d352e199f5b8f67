"""Where the parts meet: the worker protocol, estimates and the units registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.boot import EXPERIMENT as BOOT
from harness import units
from harness.experiment import ModelRow, probe_cases
from harness.protocol import Reply, Task
from harness.records import BatchRecord, Case, Settings, WorkerResult
from harness.samples import Estimate, estimate


def test_a_task_survives_the_trip_to_the_worker():
    cases = [Case("latency", "pipe", "same-cpu", 64),
             Case("faults", "pipe", "same-cpu", 0, k=4, metric="restarts", unit="count",
                  topology="probe", duration_s=0.04,
                  params=(("mode", "kill"), ("crash_rate", 50.0)))]
    task = Task(cases, Settings(workers=2), "ipcb-1-ab12cd-", "/dev/null", 1234, [0, 1])
    assert Task.from_json(task.to_json()) == task


def test_a_reply_carries_results_or_an_error():
    result = WorkerResult(10, [1.5, 2.5], [3.0], {"cpu_ns_per_op": 1.0},
                          [BatchRecord(0.0, 1e6, 500.0, 2, 0, 0, 0, 0, 1)] * 2)
    assert Reply.from_json(Reply([result]).to_json()) == Reply([result])
    assert Reply.from_json(Reply([], "OSError: no").to_json()).error == "OSError: no"


@pytest.mark.parametrize("text", ["", "not json", "[1]", '{"other": 1}'])
def test_anything_else_is_not_a_reply(text):
    with pytest.raises(ValueError):
        Reply.from_json(text)


def test_an_estimate_names_its_parts():
    found = estimate(2.0, np.array([1.0, 2.0, 3.0] * 100))
    assert found.value == 2.0 and found.low <= found.value <= found.high
    bare = Estimate.bare(5)
    assert bare.value == 5.0 and math.isnan(bare.low) and math.isnan(bare.high)


def test_only_costs_are_judged():
    assert units.is_cost("ns") and units.is_cost("bytes") and units.is_cost("ns/MiB")
    assert units.is_cost("")  # a run older than units: its values are ns
    for name in ("bytes-shared", "count", "ratio", "pp", "Hz", "furlongs"):
        assert not units.is_cost(name), name


def test_values_are_shown_in_their_unit():
    assert units.show(1500.0, "ns") == "1.500 us"
    assert units.show(2048.0, "bytes") == "2 KiB"
    assert units.show(-1.25, "pp") == "-1.25 pp"
    assert units.show(math.nan, "ns") == "-"
    assert units.show(3.0, "furlongs") == "3 furlongs"


def test_an_unknown_unit_is_refused_where_it_is_declared():
    with pytest.raises(ValueError, match="unknown unit 'furlongs'"):
        probe_cases(BOOT, "pipe", {"boot_total": "furlongs"}, start="fork")
    with pytest.raises(ValueError, match="unknown unit"):
        ModelRow("alpha", "pipe", 1.0, "parsecs", 0.0, 2.0, "made up")
