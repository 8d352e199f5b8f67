"""Chains, fan-outs and rings make the messages and context switches their shape implies.

On one CPU under SCHED_BATCH a request through a chain of k servers switches
exactly 2k times (each hop: wake the next, and come back), and a ring hop once.
"""

from __future__ import annotations

import pytest

from .helpers import run_worker


def case(topology: str, k: int, transport: str = "pipe", **extra) -> dict:
    return {"experiment": "amplification", "transport": transport, "placement": "same-cpu",
            "payload_bytes": 64, "k": k, "topology": topology, "sched_batch": True, **extra}


@pytest.mark.parametrize("transport", ["pipe", "mq", "shm"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_chain_switches_twice_per_server(transport, k):
    counters = run_worker(case("chain", k, transport))["counters"]
    assert counters["messages_per_op"] == 2 * k
    assert counters["ctx_switches_per_op"] == pytest.approx(2 * k, abs=0.1)


def test_fanout_asks_every_service():
    counters = run_worker(case("fanout", 3))["counters"]
    assert counters["messages_per_op"] == 6
    assert counters["ctx_switches_per_op"] == pytest.approx(6, abs=0.1)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ring_hop_is_one_message_and_one_switch(n):
    counters = run_worker(case("ring", n, working_set=4096))["counters"]
    assert counters["messages_per_op"] == 1
    assert counters["ctx_switches_per_op"] == pytest.approx(1, abs=0.05)


def test_loopback_sends_without_switching():
    counters = run_worker(case("self", 1))["counters"]
    assert counters["messages_per_op"] == 1
    assert counters["ctx_switches_per_op"] < 0.05


def test_in_process_chain_never_switches():
    result = run_worker(case("chain", 4, "call"))
    assert result["counters"]["ctx_switches_per_op"] < 0.01
    assert result["counters"]["messages_per_op"] == 0
