"""Faults: crashed servers are detected and restarted, no request is lost, nothing is left.

The injection runs are real: a worker process forks stateful servers, kills
them (or makes them raise) as a Poisson process, and checks every reply.
The formulas and the model are checked on known numbers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from bench.faults import EXPERIMENT, METRICS, availability, improvement, mean_estimate
from bench.probes.faults import FaultLoad
from harness.experiment import ExperimentParams
from harness.records import Case
from harness.supervisor import Supervisor
from servers.faults import (
    APPLY,
    BAD,
    OK,
    QUERY,
    RESTORE,
    Codec,
    InjectedFault,
    Service,
    advance,
    unpack,
)

from .conftest import shm_objects
from .helpers import ipcbench, write_suite

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
              "unit": unit, "variant": variant, "level": rate, "duration_s": duration_s}
             for metric, unit in METRICS.items()]
    task = {"cases": cases, "settings": SETTINGS, "prefix": prefix, "journal": os.devnull,
            "runner_pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0))}
    done = subprocess.run([sys.executable, "-I", "-m", "harness.worker"], input=json.dumps(task),
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FAULTS_TEST_MARK": mark})
    result = json.loads(done.stdout or "{}")
    assert "results" in result, (result, done.stderr)
    assert not marked(mark), "a server outlived its worker"
    assert not shm_objects(prefix)
    return {c["metric"]: r["values"] for c, r in zip(cases, result["results"], strict=True)}


@pytest.mark.parametrize(("variant", "transport"),
                         [("kill", "pipe"), ("raise", "pipe"), ("kill", "uds")])
def test_every_crash_is_restarted_and_no_request_lost(variant, transport):
    values = inject(variant, transport)
    batches = SETTINGS["batches"]
    crashes = values["crashes_injected"]
    assert len(crashes) == batches and all(c >= 1 for c in crashes)  # a quiet batch forces one
    assert values["restarts"] == crashes
    assert values["retried_requests"] == crashes  # the request that met the dead server
    for name in ("lost_requests", "duplicate_requests", "corrupt_replies"):
        assert values[name] == [0] * batches, name
    assert all(n > 0 for n in values["requests_answered"])
    for name in ("restart_d", "restart_detect", "restart_spawn", "restart_reply"):
        assert len(values[name]) == sum(crashes), name
        assert all(v > 0 for v in values[name]), name
    parts = zip(values["restart_detect"], values["restart_spawn"], values["restart_reply"],
                strict=True)
    assert [sum(p) for p in parts] == values["restart_d"]
    assert len(values["reboot_t_r"]) == batches
    for name in ("availability_measured", "availability_predicted"):
        assert all(0 < a <= 1 for a in values[name]), name


def test_service_applies_each_request_once_and_keeps_its_state():
    client, service = Codec(16), Service(16)
    frame = bytes(client.pack(7, APPLY, 0, 0, b"x" * 16))
    first = bytes(service.handle(frame))
    again = bytes(service.handle(frame))  # a retry of the same id
    assert first == again
    ident, status, acc, count = unpack(first)
    assert (ident, status, count) == (7, OK, 1)
    assert acc == advance(0, frame)
    assert bytes(memoryview(first)[24:40]) == b"x" * 16

    restored = Service(16)
    assert unpack(restored.handle(bytes(client.pack(8, RESTORE, acc, count))))[1:] == (
        OK, acc, count)
    assert unpack(restored.handle(bytes(client.pack(9, QUERY, 0, 0))))[2:] == (acc, count)

    corrupt = bytearray(frame)
    corrupt[30] ^= 1
    assert unpack(bytes(corrupt)) is None
    assert unpack(service.handle(bytes(corrupt)))[1] == BAD
    service.plant(0, None)
    with pytest.raises(InjectedFault):
        service.handle(bytes(client.pack(10, APPLY, 0, 0, b"y" * 16)))


def test_formulas_on_known_numbers():
    assert availability(0.0, 5.0) == 1.0
    assert availability(0.5, 2.0) == pytest.approx(0.5)
    assert availability(20.0, 0.002) == pytest.approx(1 / 1.04)
    # The seed's example: t_r = 60 s, t_s = 1.2 s.
    assert improvement(1.0, 60.0, 1.2) == pytest.approx(61 / 2.2)
    assert improvement(0.0, 60.0, 1.2) == 1.0
    assert improvement(1e9, 60.0, 1.2) == pytest.approx(50.0, rel=1e-6)


def synthetic(rate: float = 20.0) -> pd.DataFrame:
    rows = []
    for worker in range(4):
        per_metric = {
            "restart_d": [1e6, 3e6] * (worker + 1),  # mean 2 ms, uneven counts per worker
            "restart_detect": [0.5e6, 0.5e6], "restart_spawn": [1.4e6, 1.4e6],
            "restart_reply": [0.1e6, 0.1e6], "reboot_t_r": [8e6, 8e6],
            "availability_measured": [0.95, 0.97], "availability_predicted": [0.96, 0.96],
            "crashes_injected": [5, 6], "restarts": [5, 6], "retried_requests": [5, 6],
            "requests_answered": [1000, 1000], "lost_requests": [0, 0],
            "duplicate_requests": [0, 0], "corrupt_replies": [0, 0],
        }
        for metric, values in per_metric.items():
            for batch, value in enumerate(values):
                rows.append({"experiment": "faults", "transport": "pipe", "variant": "kill",
                             "k": 4, "level": rate, "metric": metric, "worker": worker,
                             "batch": batch, "value": float(value)})
    return pd.DataFrame(rows)


def test_model_rows_from_synthetic_samples():
    samples = synthetic()
    model = {m.parameter: m for m in EXPERIMENT.model(samples)}
    assert model["restart_d"].value == pytest.approx(2e6)
    assert model["restart_d"].ci_low <= 2e6 <= model["restart_d"].ci_high
    assert model["restart_d_median"].value == pytest.approx(2e6)
    assert model["reboot_t_r"].value == pytest.approx(8e6)
    assert model["availability_measured"].value == pytest.approx(0.96)
    assert model["availability_predicted"].value == pytest.approx(1 / 1.04)
    assert model["availability_gap_pp"].value == pytest.approx(100 * (0.96 - 1 / 1.04))
    assert model["improvement_I"].value == pytest.approx(1.16 / 1.04)
    assert model["crashes_injected"].value == 44
    assert model["lost_requests"].value == 0
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
    params = ExperimentParams(transports=("pipe",), modes=("kill", "raise"), servers=(2, 4),
                              crash_rate=10.0, duration_s=0.3)
    cases = EXPERIMENT.plan(params).runnable
    assert len(cases) == 2 * 2 * len(METRICS)
    assert {(c.variant, c.k) for c in cases} == {(m, n) for m in ("kill", "raise") for n in (2, 4)}
    assert {c.level for c in cases} == {10.0} and {c.duration_s for c in cases} == {0.3}
    assert {c.transport for c in EXPERIMENT.plan(ExperimentParams()).runnable} == {"pipe"}
    bad = [({"modes": ("explode",)}, "unknown mode 'explode'"),
           ({"transports": ("mq",)}, "'mq' cannot carry"),
           ({"crash_rate": 1000.0}, "crash_rate: at most 100"),
           ({"payload_bytes": (5000,)}, "5000 B is more than one atomic")]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            EXPERIMENT.plan(ExperimentParams(**change))


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
    assert "Faults: A = 1/(1 + lambda d)" in (run / "report.md").read_text()


def test_leftover_check_sees_a_marked_process():
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "FAULTS_TEST_MARK": mark})
    try:
        assert marked(mark) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert not marked(mark)


def test_a_death_nobody_injected_fails_the_probe_and_reaps_all(names, no_child_left):
    case = Case("faults", "pipe", "same-cpu", 64, k=3, metric="", topology="probe",
                variant="kill", level=10.0, duration_s=0.1)
    with pytest.raises(RuntimeError, match="died with no crash injected"), \
            Supervisor(names, "same-cpu", timeout=5.0) as sup:
        load = FaultLoad(sup, case, 5.0)
        load.boot()
        for i in range(3):
            load.request(i)
        os.kill(load.pids[1], signal.SIGKILL)
        load.request(1)
    assert not sup.servers and not sup.channels
