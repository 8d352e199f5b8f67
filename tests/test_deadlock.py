"""Deadlock detection finds exactly the planted cycles, in process and over real IPC.

The generator and the walk are checked against a brute force that shares no
code with them; the IPC detector against the in-process one on the same
seeded graph, with real servers; the experiment's model against synthetic
samples with known parameters.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from bench.deadlock import EXPERIMENT, METRICS
from bench.probes.deadlock import detect_over_ipc, probe
from harness.errors import UsageError
from harness.ipcnames import SHM_DIR
from harness.records import Case, CaseResult, Settings, WorkerResult
from harness.results import RunData
from harness.suite import load_suite
from harness.supervisor import Supervisor
from servers.deadlock import (
    MAX_HELD,
    NONE,
    PAYLOAD,
    QUERY,
    VARIANTS,
    LockGraph,
    decode,
    find_cycles,
    make_graph,
    state_handler,
)
from servers.transports import PeerGone, get_transport

from .helpers import run_worker, write_suite


def brute_force_cycles(succ: dict[int, int], n: int) -> frozenset[frozenset[int]]:
    """A server is on a cycle iff following its successors brings it back."""
    cycles = set()
    for start in range(n):
        seen, node = [start], succ.get(start)
        for _ in range(n):
            if node is None or node == start:
                break
            seen.append(node)
            node = succ.get(node)
        if node == start:
            cycles.add(frozenset(seen))
    return frozenset(cycles)


def graph_cases(count: int) -> list[tuple[int, str, int]]:
    return [(n, variant, seed) for n in (2, 3, 4, 5, 8, 13, 32, 128)
            for variant in VARIANTS for seed in range(count)]


@pytest.mark.parametrize(("n", "variant", "seed"), graph_cases(25))
def test_walk_finds_exactly_the_planted_cycles(n, variant, seed):
    graph = make_graph(n, variant, seed)
    succ = graph.successors()
    expected = brute_force_cycles(succ, n)
    assert graph.planted == expected
    assert find_cycles(graph.waiting(), graph.holder()) == expected
    if variant == "acyclic":
        assert not expected
    else:
        assert 1 <= len(expected) <= 3
        assert all(len(cycle) >= 2 for cycle in expected)


@pytest.mark.parametrize(("n", "variant", "seed"), graph_cases(3))
def test_graphs_are_well_formed_and_seeded(n, variant, seed):
    graph = make_graph(n, variant, seed)
    held = [r for resources in graph.holds for r in resources]
    assert len(held) == len(set(held)), "a resource has one holder"
    assert all(1 <= len(resources) <= MAX_HELD for resources in graph.holds)
    for server, resource in enumerate(graph.waits):
        # Each server waits for at most one resource, held by someone else.
        assert resource == NONE or resource in set(held) - set(graph.holds[server])
    assert make_graph(n, variant, seed) == graph


def test_seeds_give_different_graphs():
    assert len({make_graph(32, "cyclic", seed) for seed in range(10)}) == 10


def test_walk_on_a_hand_made_graph():
    # Servers 0 -> 1 -> 2 -> 0 and 4 <-> 5; 3 waits into the first cycle, 6 on 3,
    # 7 waits for nothing; server s holds resource 10 + s.
    succ = {0: 1, 1: 2, 2: 0, 3: 0, 4: 5, 5: 4, 6: 3}
    waiting = {s: 10 + t for s, t in succ.items()}
    holder = {10 + s: s for s in range(8)}
    assert find_cycles(waiting, holder) == {frozenset({0, 1, 2}), frozenset({4, 5})}
    assert find_cycles({3: 10, 6: 13}, holder) == frozenset()
    # A server waiting on what it holds is a cycle of one.
    assert find_cycles({7: 17}, holder) == {frozenset({7})}


@pytest.mark.parametrize(("n", "variant", "message"), [
    (1, "cyclic", "at least 2 servers"), (0, "acyclic", "at least 2 servers"),
    (8, "tangled", "unknown deadlock variant 'tangled'"),
])
def test_bad_graph_requests_raise(n, variant, message):
    with pytest.raises(ValueError, match=message):
        make_graph(n, variant, 1)


def test_reply_round_trips_and_handler_checks_requests():
    graph = make_graph(16, "cyclic", 7)
    for server in range(16):
        handler = state_handler(graph.reply(server))
        sid, waits, held = decode(handler(QUERY))
        assert (sid, waits, held) == (server, graph.waits[server], graph.holds[server])
    with pytest.raises(ValueError, match="unknown deadlock request"):
        state_handler(graph.reply(0))(b"X" * PAYLOAD)
    with pytest.raises(ValueError, match="bytes, not 3"):
        state_handler(b"abc")


@pytest.fixture
def pinned():
    """The probe pins the client; give the test process its CPUs back."""
    cpus = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("transport", ["pipe", "mq", "shm", "uds"])
def test_ipc_detector_agrees_with_the_walk(transport, names, no_child_left, pinned):
    with Supervisor(names, "same-cpu", timeout=5.0) as sup:
        for seed in range(3):
            for variant in VARIANTS:
                graph = make_graph(12, variant, seed)
                channels = [sup.start(get_transport(transport), PAYLOAD,
                                      lambda s=s, g=graph: state_handler(g.reply(s)))
                            for s in range(graph.servers)]
                found = detect_over_ipc(channels)
                assert found == find_cycles(graph.waiting(), graph.holder()) == graph.planted
                # The servers answer only for themselves: a partial view finds less.
                assert detect_over_ipc(channels[:1]) == frozenset()
                sup.stop()


def test_a_server_dying_mid_detection_is_an_error_and_cleans_up(names, no_child_left, pinned):
    graph = make_graph(6, "cyclic", 1)
    with Supervisor(names, "same-cpu", timeout=5.0) as sup:
        channels = [sup.start(get_transport("pipe"), PAYLOAD,
                              lambda s=s: state_handler(graph.reply(s)))
                    for s in range(graph.servers)]
        os.kill(sup.pids[3], signal.SIGKILL)
        with pytest.raises(PeerGone):
            detect_over_ipc(channels)


def probe_case_dicts(transport: str, n: int, variant: str, seed: int) -> list[dict]:
    return [{"experiment": "deadlock", "transport": transport, "placement": "same-cpu",
             "payload_bytes": 0, "k": n, "topology": "probe", "metric": metric, "unit": unit,
             "params": [["graph", variant], ["seed", seed]]}
            for metric, unit in METRICS.items()]


@pytest.mark.parametrize(("transport", "n"), [("call", 4), ("call", 64), ("pipe", 4),
                                              ("pipe", 48), ("mq", 8), ("uds", 8),
                                              ("shm", 8)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_in_a_real_worker(transport, n, variant):
    before = {p.name for p in SHM_DIR.iterdir() if p.name.startswith("ipcb-")}
    result = run_worker(probe_case_dicts(transport, n, variant, 3))
    planted = len(make_graph(n, variant, 3).planted)
    assert result["cycles_found"]["values"] == [planted]
    assert result["cycles_planted"]["values"] == [planted]
    assert result["exact"]["values"] == [1.0]
    assert result["messages"]["values"] == [0 if transport == "call" else 2 * n]
    values = result["detect_ns"]["values"]
    assert len(values) == 2 and all(v > 0 for v in values)  # one per batch
    after = {p.name for p in SHM_DIR.iterdir() if p.name.startswith("ipcb-")}
    assert not {name for name in after - before if f"ipcb-{os.getpid()}-test-" in name}


def test_probe_in_process_leaves_nothing(names, no_child_left, pinned):
    cases = [Case.from_dict(c) for c in probe_case_dicts("shm", 5, "cyclic", 2)]
    values = probe(cases, Settings(batches=3, warmups=0, timeout_s=5.0), names)
    assert len(values["detect_ns"]) == 3
    assert values["exact"] == [1.0]


BAD_SUITES = [
    ("servers = [1, 8]", "at least 2 servers, not 1"),
    ("servers = [8]", "at least two server counts"),
    ("servers = [4, 8]\nmodes = ['cyclic', 'tangled']", "unknown variant 'tangled'"),
    ("servers = [4, 8]\nk = [2]", "unknown key 'k'"),
]


@pytest.mark.parametrize(("table", "message"), BAD_SUITES)
def test_bad_suite_tables_raise_one_clear_error(tmp_path, table, message):
    text = f"[experiments.deadlock]\ntransports = ['call', 'pipe']\n{table}\n"
    with pytest.raises(UsageError, match=message) as info:
        load_suite(str(write_suite(tmp_path, text))).plan()
    assert "\n" not in str(info.value)


def test_plan_covers_every_graph_and_defaults_to_both_variants(tmp_path):
    text = "[experiments.deadlock]\ntransports = ['call', 'pipe']\nservers = [4, 8, 16]\n" \
           "seeds = [1, 2]\n"
    plan = load_suite(str(write_suite(tmp_path, text))).plan()
    measurements = {c.measurement for c in plan.runnable}
    assert len(measurements) == 2 * 2 * 3 * 2
    assert {c.param("graph") for c in measurements} == set(VARIANTS)
    assert len(plan.runnable) == len(measurements) * len(METRICS)


def synthetic(t0: dict[str, float], ts: dict[str, float], exact: float = 1.0,
              found_extra: int = 0):
    """Samples of a run whose detections take t0 + N ts (+-2%), 6 workers x 3 batches."""
    rng = np.random.default_rng(5)
    cases = []
    for transport in t0:
        for n in (4, 16, 64):
            graph = make_graph(n, "cyclic", 1)
            planted = len(graph.planted)
            values = {"detect_ns": None, "cycles_found": planted + found_extra,
                      "cycles_planted": planted, "exact": exact, "messages": 2 * n}
            for metric, unit in METRICS.items():
                case = Case("deadlock", transport, "same-cpu", 0, k=n, metric=metric, unit=unit,
                            topology="probe", params=(("graph", "cyclic"), ("seed", 1)))
                workers = []
                for _ in range(6):
                    if metric == "detect_ns":
                        base = t0[transport] + n * ts[transport]
                        got = list(base * (1 + rng.uniform(-0.02, 0.02, 3)))
                    else:
                        got = [float(values[metric])]
                    workers.append(WorkerResult(1, got, [], {}))
                cases.append(CaseResult(case, "ok", "", workers))
    return RunData({}, cases).samples_frame()


def test_model_recovers_known_costs_and_ratio(tmp_path):
    samples = synthetic({"call": 500.0, "pipe": 3000.0}, {"call": 150.0, "pipe": 9000.0})
    model = {(m.transport, m.parameter): m for m in EXPERIMENT.model(samples)}
    assert model["call", "deadlock_ns_per_server"].value == pytest.approx(150, rel=0.05)
    assert model["pipe", "deadlock_ns_per_server"].value == pytest.approx(9000, rel=0.05)
    assert model["pipe", "deadlock_ns_fixed"].value == pytest.approx(3000, rel=0.3)
    ratio = model["pipe", "deadlock_ratio"]
    assert ratio.k == 64
    assert ratio.value == pytest.approx((3000 + 64 * 9000) / (500 + 64 * 150), rel=0.03)
    assert ratio.ci_low <= ratio.value <= ratio.ci_high
    assert ("call", "deadlock_ratio") not in model
    assert model["call", "deadlock_exact"].value == model["pipe", "deadlock_exact"].value == 1
    tables = EXPERIMENT.tables(samples)
    table = tables["deadlock"]
    assert len(table) == 6
    assert (table.cycles_found == table.cycles_planted).all()
    plots = EXPERIMENT.plots(samples, list(model.values()), tables, tmp_path)
    assert [p.name for p in plots] == ["deadlock.png"] and plots[0].stat().st_size > 0
    [section] = EXPERIMENT.report(samples, list(model.values()), tables, ["deadlock.png"])
    assert [row[:2] for row in section.rows] == [["call", "cyclic"], ["pipe", "cyclic"]]
    assert section.plots == ["deadlock.png"]


@pytest.mark.parametrize(("exact", "extra"), [(0.0, 0), (1.0, 1)])
def test_model_flags_any_wrong_detection(exact, extra):
    samples = synthetic({"call": 500.0}, {"call": 150.0}, exact=exact, found_extra=extra)
    [row] = [m for m in EXPERIMENT.model(samples) if m.parameter == "deadlock_exact"]
    assert row.value == 0


def test_lock_graph_is_plain_data():
    graph = LockGraph(((1,), (2,)), (2, 1), frozenset({frozenset({0, 1})}))
    assert graph.successors() == {0: 1, 1: 0}
    assert find_cycles(graph.waiting(), graph.holder()) == graph.planted
