"""``ipcbench ab``: two Python environments, workers in pairs, a paired test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.compare import RunSamples, compare

from .helpers import ipcbench, write_suite

AB_SUITE = """
[settings]
workers = 3
batches = 2
warmups = 0
batch_ms = 1.0
timeout_s = 5.0

[experiments.latency]
transports = ["call", "pipe"]
placements = ["same-cpu"]
payload_bytes = [64]
"""
MACHINE = {"machine_id": "abc", "cpu_model": "Test CPU"}


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("ab")
    suite = write_suite(folder, AB_SUITE)
    done = ipcbench("ab", sys.executable, sys.executable, "--suite", str(suite),
                    "--out", str(folder / "out"))
    assert done.returncode in (0, 1), done.stderr
    return folder / "out", done.returncode


def test_ab_writes_both_sides_and_the_comparison(ab_run):
    out, _ = ab_run
    assert sorted(p.name for p in out.iterdir()) == ["base", "comparison.csv", "new"]
    comparison = pd.read_csv(out / "comparison.csv")
    cases = comparison[comparison.level == "case"]
    assert set(cases.case) == {"latency/call/same-cpu/64B/k1", "latency/pipe/same-cpu/64B/k1"}
    transports = comparison[comparison.level == "transport"]
    assert sorted(transports.case) == ["call: 1 timed case (geometric mean)",
                                       "pipe: 1 timed case (geometric mean)"]
    assert comparison.verdict.isin(["slower", "faster", "same", "underpowered", "unknown"]).all()
    for side in ("base", "new"):
        done = ipcbench("report", str(out / side))
        assert done.returncode == 0, done.stderr


def test_ab_runs_each_pair_back_to_back(ab_run):
    """Worker i of base and of new run one right after the other, in the same pass,
    and the side that goes first alternates."""
    out, _ = ab_run
    starts = {side: pd.read_csv(out / side / "samples.csv").groupby(
        ["transport", "worker"]).at_s.min() for side in ("base", "new")}
    order = pd.concat(starts, names=["side"]).sort_values()
    for transport in ("call", "pipe"):
        sequence = [(side, worker) for side, t, worker in order.index if t == transport]
        workers = [worker for _, worker in sequence]
        assert workers == sorted(workers)  # pairs never interleave with other passes
        firsts = [sequence[i][0] for i in range(0, len(sequence), 2)]
        assert set(firsts) == {"base", "new"}


@pytest.mark.parametrize("python", ["/nonexistent/python", "/bin/true"])
def test_ab_refuses_an_environment_without_ipcbench(tmp_path, python):
    suite = write_suite(tmp_path, AB_SUITE)
    done = ipcbench("ab", python, sys.executable, "--suite", str(suite),
                    "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_pairs_see_through_the_host_where_runs_cannot():
    """Each pass's pair shares a host factor spread 20% across passes: the paired test
    finds an 8% slowdown that the same workers compared as two runs cannot."""
    rng = np.random.default_rng(21)
    host = rng.lognormal(0, 0.2, 8)

    def side(label: str, scale: float) -> RunSamples:
        return RunSamples(label, MACHINE, {"case": [scale * h * rng.lognormal(0, 0.005, 3)
                                                    for h in host]})

    base, new = side("base", 1.0), side("new", 1.08)
    [paired] = compare(base, new, pair=True).verdicts
    [unpaired] = compare(base, new).verdicts
    assert paired.verdict == "slower" and paired.detectable < 0.05
    assert unpaired.verdict == "underpowered"


def test_pairs_follow_worker_numbers_when_a_worker_drops_out():
    rng = np.random.default_rng(22)
    host = rng.lognormal(0, 0.2, 8)
    base = RunSamples("base", MACHINE, {"case": [h * rng.lognormal(0, 0.005, 3) for h in host]})
    new_values = [1.08 * h * rng.lognormal(0, 0.005, 3) for h in host]
    # worker 2 of new was disturbed throughout: the rest must still pair by number
    new = RunSamples("new", MACHINE, {"case": new_values[:2] + new_values[3:]},
                     ids={"case": [0, 1, 3, 4, 5, 6, 7]})
    [verdict] = compare(base, new, pair=True).verdicts
    assert verdict.verdict == "slower" and verdict.ratio == pytest.approx(1.08, abs=0.01)
