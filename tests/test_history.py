"""History: runs append to SQLite; change points are found where a series steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness import history

from .helpers import ipcbench


def test_a_step_is_flagged_once_and_noise_is_not():
    rng = np.random.default_rng(12)
    flat = 6000 * (1 + rng.normal(0, 0.01, 30))
    assert history.change_points(flat) == []
    stepped = flat.copy()
    stepped[20:] *= 1.2
    [(index, z, _before)] = history.change_points(stepped)
    assert index == 20 and z > history.Z_LIMIT


def test_small_steps_below_the_threshold_are_not_flagged():
    values = np.array([1000.0] * 10 + [1030.0] * 10)
    assert history.change_points(values, threshold=0.05) == []


def test_too_short_a_series_is_not_judged():
    assert history.change_points(np.array([1.0, 1.0, 5.0])) == []


def fake_results(median: float) -> tuple[pd.DataFrame, list[str]]:
    results = pd.DataFrame([{c: 0 for c in history.STAT_COLUMNS} | {
        "experiment": "latency", "transport": "pipe", "placement": "same-cpu", "unit": "ns",
        "metric": "round_trip", "payload_bytes": 64, "k": 1, "median": median, "n": 10,
        "status": "ok"}])
    return results, ["latency/pipe/same-cpu/64B/k1"]


def test_runs_append_and_history_flags_the_step(tmp_path):
    db = tmp_path / "h.sqlite"
    medians = [6000, 6010, 5990, 6005, 5995, 6002, 7400, 7410]
    for i, median in enumerate(medians):
        results, names = fake_results(median)
        meta = {"started": f"2026-11-21T10:{i:02d}:00", "suite": "quick",
                "machine": {"machine_id": "m1"}}
        history.append(db, f"run{i}", meta, results, names, tmp_path)
    table = history.series(db, "m1")
    assert list(table["median"]) == medians
    [point] = history.detect(table)
    assert point.run_id == "run6" and point.after / point.before > 1.2
    plots = tmp_path / "plots"
    done = ipcbench("history", "--history", str(db), "--machine", "m1", "--plots", str(plots))
    assert done.returncode == 0, done.stderr
    assert "run6" in done.stdout and (plots / "latency_pipe_same-cpu_64B_k1.png").is_file()


def test_history_without_a_database(tmp_path):
    done = ipcbench("history", "--history", str(tmp_path / "none.sqlite"))
    assert done.returncode == 2 and "no such database" in done.stderr
