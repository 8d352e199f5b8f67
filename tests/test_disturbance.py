"""Disturbance: which batches are set aside, the reference adjustment, and checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from harness.counters import LifeWindow
from harness.cpucounters import CpuCounters
from harness.disturbance import LIMIT, mark, run_disturbance
from harness.experiment import FAILS, HOLDS, UNTESTABLE, judge
from harness.records import PROBE, BatchRecord, Case, CaseResult, WorkerResult
from harness.reference import PipeReference
from harness.results import RunData
from harness.samples import host_adjusted

CASE = Case("latency", "pipe", "same-cpu", 64)


def batch(foreign: float, cpus: int = 1, ref: float = 600.0) -> BatchRecord:
    """A 10-ms batch that lost ``foreign`` of its CPU time to other work."""
    window = 10e6
    return BatchRecord(0.0, window, ref, 2000, 0.0, 0, 0.0, foreign * window * cpus, cpus)


def worker(*shares: float, cpus: int = 1) -> WorkerResult:
    return WorkerResult(100, [1000.0] * len(shares), [], {}, [batch(s, cpus) for s in shares])


def test_batches_beyond_the_limit_are_set_aside():
    result = CaseResult(CASE, workers=[worker(0, 0.001, 0.5), worker(0.03, 0, 0.019)])
    mark(result)
    flags = [[b.disturbed for b in w.batches] for w in result.workers]
    assert flags == [[False, False, True], [True, False, False]]
    assert [len(w.kept()) for w in result.workers] == [2, 2]
    assert [len(w.kept(keep_disturbed=True)) for w in result.workers] == [3, 3]


def test_a_worker_disturbed_throughout_drops_out():
    result = CaseResult(CASE, workers=[worker(0, 0), worker(0.4, 0.3), worker(0, 0.01)])
    mark(result)
    assert [len(w.kept()) for w in result.workers] == [2, 0, 2]
    assert result.note == ""


def test_a_case_disturbed_throughout_keeps_every_batch_and_says_so():
    result = CaseResult(CASE, workers=[worker(0.3, 0.5), worker(0.4, 0.3), worker(0, 0.2)])
    mark(result)
    assert all(len(w.kept()) == 2 for w in result.workers)
    assert "too disturbed" in result.note


def test_several_cpus_count_from_the_cases_own_floor():
    """Across CPUs idle waits and vCPU wake-ups land in the share: 10% is this case's
    quiet level, and only what rises 2 points above it is disturbance."""
    shares = [0.10, 0.101, 0.105, 0.11, 0.115, 0.13, 0.10, 0.102, 0.104, 0.103]
    result = CaseResult(CASE, workers=[worker(*shares, cpus=2)])
    mark(result)
    assert [b.disturbed for b in result.workers[0].batches] == [s > 0.10 + LIMIT for s in shares]


def test_run_disturbance_sums_what_the_batches_lost():
    result = CaseResult(CASE, workers=[worker(0, 0.5), worker(0, 0.1)])
    mark(result)
    found = run_disturbance([result])
    assert (found.batches, found.disturbed) == (4, 2)
    assert found.foreign_share == pytest.approx(0.15)
    assert "2 of 4 timed batches (50.0%)" in found.summary()


def test_host_adjustment_takes_each_workers_spell_out():
    """Worker 1 ran in a spell 30% slower, its reference too: scaled to the run's
    median reference, both workers give the same value; probe rows are left alone."""
    rows = []
    for w, spell in enumerate((1.0, 1.3)):
        for b in range(3):
            rows.append({"experiment": "latency", "transport": "pipe", "worker": w, "batch": b,
                         "value": 5000 * spell, "ref_ns": 600 * spell})
    rows.append({"experiment": "boot", "transport": "pipe", "worker": 0, "batch": 0,
                 "value": 7.0, "ref_ns": np.nan})
    adjusted = host_adjusted(pd.DataFrame(rows))
    timed = adjusted[adjusted.experiment == "latency"]
    # equal to rounding: the scale is exp(slope * log ratio)
    assert timed.value.to_numpy() == pytest.approx([5000 * 1.15] * 6, rel=1e-9)  # the median spell
    assert adjusted[adjusted.experiment == "boot"].value.iloc[0] == 7.0


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (0.01, 0.08, HOLDS), (0.12, 0.30, FAILS), (0.05, 0.14, UNTESTABLE),
    (math.nan, math.nan, UNTESTABLE), (-0.15, -0.12, FAILS)])
def test_a_check_holds_fails_or_cannot_tell(low, high, verdict):
    assert judge(low, high, -0.10, 0.10) == verdict


def test_the_reference_and_the_cpu_counters_read_this_machine():
    with PipeReference(loops=200) as reference:
        assert 0 < reference.measure() < 1e6
    cpu = sorted(os.sched_getaffinity(0))[0]
    counters = CpuCounters([cpu])
    try:
        first = counters.read()
        sum(range(200_000))
        later = counters.read() - first
    finally:
        counters.close()
    assert counters.scope in ("cpus", "system")
    assert later.steal_ns >= 0 and later.idle_ns >= 0 and later.switches >= 0


PROBE_CASE = Case("layers", "call", "same-cpu", 0, metric="write_ns", topology=PROBE)


def probe_worker(share: float) -> WorkerResult:
    return WorkerResult(1, [5.0, 6.0], [], {}, [], foreign_share=share)


def test_a_probes_disturbed_worker_is_set_aside_whole():
    result = CaseResult(PROBE_CASE, workers=[probe_worker(s) for s in (0.08, 0.10, 0.45)])
    mark(result)
    assert [w.disturbed for w in result.workers] == [False, False, True]
    assert [len(w.kept()) for w in result.workers] == [2, 2, 0]
    assert [len(w.kept(keep_disturbed=True)) for w in result.workers] == [2, 2, 2]
    assert "1 of 3 workers set aside" in result.note
    again = WorkerResult.from_dict(result.workers[2].to_dict())
    assert again.disturbed and again.foreign_share == 0.45


def test_a_probe_disturbed_throughout_keeps_its_workers_and_says_so():
    result = CaseResult(PROBE_CASE, workers=[probe_worker(s) for s in (0.05, 0.4, 0.6)])
    mark(result)
    assert not any(w.disturbed for w in result.workers)
    assert "too disturbed to set workers aside" in result.note


def test_a_probes_set_aside_worker_survives_its_run_folder(tmp_path):
    result = CaseResult(PROBE_CASE, workers=[probe_worker(s) for s in (0.0, 0.01, 0.5, 0.02)])
    mark(result)
    run = RunData({"machine": {"machine_id": "m"}}, [result])
    run.save(tmp_path)
    [row] = run.results_frame().to_dict("records")
    assert row["n"] == 6 and row["batches_disturbed"] == 2
    back = RunData.load(tmp_path)
    assert [w.disturbed for w in back.cases[0].workers] == [False, False, True, False]
    assert back.results_frame()["n"].tolist() == [6]


def test_a_worker_life_window_sees_work_that_is_not_ours():
    """A CPU-bound process we have not reaped is other work on the CPU it runs on (other
    load on a busy machine is other work too: the share only grows with it)."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    hog = subprocess.Popen([sys.executable, "-c", f"import os, time\nos.sched_setaffinity(0, "
                            f"[{cpu}])\nend = time.time() + 1.5\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # it has started and pinned itself
        window = LifeWindow([cpu])
        try:
            time.sleep(0.5)
            share = window.foreign_share()
        finally:
            window.close()
    finally:
        hog.kill()
        hog.wait()
    assert share > 0.5
