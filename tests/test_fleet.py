"""A fleet's history: many machines writing into one database (a real PostgreSQL server
the tests start, or the default SQLite file), and the views across machines."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from harness import historydb, runfolder
from harness.columns import HISTORY_STATS

from .helpers import fleet_folders, ipcbench


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    return request.getfixturevalue("postgres_url")


def stored_rows(table: pd.DataFrame, run_id: str) -> pd.DataFrame:
    rows = table[table.run_id == run_id].set_index("case").sort_index()
    return rows[HISTORY_STATS]


def folder_rows(folder) -> pd.DataFrame:
    files = runfolder.read(folder, samples=False)
    results = files.results.assign(case=list(runfolder.case_names(files.results,
                                                                   files.parameters)))
    return results[results.status == "ok"].set_index("case").sort_index()[HISTORY_STATS]


def test_writers_at_once_store_every_run_whole(history_url, tmp_path):
    """On a server, 20 runs of 4 machines stored by 4 processes at once (in SQLite, 6 by 2)
    into a database none has made yet, so they also race to create the schema: each run
    reads back as its folder holds it."""
    writers_count, runs = (4, 20) if history_url.startswith("postgresql") else (2, 6)
    machines = ("m1", "m2", "m3", "m4")[:writers_count]
    folders = fleet_folders(tmp_path / "runs", runs, machines=machines)
    writers = [subprocess.Popen(
        [sys.executable, "-m", "harness", "store", *map(str, folders[i::writers_count]),
         "--history", history_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(writers_count)]
    done = [(w.wait(timeout=120), w.stdout.read(), w.stderr.read()) for w in writers]
    for w in writers:
        w.stdout.close()
        w.stderr.close()
    assert [rc for rc, _, _ in done] == [0] * writers_count, [err for _, _, err in done]
    where = historydb.target(history_url)
    table = historydb.export_table(where)
    assert sorted(table.run_id.unique()) == sorted(f.name for f in folders)
    for folder in folders:
        stored, expected = stored_rows(table, folder.name), folder_rows(folder)
        assert list(stored.index) == list(expected.index)
        pd.testing.assert_frame_equal(stored, expected, check_dtype=False, rtol=0, atol=0)
    per_machine = historydb.runs_table(where).groupby("machine").run_id.nunique()
    assert per_machine.to_dict() == dict.fromkeys(machines, runs // writers_count)
    again = ipcbench("store", str(folders[0]), "--history", history_url)
    assert again.returncode == 0 and "already stored as run-000" in again.stdout
    assert historydb.runs_table(where).run_id.nunique() == runs


def test_the_fleet_s_views_over_a_postgresql_server(postgres_url, tmp_path):
    folders = fleet_folders(tmp_path / "runs", 12, scale={"lab-a": 1.0, "lab-b": 2.0})
    stored = ipcbench("store", *map(str, folders), "--history", postgres_url)
    assert stored.returncode == 0, stored.stderr

    trend = ipcbench("history", "--history", postgres_url, "--machine", "lab-a", "--case",
                     "latency/pipe/same-cpu")
    assert trend.returncode == 0, trend.stderr
    assert "lab-a" in trend.stdout and "lab-b" not in trend.stdout
    assert "6 runs of 1 machine," in trend.stdout

    side = ipcbench("history", "--history", postgres_url, "--compare-machines", "lab-a",
                    "lab-b", "--case", "latency/")
    assert side.returncode == 0, side.stderr
    # lab-b's latest run (the 12th) is 2 x 1.011 of the folder, lab-a's (the 11th) 1.010
    ratio = 2 * 1.011 / 1.010
    assert f"geometric mean lab-b / lab-a: {ratio:.2f}x" in side.stdout
    assert "run-011" in side.stdout and "run-010" in side.stdout

    out = tmp_path / "b.csv"
    export = ipcbench("export", "--from-history", "--history", postgres_url, "--machine",
                      "lab-b", "--out", str(out))
    assert export.returncode == 0, export.stderr
    table = pd.read_csv(out)
    assert set(table.machine) == {"lab-b"} and table.run_id.nunique() == 6
    assert len(table) == 6 * len(folder_rows(folders[1]))
    assert {"cpu_model", "kernel", "topology", "started_utc", "case", "median"} <= set(table)

    page = tmp_path / "fleet"
    report = ipcbench("fleet-report", "--history", postgres_url, "--out", str(page),
                      "--case", "latency/pipe")
    assert report.returncode == 0, report.stderr
    html = (page / "index.html").read_text()
    cases = historydb.series(historydb.target(postgres_url),
                             historydb.Filters(case="latency/pipe")).name.nunique()
    assert html.count("<img ") == cases > 0
    assert html.count("src='data:image/png;base64,") == cases  # inlined: opens offline
    assert "http://" not in html and "https://" not in html
    assert "lab-a" in html and "lab-b" in html and "Machines" in html


def test_a_fleet_report_never_overwrites_other_files(tmp_path):
    where = tmp_path / "h.sqlite"
    [folder] = fleet_folders(tmp_path / "runs", 1)
    assert ipcbench("store", str(folder), "--history", str(where)).returncode == 0
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.html").write_text("<title>my own page</title>")  # not a report's page
    done = ipcbench("fleet-report", "--history", str(where), "--out", str(out))
    assert done.returncode == 2 and "holds other files" in done.stderr
    assert [p.name for p in out.iterdir()] == ["index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite", "mine", "runs"]


def test_comparing_a_machine_the_history_does_not_know(tmp_path):
    where = tmp_path / "h.sqlite"
    [folder] = fleet_folders(tmp_path / "runs", 1)
    assert ipcbench("store", str(folder), "--history", str(where)).returncode == 0
    done = ipcbench("history", "--history", str(where), "--compare-machines", "lab-a", "nope")
    assert done.returncode == 2 and "no runs of machine nope" in done.stderr
    assert done.stderr.count("\n") == 1


def test_export_takes_run_folders_or_the_history_not_both(tmp_path):
    [folder] = fleet_folders(tmp_path / "runs", 1)
    done = ipcbench("export", str(folder), "--from-history", "--out", str(tmp_path / "x.csv"))
    assert done.returncode == 2 and "not both" in done.stderr
    assert not (tmp_path / "x.csv").exists()


def test_a_database_of_a_newer_schema_is_refused(postgres_url):
    where = historydb.target(postgres_url)
    results = pd.DataFrame([{c: 1 for c in HISTORY_STATS} | {"status": "ok"}])
    historydb.append(where, "r", {"run_uuid": "u"}, results, ["a"], historydb.DEFAULT_PATH)
    engine = sa.create_engine(where.url)
    with engine.begin() as conn:
        conn.execute(historydb.versions.update().values(version=99))
    engine.dispose()
    with pytest.raises(historydb.UsageError, match="schema version 99"):
        historydb.series(where)


def test_machine_rows_keep_a_kernel_update_in_one_series(tmp_path):
    """The same named machine after a kernel update: a new fingerprint row, one series."""
    where = historydb.target(tmp_path / "h.sqlite")
    results = pd.DataFrame([{c: 1.0 for c in HISTORY_STATS} | {"status": "ok", "unit": "ns"}])
    for i, kernel in enumerate(["6.1", "6.1", "6.8"]):
        machine = {"machine_id": f"fp-{kernel}", "name": "lab", "kernel": kernel}
        historydb.append(where, f"r{i}", {"run_uuid": str(i), "machine": machine,
                                          "started": f"2026-12-0{i + 1}T00:00:00+0000"},
                         results.assign(median=float(i + 1)), ["case"], tmp_path)
    runs = historydb.runs_table(where)
    assert runs.machine_key.nunique() == 2 and set(runs.machine) == {"lab"}
    table = historydb.series(where)
    assert list(table.kernel) == ["6.1", "6.1", "6.8"]
    assert np.array_equal(table["median"], [1.0, 2.0, 3.0])


def test_store_checks_every_folder_before_storing_any(tmp_path):
    where = tmp_path / "h.sqlite"
    good, bad = fleet_folders(tmp_path / "runs", 2)
    results = pd.read_csv(bad / "results.csv")
    results.drop(columns=["median"]).to_csv(bad / "results.csv", index=False)
    done = ipcbench("store", str(good), str(bad), "--history", str(where))
    assert done.returncode == 2 and "median" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and not where.exists()
