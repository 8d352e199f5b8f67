"""Chains, fan-outs and rings make the messages and context switches their shape implies.

On one CPU under SCHED_BATCH a request through a chain of k servers switches
exactly 2k times (each hop: wake the next, and come back), and a ring hop once.
Other processes on the machine can only add switches (they preempt ours), so the
count is the fewest over many short batches: some batch always runs undisturbed.
"""

from __future__ import annotations

import pytest

from .helpers import run_worker

MANY_SHORT_BATCHES = {"workers": 1, "batches": 30, "warmups": 0, "batch_ms": 1.0,
                      "timeout_s": 5.0}


def case(topology: str, k: int, transport: str = "pipe", **extra) -> dict:
    return {"experiment": "amplification", "transport": transport, "placement": "same-cpu",
            "payload_bytes": 64, "k": k, "topology": topology, "sched_batch": True, **extra}


def measure(spec: dict, hops: int = 1) -> tuple[float, dict]:
    """(the fewest switches per operation over the batches, the worker's counters)."""
    result = run_worker(spec, MANY_SHORT_BATCHES)
    fewest = min(b["switches"] for b in result["batches"]) / (result["loops"] * hops)
    return fewest, result["counters"]


@pytest.mark.parametrize("transport", ["pipe", "mq", "shm"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_chain_switches_twice_per_server(transport, k):
    switches, counters = measure(case("chain", k, transport))
    assert counters["messages_per_op"] == 2 * k
    assert switches == pytest.approx(2 * k, abs=0.1)


def test_fanout_asks_every_service():
    switches, counters = measure(case("fanout", 3))
    assert counters["messages_per_op"] == 6
    assert switches == pytest.approx(6, abs=0.1)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ring_hop_is_one_message_and_one_switch(n):
    switches, counters = measure(case("ring", n, working_set=4096), hops=n)
    assert counters["messages_per_op"] == 1
    assert switches == pytest.approx(1, abs=0.05)


def test_loopback_sends_without_switching():
    switches, counters = measure(case("self", 1))
    assert counters["messages_per_op"] == 1
    assert switches < 0.05


def test_in_process_chain_never_switches():
    switches, counters = measure(case("chain", 4, "call"))
    assert switches < 0.01
    assert counters["messages_per_op"] == 0


def test_every_batch_records_its_reference_and_disturbance():
    result = run_worker(case("chain", 2), MANY_SHORT_BATCHES)
    batches = result["batches"]
    assert len(batches) == len(result["values"]) == MANY_SHORT_BATCHES["batches"]
    for batch in batches:
        assert batch["ref_ns"] > 0 and batch["window_ns"] > 0 and batch["cpus"] == 1
        assert batch["steal_ns"] >= 0 and batch["other_switches"] >= 0
        assert batch["run_delay_ns"] >= 0 and not batch["disturbed"]
    times = [b["at_s"] for b in batches]
    assert times == sorted(times)
