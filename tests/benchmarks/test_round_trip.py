"""Round trip per transport: each round is one timed batch of the suite's own loop."""

from __future__ import annotations

import os

from harness.timing import timed_batch

LOOPS = 1000  # round trips per pytest-benchmark round: values are per 1000 round trips


def test_round_trip_x1000(benchmark, channel):
    send, recv = channel.timed_ops()
    message = channel.prepare(os.urandom(channel.payload))
    benchmark.pedantic(timed_batch, args=(send, recv, message, LOOPS), rounds=30,
                       warmup_rounds=3, iterations=1)
    probe = os.urandom(channel.payload)
    channel.send(probe)
    assert bytes(channel.recv()) == probe
