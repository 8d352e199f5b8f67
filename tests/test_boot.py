"""Boot: N real servers start and answer, every one is reaped, and the line fit recovers
b0 and b_s from samples built as a run writes them."""

from __future__ import annotations

import os
import resource
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from bench.boot import EXPERIMENT
from bench.probes.boot import METRICS, probe
from harness.experiment import Params, probe_cases
from harness.ipcnames import SHM_DIR
from harness.records import CaseResult, Settings, WorkerResult
from harness.results import RunData

from .helpers import run_worker

SETTINGS = Settings(workers=1, batches=2, warmups=1, batch_ms=5.0, timeout_s=10.0)
TRUTH = {"object": (5e3, 3e3), "fork": (2e5, 1.5e6), "exec": (2e6, 45e6)}  # (b0, b_s) in ns


def cases(transport: str, variant: str, n: int) -> list:
    return probe_cases(EXPERIMENT, transport, METRICS, k=n, start=variant, payload_bytes=64)


def test_probe_in_a_worker_measures_every_metric_and_leaves_nothing():
    prefix = f"ipcb-{os.getpid()}-test-"
    for transport, variant in (("call", "object"), ("pipe", "fork"), ("shm", "fork"),
                               ("uds", "fork"), ("pipe", "exec")):
        n = 3
        result = run_worker([asdict(c) for c in cases(transport, variant, n)])
        assert set(result) == set(METRICS)
        values = {metric: np.array(r["values"]) for metric, r in result.items()}
        for metric, got in values.items():
            assert len(got) == 2 and (got > 0).all(), (transport, variant, metric, got)
        # The parts lie inside the whole: per server, start plus first reply <= its share.
        np.testing.assert_allclose(values["boot_per_server"] * n, values["boot_total"])
        assert (values["boot_start"] + values["boot_first_reply"]
                <= values["boot_per_server"]).all()
    assert not [p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix)]
    assert not [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                if prefix in " ".join(p.info["cmdline"] or [])]


@pytest.mark.parametrize(("transport", "variant"), [("shm", "fork"), ("mq", "fork"),
                                                    ("pipe", "exec"), ("call", "object")])
def test_probe_reaps_every_server(names, no_child_left, transport, variant):
    affinity = os.sched_getaffinity(0)
    values = probe(cases(transport, variant, 3), SETTINGS, names)
    assert all(len(values[m]) == SETTINGS.batches for m in METRICS)
    assert not psutil.Process().children(recursive=True)
    assert os.sched_getaffinity(0) == affinity  # the probe pins itself, then lets go


def test_a_boot_that_fails_midway_still_reaps_what_it_started(names, no_child_left):
    # Room for a few servers' descriptors only: the boot runs out of them part way.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 20, hard))
    try:
        with pytest.raises(OSError):
            probe(cases("pipe", "fork", 40), Settings(batches=1, warmups=0), names)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not psutil.Process().children(recursive=True)
    assert len(os.listdir("/proc/self/fd")) <= open_now


def test_probe_refuses_a_variant_it_cannot_boot(names):
    with pytest.raises(ValueError, match="unknown start 'vfork'"):
        probe(cases("pipe", "vfork", 2), SETTINGS, names)
    with pytest.raises(ValueError, match="exec'd servers speak pipe only"):
        probe(cases("shm", "exec", 2), SETTINGS, names)


def params(**table) -> Params:
    return EXPERIMENT.params_type.from_table("experiments.boot", table)


def synthetic_samples(servers: tuple[int, ...], workers: int = 6) -> pd.DataFrame:
    """samples.csv as a run would write it, with boot_total = b0 + N b_s + 1% noise."""
    plan = EXPERIMENT.plan(params(transports=["call", "pipe"], modes=["fork", "exec"],
                                  servers=list(servers)))
    rng = np.random.default_rng(7)
    measured = []
    for case in plan.runnable:
        b0, b_s = TRUTH[str(case.param("start"))]
        total = b0 + case.k * b_s
        share = {"boot_total": total, "boot_per_server": total / case.k,
                 "boot_start": 0.9 * b_s, "boot_first_reply": 0.05 * b_s}[case.metric]
        measured.append(CaseResult(case, workers=[
            WorkerResult(1, list(share + rng.normal(0, 0.01 * b_s, 3)), [], {})
            for _ in range(workers)]))
    frame = RunData({}, measured).samples_frame()
    return frame


def test_model_recovers_b0_and_b_s(tmp_path: Path):
    path = tmp_path / "samples.csv"
    synthetic_samples((1, 2, 4, 8, 16)).to_csv(path, index=False)
    samples = pd.read_csv(path)
    model = EXPERIMENT.model(samples)
    rows = {(m.variant, m.parameter): m for m in model}
    assert {m.transport for m in model if m.variant == "object"} == {"call"}
    for variant, (b0, b_s) in TRUTH.items():
        slope, intercept = rows[(variant, "boot_b_s")], rows[(variant, "boot_b0")]
        assert slope.value == pytest.approx(b_s, rel=0.01)
        assert intercept.value == pytest.approx(b0, abs=0.05 * b_s)
        assert slope.ci_low <= b_s <= slope.ci_high
        assert slope.unit == intercept.unit == "ns"
        assert rows[(variant, "boot_r2")].value > 0.99

    tables = EXPERIMENT.tables(samples)
    table = tables["boot"]
    assert len(table) == 3 * 5 and set(METRICS) <= set(table.columns)
    exec16 = table[(table.start == "exec") & (table.servers == 16)].iloc[0]
    assert exec16.boot_total_ci_low <= exec16.boot_total <= exec16.boot_total_ci_high
    plots = EXPERIMENT.plots(samples, model, tables, tmp_path)
    assert [p.name for p in plots] == ["boot.png"] and plots[0].stat().st_size > 0

    [section] = EXPERIMENT.report(pd.DataFrame(), model, tables, ["boot.png"])
    by_variant = {row[1]: row for row in section.rows}
    assert list(by_variant) == ["object", "fork", "exec"]
    column = section.header.index("b_s / object")
    assert by_variant["fork"][column] == "500x"  # 1.5 ms over 3 us
    assert by_variant["exec"][column] == "15,000x"
    assert by_variant["object"][column] == "-"
    assert section.plots == ["boot.png"]


def test_one_server_count_cannot_be_fitted():
    with pytest.raises(ValueError, match="at least two server counts"):
        EXPERIMENT.plan(params(servers=[4, 4]))


def test_modes_left_out_mean_fork_and_exec():
    plan = EXPERIMENT.plan(params(transports=["pipe"], servers=[1, 2]))
    assert {c.param("start") for c in plan.runnable} == {"fork", "exec"}
    plan = EXPERIMENT.plan(params(transports=["call", "shm"], servers=[1, 2]))
    assert {c.param("start") for c in plan.runnable} == {"object", "fork"}


@pytest.mark.parametrize(("table", "message"), [
    ({"modes": ["fork", "spawn"]}, "unknown mode 'spawn'"),
    ({"transports": ["call", "shm"], "modes": ["exec"]}, "exec'd servers speak pipe only"),
    ({"servers": [0, 2]}, "servers: must be >= 1"),
    ({"k": [1, 2]}, "unknown key 'k'"),
])
def test_bad_suite_tables_are_refused(table, message):
    with pytest.raises(ValueError, match=message):
        EXPERIMENT.plan(params(**{"servers": [1, 2], **table}))


def test_plan_runs_exec_over_pipe_only_and_objects_over_call():
    plan = EXPERIMENT.plan(params(transports=["call", "pipe", "shm"], modes=["fork", "exec"],
                                  servers=[1, 2]))
    shapes = {(c.transport, c.param("start")) for c in plan.runnable}
    assert shapes == {("call", "object"), ("pipe", "fork"), ("shm", "fork"), ("pipe", "exec")}
    assert all(c.topology == "probe" and c.payload_bytes == 64 for c in plan.runnable)
    # One measurement per (transport, variant, N), one case per metric in it.
    assert len(plan.runnable) == len(shapes) * 2 * len(METRICS)


def test_more_servers_than_queues_allow_are_skipped_with_a_reason():
    plan = EXPERIMENT.plan(params(transports=["mq"], modes=["fork"], servers=[1, 5000]))
    skipped = {r.case.k for r in plan.skipped}
    assert 5000 in skipped and all(r.note for r in plan.skipped)
