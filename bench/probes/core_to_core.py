"""One CPU pair's round trip: the client pinned to one CPU, its echo server to the other.

Over ``shm-spin`` the message is a cache line both sides poll, so the round trip is two
cache-line hand-offs between the CPUs (plus the interpreter's loop); over ``pipe`` it is
two wake-ups as well. Each batch is the mean of the case's round trips; the worker runs
``settings.warmups`` batches unrecorded first.
"""

from __future__ import annotations

from time import perf_counter_ns

from bench.topologies import echo
from harness.names import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor

METRICS = {"round_trip_ns": "ns"}


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list]:
    case = cases[0]
    pair = (int(case.param("cpu_a")), int(case.param("cpu_b")))
    loops = int(case.param("round_trips"))
    values = []
    with Supervisor(names, case.placement, timeout=settings.timeout_s, cpus=pair) as sup:
        sup.pin_client()
        setup = echo(case, sup)
        setup.check()
        send, recv, message = setup.send, setup.recv, setup.message
        assert recv is not None  # a placement needs two processes
        for batch in range(settings.warmups + settings.batches):
            t0 = perf_counter_ns()
            for _ in range(loops):
                send(message)
                recv()
            if batch >= settings.warmups:
                values.append((perf_counter_ns() - t0) / loops)
        setup.check()
    return {"round_trip_ns": values}
