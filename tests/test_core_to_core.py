"""Core to core: every pair within the budget, a seeded sample per class past it."""

from __future__ import annotations

from dataclasses import asdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.core_to_core import EXPERIMENT as C2C
from bench.core_to_core import class_summary, matrix, pairs
from bench.probes.core_to_core import METRICS
from harness.cputopology import Topology, this_machine
from harness.experiment import probe_cases

from .helpers import run_worker

SHAPES = Path(__file__).parent / "data" / "topology"


def shape(name: str) -> Topology:
    return Topology.from_record((SHAPES / f"{name}.txt").read_text())


def test_every_pair_within_the_budget_each_named_by_its_class():
    found = pairs(shape("intel-2s-smt"), budget=1000, sample=None)
    assert len(found) == 16 * 15 // 2
    classes = {c for _, _, c in found}
    assert classes == {"smt-sibling", "same-llc", "cross-package"}
    assert (0, 8, "smt-sibling") in found and (0, 4, "cross-package") in found


def test_past_the_budget_a_seeded_sample_per_class_with_its_canonical_pair():
    epyc = shape("amd-epyc-4ccx")
    found = pairs(epyc, budget=40, sample=None)  # 496 pairs: 10 per class
    per_class = pd.Series([c for _, _, c in found]).value_counts().to_dict()
    assert per_class == {"smt-sibling": 10, "same-llc": 10, "cross-llc": 10}
    assert (0, 16, "smt-sibling") in found and (0, 1, "same-llc") in found
    assert (0, 4, "cross-llc") in found
    assert found == pairs(epyc, budget=40, sample=None)  # the same sample every time
    assert len(pairs(epyc, budget=10_000, sample=3)) == 9


def test_a_256_cpu_machine_plans_within_its_budget():
    """Two sockets of 64 cores with SMT: 32,640 pairs, sampled down to the budget."""
    files = {"cpu/online": "0-255", "node/online": "0-1",
             "node/node0/cpulist": "0-63,128-191", "node/node1/cpulist": "64-127,192-255"}
    for cpu in range(256):
        core = cpu % 128
        files |= {f"cpu/cpu{cpu}/topology/physical_package_id": str(core // 64),
                  f"cpu/cpu{cpu}/topology/core_cpus_list": f"{core},{core + 128}",
                  f"cpu/cpu{cpu}/cache/index0/level": "3",
                  f"cpu/cpu{cpu}/cache/index0/type": "Unified",
                  f"cpu/cpu{cpu}/cache/index0/shared_cpu_list":
                      f"{core // 8 * 8}-{core // 8 * 8 + 7},{core // 8 * 8 + 128}-"
                      f"{core // 8 * 8 + 135}"}
    machine = Topology.read(files.get)
    assert len(list(combinations(machine.usable, 2))) == 32_640
    found = pairs(machine, budget=512, sample=None)
    assert len(found) == 4 * 128
    assert {c for _, _, c in found} == {"smt-sibling", "same-llc", "cross-llc",
                                        "cross-package"}


def test_the_matrix_and_the_class_summary_add_up():
    table = pd.DataFrame({"transport": "pipe", "placement": ["same-llc", "same-llc", "x"],
                          "cpu_a": [0, 0, 1], "cpu_b": [1, 2, 2],
                          "round_trip_ns": [100.0, 300.0, 700.0]})
    grid = matrix(table)
    assert grid.loc[1, 0] == grid.loc[0, 1] == 100.0 and np.isnan(grid.loc[0, 0])
    summary = class_summary(table).set_index("placement")
    assert summary.loc["same-llc", "pairs"] == 2
    assert summary.loc["same-llc", "median_ns"] == 200.0
    assert summary.loc["same-llc", "min_ns"] == 100.0


@pytest.mark.skipif(len(this_machine().usable) < 2, reason="needs two usable CPUs")
@pytest.mark.parametrize("transport", ["pipe", "shm-spin"])
def test_a_real_worker_measures_one_pair(transport):
    a, b = this_machine().usable[:2]
    cases = probe_cases(C2C, transport, METRICS, placement="cross-cpu", payload_bytes=64,
                        cpu_a=a, cpu_b=b, round_trips=200)
    result = run_worker([asdict(c) for c in cases])["round_trip_ns"]
    assert len(result["values"]) == 2 and all(v > 0 for v in result["values"])
