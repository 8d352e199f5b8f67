"""Every single round trip timed: the tail of the latency distribution.

The client times each round trip alone with ``perf_counter_ns`` (two clock reads around
one send and its reply) and records it in an HDR histogram (3 significant digits, 1 ns
to 100 s). A worker runs ``settings.batches`` batches of the case's round trips after a
warm-up; for the batch that held the worst round trip it notes what the interference
counters saw on the case's CPUs then (``harness.counters``): switches into other tasks,
the share of CPU time other work took, and steal, so a reader can tell another task's
turn or a host's burst from the transport's own tail.

The clock's own cost (two back-to-back reads, median over many) is measured and
reported beside the percentiles; it is in every recorded value and is not subtracted.
"""

from __future__ import annotations

import math
import time
from time import perf_counter_ns

from hdrh.histogram import HdrHistogram

from bench.topologies import echo
from harness.counters import CaseCounters
from harness.names import NameSource
from harness.protocol import HISTOGRAM
from harness.records import Case, Settings
from harness.supervisor import Supervisor

LOWEST_NS, HIGHEST_NS, DIGITS = 1, 100 * 10**9, 3
PERCENTILES = {"p50_ns": 50.0, "p90_ns": 90.0, "p99_ns": 99.0, "p999_ns": 99.9,
               "p9999_ns": 99.99}
METRICS = {**dict.fromkeys(PERCENTILES, "ns"), "max_ns": "ns", "clock_ns": "ns",
           "round_trips": "count", "worst_batch_other_switches": "count",
           "worst_batch_foreign_share": "ratio", "worst_batch_steal_ns": "ns"}
CLOCK_SAMPLES = 20_001
WARMUP_SHARE = 0.1  # of one batch's round trips, before any is recorded


def clock_cost_ns(samples: int = CLOCK_SAMPLES) -> float:
    """The median of two back-to-back ``perf_counter_ns`` reads: what one timed round trip
    carries on top of the round trip itself."""
    clock = perf_counter_ns
    gaps = []
    for _ in range(samples):
        t0 = clock()
        gaps.append(clock() - t0)
    gaps.sort()
    return float(gaps[len(gaps) // 2])


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list]:
    case = cases[0]
    n = int(case.param("round_trips"))
    histogram = HdrHistogram(LOWEST_NS, HIGHEST_NS, DIGITS)
    worst, context = -1, (math.nan, math.nan, math.nan)
    with Supervisor(names, case.placement, timeout=settings.timeout_s) as sup:
        sup.pin_client()
        setup = echo(case, sup)
        setup.check()
        send, recv, message = setup.send, setup.recv, setup.message
        counters = CaseCounters(sup.pids, [sup.client_cpu, *(s.cpu for s in sup.servers)])
        try:
            clock = perf_counter_ns
            times = [0] * n
            for batch in range(-1, settings.batches):  # -1: the warm-up, not recorded
                count = max(1, int(n * WARMUP_SHARE)) if batch < 0 else n
                before = counters.read()
                if recv is None:  # an in-process call returns the reply itself
                    for i in range(count):
                        t0 = clock()
                        send(message)
                        times[i] = clock() - t0
                else:
                    for i in range(count):
                        t0 = clock()
                        send(message)
                        recv()
                        times[i] = clock() - t0
                if batch < 0:
                    continue
                record = (counters.read() - before).batch_record(
                    time.monotonic(), math.nan, counters.cpu_count, counters.scope)
                for value in times:
                    histogram.record_value(min(max(value, LOWEST_NS), HIGHEST_NS))
                top = max(times)
                if top > worst:
                    worst = top
                    context = (record.other_switches, record.foreign_share, record.steal_ns)
        finally:
            counters.close()
        setup.check()  # the last bytes still arrive intact
    values: dict[str, list] = {
        name: [float(histogram.get_value_at_percentile(p))] for name, p in PERCENTILES.items()}
    values |= {"max_ns": [float(worst)], "clock_ns": [clock_cost_ns()],
               "round_trips": [float(histogram.get_total_count())],
               "worst_batch_other_switches": [float(context[0])],
               "worst_batch_foreign_share": [float(context[1])],
               "worst_batch_steal_ns": [float(context[2])],
               HISTOGRAM: [histogram.encode().decode("ascii")]}
    return values
