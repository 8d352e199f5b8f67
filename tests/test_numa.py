"""NUMA: shm's area bound to one node for real, and the experiment planned per machine."""

from __future__ import annotations

import mmap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import numa as numa_experiment
from bench.numa import EXPERIMENT as NUMA
from harness.cputopology import Topology
from harness.records import Case
from servers.transports.numa import bind, node_of

from .helpers import run_worker

SHAPES = Path(__file__).parent / "data" / "topology"


def shape(name: str) -> Topology:
    return Topology.from_record((SHAPES / f"{name}.txt").read_text())


def test_a_buffer_is_bound_to_a_node_and_stays_there():
    area = mmap.mmap(-1, 4 * mmap.PAGESIZE)
    view = memoryview(area)[100 : 3 * mmap.PAGESIZE]  # not page-aligned: its pages are
    view[:] = bytes(len(view))
    bind(view, 0)
    assert node_of(view) == 0
    with pytest.raises(OSError, match="mbind to node 1000"):
        bind(view, 1000)
    view.release()
    area.close()  # no export is left behind


def test_one_node_skips_every_case_with_the_reason(monkeypatch):
    monkeypatch.setattr(numa_experiment, "this_machine", lambda: shape("kvm-2vcpu"))
    plan = NUMA.plan(NUMA.params_type())
    assert not plan.runnable
    assert {r.note for r in plan.skipped} == {
        "one NUMA node here: the client's node and the server's are the same memory"}


def test_two_nodes_run_both_sides_of_every_size(monkeypatch):
    two_sockets = shape("intel-2s-smt")
    monkeypatch.setattr(numa_experiment, "this_machine", lambda: two_sockets)
    import bench.timed

    monkeypatch.setattr(bench.timed, "this_machine", lambda: two_sockets)
    plan = NUMA.plan(NUMA.params_type())
    names = {c.name for c in plan.runnable}
    assert len(names) == 2 * 4
    assert "numa/shm/cross-numa/1024B/k1/memory=server" in names


def test_a_real_worker_runs_with_its_area_bound():
    """This machine's node 0 for both sides: the binding is made and the bytes arrive."""
    case = Case("numa", "shm", "same-cpu", 4096, params=(("memory", "client"),))
    result = run_worker(asdict(case))
    assert len(result["values"]) == 2 and all(v > 0 for v in result["values"])


def test_the_model_gives_a_slope_per_side():
    rows = []
    for side, per_byte in (("client", 0.05), ("server", 0.12)):
        for size in (64, 1024, 16384, 65536):
            for worker in range(4):
                rows.append({"experiment": "numa", "transport": "shm", "placement": "cross-numa",
                             "memory": side, "payload_bytes": size, "metric": "round_trip",
                             "worker": worker, "value": 3000 + per_byte * size + worker})
    slopes = {m.config: m for m in NUMA.model(pd.DataFrame(rows))}
    assert slopes["memory=client"].value == pytest.approx(0.05, rel=1e-3)
    assert slopes["memory=server"].value == pytest.approx(0.12, rel=1e-3)
    assert np.isfinite(slopes["memory=server"].ci_low)
