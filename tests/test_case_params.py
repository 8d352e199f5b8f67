"""A case is an identity plus its experiment's own typed parameters, declared once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.contention import EXPERIMENT as CONTENTION
from bench.faults import EXPERIMENT as FAULTS
from harness import columns
from harness.experiment import case_columns, load_experiments, probe_cases
from harness.records import Case

from .helpers import ipcbench

STORED = Path(__file__).parent / "data" / "run-format-2"


def test_every_registered_experiment_declares_columns_of_one_kind_each():
    declared = case_columns(load_experiments().values())  # ValueError on a clash
    assert not set(declared) & set(columns.CASE_COLUMNS)
    assert declared["rho"] is float and declared["seed"] is int and declared["mode"] is str


def test_a_case_takes_exactly_its_experiment_s_parameters_typed():
    [case] = probe_cases(CONTENTION, "shm", {"wait_ns": "ns"}, k=2, hold="busy", rho=0.5,
                         service_us=200)  # an int where a float is declared: made a float
    assert case.params == (("hold", "busy"), ("rho", 0.5), ("service_us", 200.0))
    assert case.name == "contention/shm/k2/hold=busy/rho=0.5/service_us=200/wait_ns"
    with pytest.raises(ValueError, match="takes the parameters hold, rho, service_us, not"):
        probe_cases(CONTENTION, "shm", {"wait_ns": "ns"}, hold="busy", rho=0.5)
    with pytest.raises(ValueError, match="takes the parameters mode, crash_rate, not"):
        probe_cases(FAULTS, "pipe", {"restarts": "count"}, mode="kill", crash_rate=1.0,
                    level=3.0)
    with pytest.raises(KeyError, match="no parameter 'rho'"):
        case_of_faults = probe_cases(FAULTS, "pipe", {"restarts": "count"}, mode="kill",
                                     crash_rate=1.0)[0]
        case_of_faults.param("rho")


def test_one_experiment_s_parameter_does_not_rename_another_s_cases():
    """A case's name holds its own experiment's parameters only; timed cases none."""
    samples = pd.read_csv(STORED / "results.csv")
    declared = {name: set(e.case_columns())
                for name, e in load_experiments().items()}
    for name in samples.experiment.unique():
        rows = samples[samples.experiment == name]
        for column in set(columns.result_columns(list(
                dict.fromkeys(c for own in declared.values() for c in own))))\
                - set(columns.result_columns([])):
            filled = rows[column].notna().any() if column in rows else False
            assert filled == (column in declared[name]), (name, column)
    timed = Case("latency", "pipe", "same-cpu", 64)
    assert timed.name == "latency/pipe/same-cpu/64B/k1"


def test_the_worker_protocol_carries_the_parameters():
    [case] = probe_cases(FAULTS, "pipe", {"restarts": "count"}, k=3, mode="raise",
                         crash_rate=2.5, duration_s=0.5)
    from dataclasses import asdict

    assert Case.from_dict(json.loads(json.dumps(asdict(case)))) == case


@pytest.mark.parametrize(("damage", "words"), [
    (lambda f: _cell(f / "results.csv", "contention", "rho", "abc"),
     "results.csv line"),
    (lambda f: _cell(f / "samples.csv", "deadlock", "seed", "1.5"),
     "seed is 1.5, not a whole number"),
    (lambda f: _cell(f / "samples.csv", "faults", "mode", ""),
     "mode is empty, not a name"),
    (lambda f: _metadata(f, {"faults": {"mode": "colour"}}), "needs \"case_parameters\""),
    (lambda f: _metadata(f, None), "needs \"case_parameters\""),
])
def test_a_damaged_parameter_is_one_line_and_exit_2(tmp_path, damage, words):
    run = tmp_path / "run"
    shutil.copytree(STORED, run)
    damage(run)
    done = ipcbench("report", str(run))
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def _cell(path: Path, experiment: str, column: str, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    for n, line in enumerate(lines[1:], start=1):
        cells = line.rstrip("\n").split(",")
        if cells[0] == experiment:
            cells[header.index(column)] = text
            lines[n] = ",".join(cells) + "\n"
            break
    path.write_text("".join(lines))


def _metadata(folder: Path, parameters: object) -> None:
    path = folder / "metadata.json"
    data = json.loads(path.read_text())
    if parameters is None:
        del data["case_parameters"]
    else:
        data["case_parameters"] = parameters
    path.write_text(json.dumps(data))
