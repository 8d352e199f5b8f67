"""Round trip per transport: each pedantic round is one timed batch of the suite's own loop.

The batch size is fixed per transport (about 10 ms a round here), not calibrated, so
that saved runs stay comparable: pytest-benchmark's values are per batch, and
``extra_info`` says how many round trips that is.
"""

from __future__ import annotations

import os

from harness.timing import timed_batch

LOOPS = {"call": 300_000, "shm-spin": 30_000}
DEFAULT_LOOPS = 1_500  # the kernel transports: 6 to 11 us a round trip here


def test_round_trip_batch(benchmark, channel, transport):
    loops = LOOPS.get(transport, DEFAULT_LOOPS)
    benchmark.extra_info["round_trips_per_round"] = loops
    send, recv = channel.timed_ops()
    message = channel.prepare(os.urandom(channel.payload))
    benchmark.pedantic(timed_batch, args=(send, recv, message, loops), rounds=25,
                       warmup_rounds=3, iterations=1)
    probe = os.urandom(channel.payload)
    channel.send(probe)
    assert bytes(channel.recv()) == probe
