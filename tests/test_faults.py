"""Faults: crashed servers are detected and restarted, no request is lost, nothing is left.

The injection runs are real: a worker process forks stateful servers, kills
them (or makes them raise) as a Poisson process, and checks every reply.
The formulas and the model are checked on known numbers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from time import monotonic_ns

import numpy as np
import pandas as pd
import psutil
import pytest

from bench.faults import EXPERIMENT, METRICS, availability, improvement, mean_estimate
from bench.probes.faults import FaultLoad, exactly_once
from harness.records import Case
from harness.supervisor import Supervisor
from servers.faults import (
    APPLY,
    BAD,
    OK,
    QUERY,
    RECORD,
    RECORDS_AT,
    REPLAYED,
    RESTORE,
    Codec,
    InjectedFault,
    Service,
    StateArea,
    TornState,
    advance,
    unpack,
)

from .conftest import shm_objects
from .helpers import ipcbench, run_worker, write_suite

SETTINGS = {"workers": 1, "batches": 2, "warmups": 0, "batch_ms": 5.0, "timeout_s": 5.0}


def marked(mark: str) -> list[int]:
    """Processes of ours whose environment carries ``mark``: the worker's servers too."""
    found = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.info["uids"].real == os.getuid() and proc.environ().get(
                    "FAULTS_TEST_MARK") == mark:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found


def inject(variant: str, transport: str = "pipe", servers: int = 3,
           duration_s: float = 0.2, rate: float = 30.0) -> dict[str, list[float]]:
    """One probe measurement in a real worker; asserts it left no process or IPC object."""
    prefix = f"ipcb-{os.getpid()}-faults-{uuid.uuid4().hex[:6]}-"
    mark = uuid.uuid4().hex
    cases = [{"experiment": "faults", "transport": transport, "placement": "same-cpu",
              "payload_bytes": 64, "k": servers, "topology": "probe", "metric": metric,
              "unit": unit, "duration_s": duration_s,
              "params": [["mode", variant], ["crash_rate", rate]]}
             for metric, unit in METRICS.items()]
    results = run_worker(cases, SETTINGS, prefix, env={**os.environ, "FAULTS_TEST_MARK": mark})
    assert not marked(mark), "a server outlived its worker"
    assert not shm_objects(prefix)
    return {metric: r["values"] for metric, r in results.items()}


@pytest.mark.parametrize(("variant", "transport"),
                         [("kill", "pipe"), ("raise", "pipe"), ("kill", "uds")])
def test_every_crash_is_restarted_and_every_request_answered_once(variant, transport):
    values = inject(variant, transport)
    batches = SETTINGS["batches"]
    crashes = values["crashes_injected"]
    assert len(crashes) == batches and all(c >= 1 for c in crashes)  # a quiet batch forces one
    assert values["restarts"] == crashes
    # the crashes the renewal model is given are those inside the window, down within it
    assert all(0 <= w <= c for w, c in zip(values["window_crashes"], crashes, strict=True))
    assert all(0 <= down <= 1e9 * t for down, t in zip(values["downtime_ns"],
                                                       values["window_s"], strict=True))
    for name in ("lost_requests", "duplicate_requests", "corrupt_replies"):
        assert values[name] == [0] * batches, name
    retried, dedup = values["retried_requests"], values["deduplicated_retries"]
    assert all(r <= c for r, c in zip(retried, crashes, strict=True))
    if variant == "raise":  # the bug fires after the commit, before the reply: always a replay
        assert retried == crashes and dedup == crashes
    assert all(d <= r for d, r in zip(dedup, retried, strict=True))
    assert all(n > 0 for n in values["requests_answered"])
    for name in ("restart_d", "restart_detect", "restart_spawn", "restart_reply"):
        assert len(values[name]) == sum(crashes), name
        assert all(v > 0 for v in values[name]), name
    parts = zip(values["restart_detect"], values["restart_spawn"], values["restart_reply"],
                strict=True)
    assert [sum(p) for p in parts] == values["restart_d"]
    assert len(values["reboot_t_r"]) == batches
    # Counts add up; how many probes were in time depends on the machine's load.
    assert all(0 <= p <= n for p, n in zip(values["probes_available"], values["probes"],
                                           strict=True))
    assert values["availability_measured"] == [
        p / n for p, n in zip(values["probes_available"], values["probes"], strict=True)]
    for name in ("availability_measured", "availability_predicted",
                 "availability_deadline_only"):
        assert all(0 <= a <= 1 for a in values[name]), name
    # Every stale probe is also unavailable; the deadline-only count can only be higher.
    assert all(m <= d for m, d in zip(values["availability_measured"],
                                      values["availability_deadline_only"], strict=True))


def test_exactly_once_check_catches_lost_and_duplicated_requests():
    assert exactly_once([1, 2, 3], [1, 2, 3]) == (0, 0)
    assert exactly_once([1, 2, 3], [1, 3]) == (1, 0)  # 2 answered, never applied
    assert exactly_once([1, 2, 3], [1, 2, 2, 3]) == (0, 1)  # 2 applied twice
    assert exactly_once([1, 2, 3], [1, 2, 3, 9]) == (0, 1)  # applied, never answered
    assert exactly_once([1, 2, 3, 4], [1, 1, 1, 3]) == (2, 2)
    assert exactly_once([], []) == (0, 0)


def apply(codec: Codec, service: Service, ident: int, payload: bytes) -> tuple[int, ...]:
    head = unpack(service.handle(bytes(codec.pack(ident, APPLY, 0, 0, payload))))
    assert head is not None
    return head


def test_state_survives_the_process_and_a_retry_is_not_applied_twice(names):
    codec, message = Codec(16), b"m" * 16
    area = StateArea(names("shm", "faults-test"), log_capacity=8)
    assert not shm_objects(names.prefix)  # unlinked at once: nothing can leak
    try:
        first = Service(16, area)
        heads = [apply(codec, first, ident, message) for ident in (1, 2, 3)]
        assert [h[1] for h in heads] == [OK] * 3 and heads[-1][3] == 3
        acc = 0
        for ident in (1, 2, 3):
            acc = advance(acc, codec.pack(ident, APPLY, 0, 0, message))
        assert heads[-1][2] == acc
        first.plant(0, None)
        with pytest.raises(InjectedFault):  # applied and committed, then no reply
            apply(codec, first, 4, message)

        second = Service(16, area)  # the replacement, forked into the same slot
        assert second.since >= first.since
        retry = apply(codec, second, 4, message)
        assert retry[1] == REPLAYED and retry[3] == 4  # answered from the state, not applied
        assert retry[4] == second.since
        assert apply(codec, second, 5, message)[1:4:2] == (OK, 5)
        assert area.load()[0] == 5 and area.load()[2] == 5
        assert area.applied(0, 5) == [1, 2, 3, 4, 5]
        assert exactly_once([1, 2, 3, 4, 5], area.applied(0, 5)) == (0, 0)
        with pytest.raises(RuntimeError, match="the state log holds 8"):
            area.applied(0, 9)

        # SIGKILL in the middle of a commit: the spare record half written, no flip.
        committed = area.load()
        spare = RECORDS_AT + (1 - area.map[0]) * RECORD.size
        area.map[spare:spare + 5] = b"\xff" * 5
        assert area.load() == committed
        area.map[0] = 1 - area.map[0]  # a flip to a torn record would be caught
        with pytest.raises(TornState):
            area.load()
        area.wipe()
        assert area.load() == (0, 0, 0)
        third = Service(16, area)
        assert unpack(third.handle(bytes(codec.pack(6, RESTORE, acc, 3))))[1:4] == (OK, acc, 3)
        assert unpack(third.handle(bytes(codec.pack(7, QUERY, 0, 0))))[2:4] == (acc, 3)
        corrupt = bytearray(codec.pack(8, APPLY, 0, 0, message))
        corrupt[40] ^= 1
        assert unpack(third.handle(bytes(corrupt)))[1] == BAD
    finally:
        area.close()


def test_formulas_on_known_numbers():
    assert availability(0.0, 5.0) == 1.0
    assert availability(0.5, 2.0) == pytest.approx(0.5)
    assert availability(20.0, 0.002) == pytest.approx(1 / 1.04)
    # The seed's example: t_r = 60 s, t_s = 1.2 s.
    assert improvement(1.0, 60.0, 1.2) == pytest.approx(61 / 2.2)
    assert improvement(0.0, 60.0, 1.2) == 1.0
    assert improvement(1e9, 60.0, 1.2) == pytest.approx(50.0, rel=1e-6)


def synthetic(rate: float = 20.0, crashes: int = 5, probes: int = 100) -> pd.DataFrame:
    """Four workers of two windows of 0.25 s, each with ``crashes`` crashes down 2 ms
    each: lambda = crashes / 0.24 s of up time, whatever ``rate`` was configured."""
    rows = []
    for worker in range(4):
        per_metric = {
            "restart_d": [1e6, 3e6] * (worker + 1),  # mean 2 ms, uneven counts per worker
            "restart_detect": [0.5e6, 0.5e6], "restart_spawn": [1.4e6, 1.4e6],
            "restart_reply": [0.1e6, 0.1e6], "reboot_t_r": [8e6, 8e6],
            "availability_measured": [0.95, 0.97], "availability_predicted": [0.96, 0.96],
            "availability_deadline_only": [0.97, 0.99],
            "crashes_injected": [5, 6], "restarts": [5, 6], "retried_requests": [5, 6],
            "deduplicated_retries": [5, 6], "requests_answered": [1000, 1000],
            "lost_requests": [0, 0], "duplicate_requests": [0, 0], "corrupt_replies": [0, 0],
            "probes": [probes, probes],
            "probes_available": [0.95 * probes, 0.97 * probes],
            "window_crashes": [crashes, crashes], "window_s": [0.25, 0.25],
            "downtime_ns": [crashes * 2e6, crashes * 2e6],
        }
        for metric, values in per_metric.items():
            for batch, value in enumerate(values):
                rows.append({"experiment": "faults", "transport": "pipe", "mode": "kill",
                             "k": 4, "crash_rate": rate, "metric": metric, "worker": worker,
                             "batch": batch, "value": float(value)})
    return pd.DataFrame(rows)


def test_a_run_with_few_crashes_cannot_test_availability():
    """One crash and ten probes a window: the gap's interval is wider than the 2 points
    the model is held to, so the check says untestable, not holds or fails."""
    samples = synthetic(crashes=1, probes=10)
    rng = np.random.default_rng(4)
    hit = samples.metric == "probes_available"
    samples.loc[hit, "value"] = rng.integers(6, 11, hit.sum()).astype(float)
    gap = {m.parameter: m for m in EXPERIMENT.model(samples)}["availability_gap_pp"]
    assert gap.check == "untestable" and gap.ci_high - gap.ci_low > 4


def test_model_rows_from_synthetic_samples():
    samples = synthetic()
    model = {m.parameter: m for m in EXPERIMENT.model(samples)}
    assert model["restart_d"].value == pytest.approx(2e6)
    assert model["restart_d"].ci_low <= 2e6 <= model["restart_d"].ci_high
    assert model["restart_d_median"].value == pytest.approx(2e6)
    assert model["reboot_t_r"].value == pytest.approx(8e6)
    realized = 5 / 0.24  # crashes over the time up, not the configured 20/s
    assert model["crash_rate_realized"].value == pytest.approx(realized)
    assert model["availability_measured"].value == pytest.approx(0.96)
    assert model["availability_predicted"].value == pytest.approx(1 / (1 + realized * 2e-3))
    assert model["availability_predicted_configured"].value == pytest.approx(1 / 1.04)
    gap = model["availability_gap_pp"]
    assert gap.value == pytest.approx(100 * (0.96 - 1 / (1 + realized * 2e-3)))
    assert gap.ci_low <= gap.value <= gap.ci_high and gap.events == 40
    assert gap.check == "holds"  # every worker agrees: a narrow interval within 2 points
    assert model["improvement_I"].value == pytest.approx((1 + realized * 8e-3)
                                                         / (1 + realized * 2e-3))
    assert model["crashes_injected"].value == 44
    assert model["lost_requests"].value == 0
    assert model["deduplicated_retries"].value == 44
    assert model["availability_deadline_only"].value == pytest.approx(0.98)
    assert {m.variant for m in model.values()} == {"kill"}

    tables = EXPERIMENT.tables(samples)
    curve = tables["faults_availability"]
    assert len(curve) == 16 and curve.lambda_per_s.min() == pytest.approx(1e-3)
    at = curve.iloc[(curve.lambda_per_s - 10).abs().argmin()]
    assert at.A_microkernel == pytest.approx(1 / (1 + at.lambda_per_s * 0.002))
    assert at.A_monolithic == pytest.approx(1 / (1 + at.lambda_per_s * 0.008))
    assert pytest.approx(at.A_microkernel / at.A_monolithic) == at.I
    assert tables["faults"].crashes_injected.item() == 44


def test_mean_interval_resamples_workers():
    rows = pd.DataFrame({"value": [1.0, 1.0, 1.0, 5.0], "worker": [0, 0, 0, 1]})
    value, low, high = mean_estimate(rows, "t")
    assert value == 2.0
    assert low == pytest.approx(1.0) and high == pytest.approx(5.0)
    with pytest.raises(ValueError, match="no samples"):
        mean_estimate(rows.iloc[:0], "t")


def test_plan_cases_and_bad_input():
    params = EXPERIMENT.params_type(transports=("pipe",), modes=("kill", "raise"), servers=(2, 4),
                              crash_rate=10.0, duration_s=0.3)
    cases = EXPERIMENT.plan(params).runnable
    assert len(cases) == 2 * 2 * len(METRICS)
    assert {(c.param("mode"), c.k) for c in cases} == {
        (m, n) for m in ("kill", "raise") for n in (2, 4)}
    assert {c.param("crash_rate") for c in cases} == {10.0}
    assert {c.duration_s for c in cases} == {0.3}
    assert {c.transport for c in EXPERIMENT.plan(EXPERIMENT.params_type()).runnable} == {"pipe"}
    bad = [({"modes": ("explode",)}, "unknown mode 'explode'"),
           ({"transports": ("mq",)}, "'mq' cannot carry"),
           ({"crash_rate": 1000.0}, "crash_rate: at most 100"),
           ({"payload_bytes": (5000,)}, "5000 B is more than one atomic"),
           ({"duration_s": 0.01}, "duration_s: at least 0.04 s")]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            EXPERIMENT.plan(EXPERIMENT.params_type(**change))


def test_run_writes_table_plot_and_report(tmp_path: Path):
    suite = write_suite(tmp_path, """
[settings]
workers = 2
batches = 1
timeout_s = 5.0

[experiments.faults]
transports = ["pipe"]
modes = ["kill", "raise"]
servers = [2]
duration_s = 0.1
crash_rate = 30.0
""")
    done = ipcbench("run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-history")
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "run"
    for name in ("faults.csv", "faults_availability.csv", "faults.png"):
        assert (run / name).exists(), name
    model = pd.read_csv(run / "model.csv")
    lost = model[model.parameter == "lost_requests"]
    assert sorted(lost.variant) == ["kill", "raise"] and (lost.value == 0).all()
    crashes = model[model.parameter == "crashes_injected"].value.to_numpy()
    restarts = model[model.parameter == "restarts"].value.to_numpy()
    assert np.array_equal(crashes, restarts) and (crashes >= 2).all()
    dedup = model[model.parameter == "deduplicated_retries"]
    assert (dedup[dedup.variant == "raise"].value > 0).all()
    assert (model[model.parameter == "duplicate_requests"].value == 0).all()
    assert "Faults: A = 1/(1 + lambda d)" in (run / "report.md").read_text()


def test_leftover_check_sees_a_marked_process():
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "FAULTS_TEST_MARK": mark})
    try:
        # /proc/PID/environ can read empty for a moment after exec on a busy machine
        deadline = monotonic_ns() + 5_000_000_000
        while marked(mark) != [proc.pid] and monotonic_ns() < deadline:
            time.sleep(0.01)
        assert marked(mark) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert not marked(mark)


def test_a_death_nobody_injected_fails_the_probe_and_leaves_nothing(names, no_child_left):
    case = Case("faults", "pipe", "same-cpu", 64, k=3, metric="", topology="probe",
                duration_s=0.1, params=(("mode", "kill"), ("crash_rate", 10.0)))
    with pytest.raises(RuntimeError, match="died with no crash injected"), \
            Supervisor(names, "same-cpu", timeout=5.0) as sup:
        load = FaultLoad(sup, case, 5.0)
        try:
            load.boot()
            load.run(monotonic_ns() + 20_000_000)  # load, no crash
            os.kill(load.slots[1].pid, signal.SIGKILL)
            load.run(monotonic_ns() + 5_000_000_000)
        finally:
            sup.stop()
            load.close()
    assert not sup.servers and not sup.channels
    assert all(slot.pidfd == -1 for slot in load.slots)
