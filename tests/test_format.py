"""Run folders stay readable: every stored format loads, refits, renders and compares.

``tests/data/run-format-N`` are real run folders (metadata.json, results.csv and
samples.csv) written by the version that introduced format N, from
``tests/data/format-suite.toml``. A later version must read each of them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.results import RunData
from harness.runfolder import FORMAT_VERSION

from .helpers import ipcbench

DATA = Path(__file__).parent / "data"
STORED = sorted(DATA.glob("run-format-*"))


def test_every_format_up_to_this_one_has_a_stored_folder():
    versions = {json.loads((p / "metadata.json").read_text()).get("format_version", 1)
                for p in STORED}
    assert versions == set(range(1, FORMAT_VERSION + 1))


@pytest.fixture(params=STORED, ids=lambda p: p.name)
def stored(request, tmp_path) -> tuple[Path, Path]:
    """The stored folder, and a copy of it that commands may write into."""
    copy = tmp_path / request.param.name
    shutil.copytree(request.param, copy)
    return request.param, copy


def test_it_loads_every_case(stored):
    original, _ = stored
    run = RunData.load(original)
    results = pd.read_csv(original / "results.csv")
    assert len(run.cases) == len(results)
    assert {c.case.experiment for c in run.measured()} >= {
        "latency", "payload", "amplification", "ring", "footprint", "boot", "faults",
        "layers", "deadlock", "contention"}  # and those added since (format 2: tail)
    samples = pd.read_csv(original / "samples.csv")
    assert sum(len(w.values) for c in run.measured() for w in c.workers) == len(samples)


def test_it_refits_and_renders(stored):
    _, copy = stored
    fit = ipcbench("fit", str(copy))
    assert fit.returncode == 0, fit.stderr
    model = pd.read_csv(copy / "model.csv")
    assert {"alpha", "beta", "latency_ratio"} <= set(model.parameter)
    report = ipcbench("report", str(copy))
    assert report.returncode == 0, report.stderr
    text = (copy / "report.md").read_text()
    assert "latency" in text.lower() and "pipe" in text


def test_a_chain_of_one_k_still_gives_the_rest_of_the_model(stored):
    """A fit that cannot be made (one k) is a row saying so, not a lost experiment."""
    from bench.amplification import EXPERIMENT as AMPLIFICATION

    original, _ = stored
    samples = RunData.load(original).kept_samples()
    one_k = samples[~((samples.experiment == "amplification") & (samples.k > 1))]
    rows = {m.parameter: m for m in AMPLIFICATION.model(one_k)}
    assert "not fitted" in rows["chain_fit"].method
    assert {"alpha", "beta", "C0"} <= set(rows)


def test_it_compares_with_itself_as_unchanged(stored):
    original, copy = stored
    done = ipcbench("compare", str(original), str(copy))
    assert done.returncode == 0, done.stdout + done.stderr  # 1 would be a regression


def test_every_format_names_the_same_suite_s_cases_alike():
    """Format 1 kept each experiment's own parameters in shared columns; read today, they
    are in the experiment's declared ones, so the same suite's cases have the same names
    (the keys compare and history match runs by) in every format."""
    newer = ("tail", "core-to-core")  # experiments that came with format 2
    names = [{c.case.name for c in RunData.load(p).cases if c.case.experiment not in newer}
             for p in STORED]
    assert all(n == names[0] for n in names[1:])
    assert "contention/shm/k2/hold=busy/rho=0.3/service_us=500/0.04s/wait_ns" in names[0]


LEGACY_HISTORY = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, git_commit TEXT,
    machine_id TEXT, suite TEXT, folder TEXT
);
CREATE TABLE cases (
    run_id TEXT REFERENCES runs(run_id), name TEXT, experiment TEXT, transport TEXT,
    placement TEXT, payload_bytes INTEGER, k INTEGER, metric TEXT, unit TEXT, n INTEGER,
    median REAL, mean REAL, stdev REAL, p5 REAL, p95 REAL, p99 REAL, ci_low REAL,
    ci_high REAL, ctx_switches_per_op REAL, cpu_ns_per_op REAL,
    PRIMARY KEY (run_id, name)
);
"""  # the history's tables before its schema had a version (user_version 0: format 1)


def test_a_format_1_history_is_renamed_to_today_s_names(tmp_path):
    """History rows written before format 2 get today's names when the file is upgraded,
    the first time it is opened."""
    import sqlite3

    from harness import historydb

    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path)
    db.executescript(LEGACY_HISTORY)
    old = ["faults/pipe/kill/k2/L50/0.04s/64B/restart_d", "latency/pipe/same-cpu/64B/k1"]
    db.execute("INSERT INTO runs (run_id, started) VALUES ('r1', '2026-01-01')")
    db.executemany("INSERT INTO cases (run_id, name, median) VALUES ('r1', ?, 1.0)",
                   [(n,) for n in old])
    db.commit()
    db.close()
    today = ["faults/pipe/k2/mode=kill/crash_rate=50/0.04s/64B/restart_d",
             "latency/pipe/same-cpu/64B/k1"]
    assert sorted(historydb.series(historydb.target(path)).name) == sorted(today)
    db = sqlite3.connect(path)
    stored = sorted(row[0] for row in db.execute("SELECT name FROM case_names"))
    version = db.execute("SELECT version FROM ipcbench_schema").fetchone()[0]
    db.close()
    assert stored == sorted(today) and version == historydb.SCHEMA_VERSION


def test_names_stay_apart_and_old_names_of_unknown_experiments_still_read():
    """Floats name exactly (two close rhos are two cases); a format-1 name of an
    experiment this installation does not know keeps its shared values by name."""
    from harness.records import Case
    from harness.runfolder import format1_name

    a, b = (Case("x", "shm", "same-cpu", 0, topology="probe", metric="m",
                 params=(("rho", r),)) for r in (0.1234561, 0.1234564))
    assert a.name != b.name
    assert "rho=0.5/" in Case("x", "shm", "same-cpu", 0, topology="probe", metric="m",
                              params=(("rho", 0.5),)).name
    assert format1_name("gone/pipe/fast/k2/L0.5/m") == "gone/pipe/k2/variant=fast/level=0.5/m"
    assert format1_name("tail/pipe/cross-cpu/k1/round_trips=500/64B/p99_ns") == \
        "tail/pipe/cross-cpu/k1/round_trips=500/64B/p99_ns"
