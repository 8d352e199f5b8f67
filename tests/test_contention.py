"""Lock contention: the queueing formulas, the books of a run, and the probe in real processes.

The probe runs short (0.1 to 0.2 s) so these check counts and clean-up, never a timing.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import posix_ipc
import pytest

from bench.contention import EXPERIMENT, errors, pooled, predictions
from bench.probes.contention import (
    KILL_METRICS,
    METRICS,
    Books,
    ExclusionViolated,
    Fleet,
    SemLock,
    check_exclusive,
    measure,
    schedule,
    summarize,
    warm_up_ns,
)
from bench.queueing import lindley, mm1_wait, pk_wait
from harness.ipcnames import SHM_DIR
from harness.names import NameSource

from .helpers import ipcbench, run_worker, write_suite


def probe_case(transport: str, variant: str, rho: float, metric: str = "wait_ns",
               sources: int = 3, duration_s: float = 0.2) -> dict:
    return {"experiment": "contention", "transport": transport, "placement": "same-cpu",
            "payload_bytes": 0, "k": sources, "metric": metric, "topology": "probe",
            "duration_s": duration_s,
            "params": [["hold", variant], ["rho", rho], ["service_us", 500.0]]}


# --- formulas, on numbers worked by hand ---------------------------------------------------

def test_mm1_wait_is_rho_over_mu_minus_lambda():
    assert mm1_wait(0.5, 1.0) == pytest.approx(1.0)  # rho / (mu - lambda) = 0.5 / 0.5
    assert mm1_wait(0.7, 500.0) == pytest.approx(0.7 * 500 / 0.3)
    assert mm1_wait(0.0, 500.0) == 0.0
    with pytest.raises(ValueError, match="rho"):
        mm1_wait(1.0, 500.0)


def test_pollaczek_khinchine_reduces_to_mm1_and_md1():
    for rho in (0.1, 0.5, 0.9):
        rate = rho / 200.0
        assert pk_wait(rate, 200.0, 1.0) == pytest.approx(mm1_wait(rho, 200.0))  # exponential
        assert pk_wait(rate, 200.0, 0.0) == pytest.approx(mm1_wait(rho, 200.0) / 2)  # M/D/1
    assert pk_wait(1 / 100, 100.0, 1.0) == float("inf")  # rho = 1: no steady state


def test_lindley_recursion_on_known_sample_paths():
    assert lindley([0, 1, 2], [2, 2, 2]) == [0, 1, 2]  # each waits one more than the last
    assert lindley([0, 10, 20], [5, 5, 5]) == [0, 0, 0]  # the lock is free at each arrival
    assert lindley([0, 0, 0], [3, 4, 5]) == [0, 3, 7]  # a burst queues behind the holds
    # A hand-off of 1 is paid by each request that found the lock held, and only by those.
    assert lindley([0, 0, 0], [3, 4, 5], handoff=1) == [0, 4, 9]
    assert lindley([0, 10], [5, 5], handoff=1) == [0, 0]


def test_schedule_is_a_sorted_poisson_plan_within_the_window():
    plan = schedule(1000.0, 500e3, 10**9, random.Random(7))
    offsets = [offset for offset, _ in plan]
    assert offsets == sorted(offsets) and offsets[-1] < 10**9
    assert all(hold >= 1 for _, hold in plan)
    assert plan == schedule(1000.0, 500e3, 10**9, random.Random(7))  # seeded: reproducible


def test_warm_up_is_a_relaxation_time_capped_at_half_the_window():
    assert warm_up_ns(0.25, 100.0, 1.0) == int(100e3 / 0.25)  # s / (1 - 0.5)^2
    assert warm_up_ns(0.99, 1000.0, 0.2) == int(0.1e9)


def test_summary_of_a_hand_off_by_hand():
    # A holds 0..100 ns; B arrives at 50, blocks, is granted at 110: a 10 ns hand-off.
    rows = [(0, 0, 0, 0, 100), (50, 50, 50, 110, 200)]
    got = summarize(rows, since=0, window_ns=1000, scheduled=2)
    assert got["wait_ns"] == pytest.approx(30)  # (0 + 60) / 2
    assert got["handoff_ns"] == pytest.approx(10)
    assert got["handoffs"] == 1
    assert got["replay_ns"] == pytest.approx(got["wait_ns"])  # holds + h explain it exactly
    assert got["lock_wait_ns"] == pytest.approx(got["wait_ns"])
    assert got["rate_hz"] == pytest.approx(2e6)
    # Requests scheduled before ``since`` are warm-up: replayed, not counted.
    later = summarize(rows, since=10, window_ns=1000, scheduled=1)
    assert later["acquisitions"] == 1 and later["wait_ns"] == pytest.approx(60)


def test_summary_separates_lateness_from_the_wait():
    # Scheduled at 0, woke at 40, found the lock free: wait 0, lag 40, delay 40.
    got = summarize([(0, 40, 40, 40, 140)], since=0, window_ns=1000, scheduled=1)
    assert (got["wait_ns"], got["lag_ns"], got["delay_ns"]) == pytest.approx((0, 40, 40))


def test_overlapping_holds_fail_the_run_instead_of_giving_numbers():
    # B is granted at 90 while A holds until 100: two holders at once.
    rows = [(0, 0, 0, 0, 100), (50, 50, 50, 90, 200), (60, 60, 60, 200, 300)]
    with pytest.raises(ExclusionViolated, match="mutual exclusion violated: 1 of 3 holds"):
        summarize(rows, since=0, window_ns=1000, scheduled=3)
    # A grant at the previous release's very tick (or one tick before) is not an overlap.
    check_exclusive([(0, 0, 0, 0, 100), (50, 50, 50, 100, 200), (60, 60, 60, 199, 300)])


def synthetic_runs(rho: float, service: float, wait: float, workers: int = 4) -> dict:
    return {"acquisitions": np.full(workers, 1000.0), "wait_us": np.full(workers, wait),
            "delay_us": np.full(workers, wait), "lock_wait_us": np.full(workers, wait),
            "lag_us": np.zeros(workers), "hold_us": np.full(workers, service),
            "hold_cv2": np.ones(workers), "replay_us": np.full(workers, wait),
            "handoff_us": np.zeros(workers), "handoffs": np.full(workers, 10.0),
            "rate_hz": np.full(workers, rho / service * 1e6)}


def test_errors_are_zero_when_the_runs_are_mm1():
    levels = {rho: synthetic_runs(rho, 500.0, mm1_wait(rho, 500.0)) for rho in (0.3, 0.5, 0.7)}
    found = errors(levels, 500.0)
    assert found["mm1_max_rel_error"] == pytest.approx(0, abs=1e-12)
    assert found["mg1h_max_rel_error"] == pytest.approx(0, abs=1e-12)


def test_a_hand_off_shows_in_the_mg1_prediction():
    # Every hold of 500 us carries a 50 us hand-off: M/G/1 serves 550 us at a cv2 rescaled.
    runs = synthetic_runs(0.5, 500.0, 1.0)
    runs["handoff_us"] = np.full(4, 50.0)
    est = pooled(runs)
    got = predictions(0.5, 500.0, est)
    rate = 0.5 / 500.0
    assert got["mg1h_us"] == pytest.approx(rate * (500**2 * 2 + 2 * 500 * 50 + 50**2)
                                           / (2 * (1 - rate * 550)))
    assert got["mm1_us"] == pytest.approx(500.0)
    assert errors({0.5: synthetic_runs(0.5, 500.0, 1000.0)}, 500.0)[
        "mm1_max_rel_error"] == pytest.approx(0.5)  # |500 - 1000| / 1000


def test_pooled_weights_runs_by_their_requests():
    runs = synthetic_runs(0.5, 500.0, 0.0, workers=2)
    runs["wait_us"] = np.array([100.0, 400.0])
    runs["acquisitions"] = np.array([300.0, 100.0])
    assert pooled(runs)["wait_us"] == pytest.approx((100 * 300 + 400 * 100) / 400)


# --- the plan and bad suite input ----------------------------------------------------------

def test_plan_covers_locks_variants_and_levels():
    params = EXPERIMENT.params_type(transports=("shm", "call"), modes=("busy", "kill"),
                              servers=(2,), levels=(0.3, 0.5), service_us=300.0)
    cases = EXPERIMENT.plan(params).runnable
    measurements = {(c.transport, c.param("hold"), c.param("rho")) for c in cases}
    assert len(measurements) == 2 + 2 + 2  # shm busy, shm kill, call busy (no call kill)
    assert {c.param("service_us") for c in cases} == {300.0}
    assert {c.iterations for c in cases} == {0}  # no workload loop: the hold is its own
    kill = [c for c in cases if c.param("hold") == "kill" and c.param("rho") == 0.3]
    assert {c.metric for c in kill} == {*METRICS, *KILL_METRICS}


def test_a_table_without_locks_or_modes_runs_both_locks_busy():
    params = EXPERIMENT.params_type.from_table("experiments.contention", {"levels": [0.5]})
    cases = EXPERIMENT.plan(params).runnable
    assert {(c.transport, c.param("hold")) for c in cases} == {("shm", "busy"), ("call", "busy")}


@pytest.mark.parametrize(("table", "message"), [
    ({"transports": ["pipe"]}, "'pipe' is not a lock"),
    ({"modes": ["spin"]}, "unknown mode 'spin'"),
    ({"transports": ["call"], "modes": ["kill"]}, "kill needs transport shm"),
    ({"levels": [0.5, 1.0]}, "rho must be between 0 and 1"),
    ({"service_us": 0.5}, "service_us: must be >= 1"),
    ({"crash_rate": 2.0}, "unknown key 'crash_rate'"),
])
def test_bad_suite_input_is_a_clear_error(table, message):
    with pytest.raises(ValueError, match=message):
        params = EXPERIMENT.params_type.from_table("experiments.contention", table)
        EXPERIMENT.plan(params)


def fake_samples(service_us: int, duration_s: float, rhos: tuple[float, ...]) -> pd.DataFrame:
    """Samples of an M/M/1 lock as the probe records them (times in ns), 3 workers."""
    params = EXPERIMENT.params_type(transports=("shm",), modes=("busy",), servers=(4,), levels=rhos,
                              service_us=float(service_us), duration_s=duration_s)
    rows = []
    for case in EXPERIMENT.plan(params).runnable:
        rho = float(case.param("rho"))
        wait = mm1_wait(rho, service_us) * 1e3
        value = {"wait_ns": wait, "delay_ns": wait, "lock_wait_ns": wait, "replay_ns": wait,
                 "lag_ns": 0.0, "hold_ns": service_us * 1e3, "hold_cv2": 1.0,
                 "handoff_ns": 0.0, "handoffs": 10.0, "acquisitions": 1000.0,
                 "scheduled": 1000.0, "rate_hz": rho / service_us * 1e6}[case.metric]
        rows += [{**case.row(), "worker": w, "batch": 0, "loops": 1, "value": value}
                 for w in range(3)]
    return pd.DataFrame(rows)


def test_tables_and_fits_keep_service_times_and_durations_apart():
    samples = pd.concat([fake_samples(200, 0.3, (0.3, 0.5)), fake_samples(800, 0.3, (0.3, 0.5)),
                         fake_samples(200, 1.0, (0.3, 0.5))])
    table = EXPERIMENT.tables(samples)["contention"]
    assert len(table) == 6
    assert sorted(set(zip(table.service_us, table.duration_s, strict=True))) == [
        (200, 0.3), (200, 1.0), (800, 0.3)]
    # Each row predicted with its own s (not the first group's), from ns samples to us.
    assert table.mm1_us.to_numpy() == pytest.approx(table.wait_us.to_numpy())
    assert table.wait_us.to_numpy() == pytest.approx(
        [mm1_wait(r, s) for r, s in zip(table.rho, table.service_us, strict=True)])
    model = [m for m in EXPERIMENT.model(samples) if m.parameter == "mm1_max_rel_error"]
    assert len(model) == 3 and all(m.value == pytest.approx(0, abs=1e-12) for m in model)
    assert len({m.method for m in model}) == 3
    assert {m.unit for m in EXPERIMENT.model(samples)
            if m.parameter.startswith("contention_")} == {"ns"}


# --- the probe, in real processes ----------------------------------------------------------

def my_ipc_objects(names: NameSource) -> list[str]:
    return [p.name for p in SHM_DIR.iterdir() if names.prefix in p.name]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["shm", "call"])
@pytest.mark.parametrize("variant", ["busy", "sleep"])
def test_probe_in_a_worker_serves_every_request(transport, variant):
    cases = [probe_case(transport, variant, 0.5, metric) for metric in METRICS]
    got = {metric: result["values"] for metric, result in run_worker(cases).items()}
    assert set(got) == set(METRICS) and all(len(v) == 1 for v in got.values())
    assert got["acquisitions"] == got["scheduled"]  # nothing lost, nothing twice
    assert got["acquisitions"][0] > 0
    assert got["delay_ns"][0] >= got["wait_ns"][0] >= got["lock_wait_ns"][0] >= 0


@pytest.mark.timeout(60)
def test_killed_holders_are_recovered_without_a_hang(names, no_child_left):
    values = measure("shm", "kill", 3, 0.5, 500.0, 0.3, 5.0, names, random.Random(3))
    assert values["recovered_locks"] == values["kills"] >= 3  # one per 100 ms of arrivals
    killed = values["scheduled"] - values["acquisitions"]
    assert 0 <= killed <= values["recovered_locks"]  # only the killed requests are lost
    assert my_ipc_objects(names) == []


@pytest.mark.timeout(60)
def test_kills_at_low_load_never_let_two_sources_hold_the_lock(names, no_child_left):
    # rho 0.1, P = 8: killed holders' sources are restarted while the others are idle; a
    # restarted source once kept its dead predecessor's HOLDING and was "released" for
    # although it held nothing. measure() checks that no holds overlap (it raises if so).
    values = measure("shm", "kill", 8, 0.1, 500.0, 1.0, 5.0, names, random.Random(11))
    assert values["kills"] > 0
    assert values["recovered_locks"] == values["kills"]  # one release per kill, no more
    assert 0 <= values["scheduled"] - values["acquisitions"] <= values["kills"]
    assert my_ipc_objects(names) == []


@pytest.mark.timeout(60)
def test_a_lost_lock_fails_the_run_instead_of_hanging(names, no_child_left):
    # A semaphore nobody will ever post: every source times out, the watcher reports it.
    sem = posix_ipc.Semaphore(names("sem", "lost"), posix_ipc.O_CREX, initial_value=0)
    sem.unlink()
    books = Books.create([schedule(200.0, 100e3, 50_000_000, random.Random(1))
                          for _ in range(2)])
    go_r, go_w = os.pipe()
    fleet = Fleet(SemLock(sem), books, busy=True, timeout_s=0.3, live={})
    try:
        for source in range(2):
            fleet.fork(source, 0, None, go_r)
        t0 = 0
        os.write(go_w, t0.to_bytes(8, "little") * 2)
        with pytest.raises(RuntimeError, match="lost the lock"):
            fleet.watch(t0, go_r, deadline=2**62, kills=[])
    finally:
        fleet.stop()
        os.close(go_r)
        os.close(go_w)
        sem.close()
    assert my_ipc_objects(names) == []


@pytest.mark.timeout(60)
def test_a_source_killed_from_outside_while_holding_is_recovered(names, no_child_left):
    # One source, one long hold: SIGKILL it mid-section; the watcher must release for it.
    sem = posix_ipc.Semaphore(names("sem", "lock"), posix_ipc.O_CREX, initial_value=1)
    sem.unlink()
    books = Books.create([[(0, 10**10)], [(1_000_000, 1000)]])  # a 10 s hold, then a short one
    go_r, go_w = os.pipe()
    fleet = Fleet(SemLock(sem), books, busy=False, timeout_s=5.0, live={})
    try:
        for source in range(2):
            fleet.fork(source, 0, None, go_r)
        t0 = 0
        os.write(go_w, t0.to_bytes(8, "little") * 2)
        holder = next(pid for pid, (source, _) in fleet.live.items() if source == 0)
        while books.state(0) != 2:  # HOLDING
            pass
        os.kill(holder, signal.SIGKILL)
        fleet.watch(t0, go_r, deadline=2**62, kills=[])
    finally:
        fleet.stop()
        os.close(go_r)
        os.close(go_w)
        sem.close()
    assert fleet.recovered == 1
    assert [row[-1] > 0 for row in books.rows()] == [True]  # the second source was served


@pytest.mark.timeout(120)
def test_run_writes_table_model_and_plot(tmp_path: Path):
    suite = write_suite(tmp_path, """
description = "contention test"
[settings]
workers = 2
batches = 1
timeout_s = 5.0
[experiments.contention]
transports = ["shm", "call"]
modes = ["busy"]
servers = [3]
levels = [0.3, 0.6]
duration_s = 0.1
service_us = 500
""")
    out = tmp_path / "out"
    done = ipcbench("run", "--suite", str(suite), "--out", str(out), "--no-history")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "contention.csv")
    assert len(table) == 4 and set(table.transport) == {"shm", "call"}
    model = pd.read_csv(out / "model.csv")
    errors_rows = model[model.parameter == "mm1_max_rel_error"]
    assert sorted(errors_rows.transport) == ["call", "shm"]
    assert (errors_rows.value >= 0).all()
    assert (out / "contention.png").stat().st_size > 0
    assert "Contention" in (out / "report.md").read_text()


def test_the_plot_survives_a_queue_past_rho_one(tmp_path: Path):
    """On a busy machine the realized rho can pass 1: M/M/1 then predicts an infinite wait,
    which the plot leaves off its scale instead of failing."""
    samples = fake_samples(200, 0.3, (0.3, 0.5))
    tables = EXPERIMENT.tables(samples)
    tables["contention"].loc[0, "mm1_us"] = np.inf
    [plot] = EXPERIMENT.plots(samples, [], tables, tmp_path)
    assert plot.stat().st_size > 0
