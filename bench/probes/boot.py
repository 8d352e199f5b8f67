"""Boot N services one after another until each has answered a first request.

``fork``: each server is forked from this worker (``Supervisor.start``) and
answers over the case's transport; ``exec``: each is a fresh interpreter
(``Supervisor.exec_echo``, ``servers.standalone``) reached over pipes;
``object``: the same N services are handlers attached in this process
(transport ``call``) and called once. The clock runs from before the
supervisor exists to the N-th correct reply; stopping the servers is not
timed. Client and servers share one CPU, so a boot is sequential work, not
a race between vCPUs (a cross-CPU wake-up alone costs ~60 us on a VM).
"""

from __future__ import annotations

import os
from time import perf_counter_ns

from harness.names import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor
from harness.timing import watchdog
from servers.transports import Channel, get_transport
from servers.workloads import Workload

# boot_total: nothing to N answers; boot_start / boot_first_reply: per server, the
# mean time from "start it" to its ready handshake, and from there to its first reply.
METRICS = {"boot_total": "ns", "boot_per_server": "ns", "boot_start": "ns",
           "boot_first_reply": "ns"}
VARIANTS = ("fork", "exec", "object")
REQUEST_BYTES = 64


def boot(case: Case, settings: Settings, names: NameSource, n: int) -> dict[str, float]:
    """One boot of ``n`` services; the servers are stopped (untimed) before returning."""
    transport = get_transport(case.transport)
    handler = Workload().handler
    message = os.urandom(REQUEST_BYTES)
    started: list[int] = []
    answered: list[int] = []
    begin = perf_counter_ns()
    with Supervisor(names, "same-cpu", timeout=settings.timeout_s) as sup:
        for _ in range(n):
            t0 = perf_counter_ns()
            channel: Channel = (sup.exec_echo(REQUEST_BYTES) if case.param("start") == "exec"
                                else sup.start(transport, REQUEST_BYTES, handler))
            t1 = perf_counter_ns()
            channel.send(message)
            if bytes(channel.recv()) != message:
                raise RuntimeError(f"boot: server {len(started) + 1} of {n} answered "
                                   "with other bytes")
            t2 = perf_counter_ns()
            started.append(t1 - t0)
            answered.append(t2 - t1)
        total = perf_counter_ns() - begin
    return {"boot_total": total, "boot_per_server": total / n,
            "boot_start": sum(started) / n, "boot_first_reply": sum(answered) / n}


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    start = case.param("start")
    if start not in VARIANTS:
        raise ValueError(f"boot: unknown start {start!r} (known: {', '.join(VARIANTS)})")
    if (start == "object") != get_transport(case.transport).in_process:
        raise ValueError(f"boot: start {start!r} cannot run over {case.transport!r}")
    if start == "exec" and case.transport != "pipe":
        raise ValueError(f"boot: exec'd servers speak pipe only, not {case.transport!r}")
    affinity = os.sched_getaffinity(0)
    # Pinned where the servers go (same-cpu): each start runs while this process waits.
    os.sched_setaffinity(0, {min(affinity)})
    try:
        # Warm-ups boot a single service: the first fork or exec of a fresh worker
        # pays for cold code paths once, and N of them would cost exec too much.
        for _ in range(settings.warmups):
            with watchdog(settings.timeout_s):
                boot(case, settings, names, 1)
        values: dict[str, list[float]] = {metric: [] for metric in METRICS}
        # Repetitions stop early once they have used duration_s (at least one runs):
        # 32 exec'd interpreters per repetition would otherwise eat a suite's budget.
        budget = perf_counter_ns() + int(case.duration_s * 1e9)
        for _ in range(settings.batches):
            # Set outside the clock: a stuck server fails the case instead of hanging it.
            with watchdog(settings.timeout_s * (1 + case.k)):
                booted = boot(case, settings, names, case.k)
            for metric, value in booted.items():
                values[metric].append(value)
            if case.duration_s and perf_counter_ns() > budget:
                break
    finally:
        os.sched_setaffinity(0, affinity)
    return values
