"""History in its default place, a SQLite file: runs are stored, read back and migrated;
change points are found where a series steps, per machine."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import history, historydb
from harness.columns import HISTORY_STATS

from .helpers import DATA, ipcbench


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


def sequential(values: np.ndarray, threshold: float) -> list[tuple[int, float, float]]:
    """The rule as the module docstring states it, one index at a time."""
    found, start = [], 0
    for i in range(history.MIN_LOOKBACK, len(values)):
        window = values[max(start, i - history.LOOKBACK): i]
        if len(window) < history.MIN_LOOKBACK:
            continue
        center = float(np.median(window))
        mad = float(np.median(np.abs(window - center)))
        z = (values[i] - center) / (max(mad, center * threshold / 10) / history.MAD_TO_SIGMA)
        if abs(z) > history.Z_LIMIT and abs(values[i] / center - 1) > threshold:
            found.append((i, z, center))
            start = i
    return found


def test_every_index_judged_at_once_flags_what_the_rule_flags():
    rng = np.random.default_rng(3)
    flagged = 0
    for _ in range(400):
        values = 1000 * (1 + rng.normal(0, rng.choice([0.005, 0.02, 0.05]), rng.integers(1, 60)))
        for _ in range(rng.integers(0, 3)):
            values[rng.integers(0, len(values)):] *= rng.choice([0.8, 1.1, 1.3])
        expected = sequential(values, 0.05)
        found = history.change_points(values, 0.05)
        assert [i for i, _, _ in found] == [i for i, _, _ in expected]
        assert np.allclose([(z, c) for _, z, c in found], [(z, c) for _, z, c in expected])
        flagged += bool(expected)
    assert flagged > 100  # the comparison saw many steps, not only flat series


def fake_results(median: float) -> tuple[pd.DataFrame, list[str]]:
    results = pd.DataFrame([{c: 0 for c in HISTORY_STATS} | {
        "experiment": "latency", "transport": "pipe", "placement": "same-cpu", "unit": "ns",
        "metric": "round_trip", "payload_bytes": 64, "k": 1, "median": median, "n": 10,
        "status": "ok"}])
    return results, ["latency/pipe/same-cpu/64B/k1"]


def store_series(where: historydb.Target, medians: list[float], machine: str,
                 kernels: list[str] | None = None) -> None:
    for i, median in enumerate(medians):
        results, names = fake_results(median)
        meta = {"started": f"2026-11-21T10:{i:02d}:00+0100", "suite": "quick",
                "run_uuid": f"{machine}-{i}",
                "machine": {"machine_id": f"id-{machine}", "name": machine,
                            "kernel": (kernels or ["6.1"] * len(medians))[i]}}
        historydb.append(where, f"{machine}-run{i}", meta, results, names, DATA)


def test_a_step_on_one_machine_is_flagged_with_the_kernel_it_came_with(tmp_path):
    db = tmp_path / "h.sqlite"
    where = historydb.target(db)
    medians = [6000, 6010, 5990, 6005, 5995, 6002, 7400, 7410]
    store_series(where, medians, "m1", ["6.1"] * 6 + ["6.8"] * 2)
    store_series(where, [m * 0.5 for m in medians[:6]] * 2, "m2")  # flat: two levels apart
    table = historydb.series(where, historydb.Filters(machines=("m1",)))
    assert list(table["median"]) == medians
    [point] = history.detect(historydb.series(where))
    assert (point.machine, point.run_id) == ("m1", "m1-run6")
    assert (point.kernel_before, point.kernel) == ("6.1", "6.8")
    plots = tmp_path / "plots"
    done = ipcbench("history", "--history", str(db), "--plots", str(plots))
    assert done.returncode == 0, done.stderr
    assert "m1-run6" in done.stdout and "kernel 6.1 to 6.8" in done.stdout
    assert "m2" in done.stdout  # few series: every one is listed
    [plot] = plots.iterdir()
    assert plot.name.startswith("m1_latency_pipe_same-cpu_64B_k1-") and plot.suffix == ".png"


def test_history_filters_by_machine_kernel_and_suite(tmp_path):
    where = historydb.target(tmp_path / "h.sqlite")
    store_series(where, [1000.0] * 5, "m1", ["6.1", "6.1", "6.8", "6.8", "6.8"])
    store_series(where, [2000.0] * 3, "m2")

    def runs(**given: object) -> set[str]:
        return set(historydb.series(where, historydb.Filters(**given)).run_id)

    assert runs(machines=("m2",)) == {"m2-run0", "m2-run1", "m2-run2"}
    assert runs(machines=("id-m1",)) == {f"m1-run{i}" for i in range(5)}  # by fingerprint
    assert runs(kernel="6.8") == {"m1-run2", "m1-run3", "m1-run4"}
    assert runs(suite="quick") == runs() and runs(suite="default") == set()
    assert runs(case="pipe/same") == runs() and runs(case="100%") == set()


def test_a_run_stored_twice_is_stored_once(tmp_path):
    where = historydb.target(tmp_path / "h.sqlite")
    results, names = fake_results(5.0)
    meta = {"run_uuid": "u1", "machine": {"machine_id": "x", "name": "m"}}
    first = historydb.append(where, "r", meta, results, names, tmp_path)
    again = historydb.append(where, "r", meta, results, names, tmp_path)
    other = historydb.append(where, "r", {**meta, "run_uuid": "u2"}, results, names, tmp_path)
    assert (first.run_id, first.new) == ("r", True) and (again.run_id, again.new) == ("r", False)
    assert (other.run_id, other.new) == ("r-2", True)
    assert len(historydb.series(where)) == 2


ELSEWHERE = {"machine_id": "not-the-fixture-s", "cpu_model": "Other CPU", "cpu_count": 64,
             "kernel": "6.1", "virtualization": "none", "python": "3.12.0"}


def test_today_s_sqlite_file_migrates_in_place(tmp_path, monkeypatch):
    """tests/data/history-v1.sqlite was written by the code before schema versions (three
    runs of the stored run folders, whose folders are gone): every value comes through."""
    monkeypatch.setattr("harness.metadata.fingerprint", lambda: ELSEWHERE)
    path = tmp_path / "history.sqlite"
    shutil.copy(DATA / "history-v1.sqlite", path)
    columns = ", ".join(HISTORY_STATS)
    before = sqlite3.connect(path)
    old = before.execute(f"SELECT run_id, name, {columns} FROM cases ORDER BY 1, 2").fetchall()
    old_runs = before.execute("SELECT run_id, started, git_commit, suite FROM runs "
                              "ORDER BY 1").fetchall()
    before.close()
    where = historydb.target(path)
    runs = historydb.runs_table(where)
    assert set(runs.machine) == {"26410f9cd39c"}  # an old machine is named by its hash
    after = sqlite3.connect(path)
    try:
        assert after.execute("SELECT version FROM ipcbench_schema").fetchall() == [(2,)]
        assert after.execute(
            f"SELECT run_id, name, {columns} FROM cases JOIN runs USING (run_key) "
            "JOIN case_names USING (case_key) ORDER BY 1, 2").fetchall() == old
        assert after.execute("SELECT run_id, started, git_commit, suite FROM runs "
                             "ORDER BY 1").fetchall() == old_runs
        assert after.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {row[0] for row in after.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == historydb.OURS  # the old tables are gone
    finally:
        after.close()
    results, names = fake_results(1.0)
    historydb.append(where, "new", {"run_uuid": "n", "machine": {"machine_id": "26410f9cd39c"}},
                     results, names, tmp_path)
    assert len(historydb.series(where, historydb.Filters(machines=("26410f9cd39c",)))) == \
        len(old) + 1


def fixture_with_its_folders(tmp_path: Path) -> Path:
    """The v1 fixture, its runs' folders present again: both rows of the run stored twice
    (``...-format-suite`` and ``...-2``) point at one folder of the run-format-2 run, and
    the format-1 run's row at a folder that now holds another run."""
    path = tmp_path / "history.sqlite"
    shutil.copy(DATA / "history-v1.sqlite", path)
    shutil.copytree(DATA / "run-format-2", tmp_path / "twice")
    shutil.copytree(DATA / "run-format-2", tmp_path / "reused")
    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET folder = ? WHERE run_id LIKE '20261204%'",
               (str(tmp_path / "twice"),))
    db.execute("UPDATE runs SET folder = ? WHERE run_id LIKE '20261120%'",
               (str(tmp_path / "reused"),))
    db.commit()
    db.close()
    return path


def test_an_upgrade_takes_a_run_s_identity_only_from_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.metadata.fingerprint", lambda: ELSEWHERE)
    where = historydb.target(fixture_with_its_folders(tmp_path))
    runs = historydb.runs_table(where).set_index("run_id")
    twice = runs.loc[["20261204-072249-format-suite", "20261204-072249-format-suite-2"]]
    assert twice.cpu_model.tolist() == ["Intel(R) Xeon(R) Processor"] * 2  # from the folder
    uuids = sqlite3.connect(where.path).execute(
        "SELECT run_id, run_uuid FROM runs ORDER BY run_id").fetchall()
    given = [u for _, u in uuids if u]
    assert len(given) == len(set(given)) == 1  # the run stored twice has one identity
    reused = runs.loc["20261120-101500-format-suite"]
    assert pd.isna(reused.cpu_model)  # its folder holds another run now: not taken from it


def test_old_runs_of_this_machine_take_its_name_across_a_kernel_update(tmp_path, monkeypatch):
    """Same CPU and virtualization as the fixture's runs, another kernel and Python: the
    old runs are this machine's, under the name the new run gives."""
    here = {"machine_id": "after-update", "cpu_model": "Intel(R) Xeon(R) Processor",
            "cpu_count": 2, "kernel": "6.19", "virtualization": "vm:kvm+container:docker",
            "python": "3.11.9"}
    monkeypatch.setattr("harness.metadata.fingerprint", lambda: here)
    where = historydb.target(fixture_with_its_folders(tmp_path))
    results, names = fake_results(1.0)
    historydb.append(where, "new", {"run_uuid": "n", "machine": {**here, "name": "lab-7"}},
                     results, names, tmp_path)
    runs = historydb.runs_table(where).set_index("run_id")
    assert runs.loc["new"].machine == "lab-7"
    assert runs.loc["20261204-072249-format-suite"].machine == "lab-7"
    assert runs.loc["20261120-101500-format-suite"].machine == "26410f9cd39c"  # unknown


def test_history_without_a_database(tmp_path):
    done = ipcbench("history", "--history", str(tmp_path / "none.sqlite"))
    assert done.returncode == 2 and "no such database" in done.stderr


def test_history_reads_the_environment_s_history(tmp_path, monkeypatch):
    where = tmp_path / "env.sqlite"
    store_series(historydb.target(where), [1.0] * 3, "m9")
    monkeypatch.setenv(historydb.HISTORY_VARIABLE, str(where))
    assert historydb.target(None).path == where


@pytest.mark.parametrize(("given", "words"), [
    ("mysql://u@h/db", "a SQLite file or a postgresql:// URL"),
    ("sqlite://", "name a file"),
    ("postgresql://ipc:s3cret@/db?host=/nonexistent-socket-dir", "connection"),
    ("postgresql://ipc@/db?host=/nonexistent-socket-dir&password=s3cret", "connection"),
    ("postgresql://ipc:s3cret@host:port/db", "not a database URL"),
    ("postgresql+psycopg2://ipc:s3cret@/db", "through psycopg"),
])
def test_a_history_that_cannot_be_used_is_one_line_and_never_shows_a_password(
        tmp_path, given, words):
    done = ipcbench("history", "--history", given)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "s3cret" not in done.stderr


def test_plots_where_no_folder_can_be_made_is_one_line(tmp_path):
    where = tmp_path / "h.sqlite"
    store_series(historydb.target(where), [1.0] * 3, "m1")
    (tmp_path / "file").write_text("x")
    done = ipcbench("history", "--history", str(where), "--plots", str(tmp_path / "file" / "x"))
    assert done.returncode == 2 and "cannot make a folder" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
