"""The system experiments through the real command line: rows, units, model, report, refit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.results import RunData

from .helpers import ipcbench, write_suite

SYSTEM_SUITE = """
description = "tests: every system experiment, tiny"

[settings]
workers = 2
batches = 1
warmups = 0
timeout_s = 10.0

[experiments.footprint]
transports = ["call", "pipe"]
servers = [1, 3]
workers = 3

[experiments.boot]
transports = ["call", "pipe"]
modes = ["fork"]
servers = [1, 2]

[experiments.faults]
transports = ["pipe"]
modes = ["kill"]
servers = [2]
duration_s = 0.05
crash_rate = 40.0

[experiments.layers]
transports = ["call"]
modes = ["c-then-e", "e-then-c"]
file_bytes = 131072

[experiments.deadlock]
transports = ["call", "pipe"]
servers = [4, 8]
modes = ["cyclic"]

[experiments.contention]
transports = ["shm", "call"]
servers = [4]
levels = [0.3, 0.6]
duration_s = 0.05
service_us = 500.0
"""


@pytest.fixture(scope="module")
def system_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("system")
    out = folder / "run"
    done = ipcbench("run", "--suite", str(write_suite(folder, SYSTEM_SUITE, "system.toml")),
                    "--out", str(out), "--no-history")
    assert done.returncode == 0, done.stderr
    return out


def test_probe_rows_carry_metric_and_unit(system_run):
    results = pd.read_csv(system_run / "results.csv")
    footprint = results[results.experiment == "footprint"]
    # PSS shares pages with every other process on the machine: reported, not judged
    assert set(footprint[footprint.metric == "pss_total"].unit) == {"bytes-shared"}
    assert set(footprint[footprint.metric != "pss_total"].unit) == {"bytes"}
    assert {"uss_total", "pss_total", "pte_total"} <= set(footprint.metric)
    assert (footprint.status == "ok").all()
    # The experiment's own workers = 3 overrides the suite's 2; one value each (a worker
    # that other load disturbed is set aside, and counted there).
    assert (footprint.n + footprint.batches_disturbed == 3).all()
    assert (footprint.n >= 2).all()
    others = results[results.experiment != "footprint"]
    assert (others.status == "ok").all(), others[others.status != "ok"].note.tolist()
    assert set(others.experiment) == {"boot", "faults", "layers", "deadlock", "contention"}


def test_model_and_report_sections(system_run):
    model = pd.read_csv(system_run / "model.csv")
    fitted = model[model.parameter == "footprint_M_s"]
    assert set(fitted.variant) == {"fork", "object"}  # model rows: the case's start
    for parameter in ("boot_b0", "boot_b_s", "restart_d", "reboot_t_r", "lost_requests",
                      "availability_measured", "availability_predicted", "mm1_max_rel_error"):
        assert parameter in set(model.parameter), parameter
    lost = model[model.parameter == "lost_requests"]
    assert (lost.value == 0).all()
    for plot in ("footprint.png", "boot.png", "faults.png", "layers.png", "deadlock.png",
                 "contention.png"):
        assert (system_run / plot).is_file(), plot
    html = (system_run / "report.html").read_text()
    assert "Footprint: M_total = M_k + N M_s" in html
    assert html.count("data:image/png;base64,") >= 6


def test_fit_and_reload_reproduce_the_run(system_run):
    before = pd.read_csv(system_run / "model.csv")
    done = ipcbench("fit", str(system_run))
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(before, pd.read_csv(system_run / "model.csv"))
    run = RunData.load(system_run)
    assert run.results_frame().shape[0] == pd.read_csv(system_run / "results.csv").shape[0]


def test_compare_judges_memory_too(system_run):
    done = ipcbench("compare", str(system_run), str(system_run), columns=240)  # names unfolded
    assert done.returncode == 0, done.stderr
    assert "footprint/pipe/k3/start=fork/uss_total" in done.stdout
