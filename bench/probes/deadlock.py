"""Detect the deadlocks of one seeded lock graph, in process or by querying N servers.

``call``: the lock table is this process's own dicts; detection is the walk.
Any other transport: N forked servers each hold only their own state; the
detector asks every one of them over IPC (a query and a reply, one server
after another), rebuilds the table from the replies, then walks it. The
clock runs from the first query to the answer; server start-up is outside.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial

from harness.names import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor
from harness.timing import watchdog
from servers.deadlock import (
    NONE,
    PAYLOAD,
    QUERY,
    Cycles,
    LockGraph,
    decode,
    find_cycles,
    make_graph,
    state_handler,
)
from servers.transports import Channel, get_transport
from servers.transports.base import Buffer

METRICS = {"detect_ns": "ns", "cycles_found": "count", "cycles_planted": "count",
           "exact": "ratio", "messages": "count"}
# A batch repeats detection until it lasts this long, so the clock's own cost
# (~0.1 us a read) stays well under 1% of the fastest in-process walk.
MIN_BATCH_NS = 200_000


def detect_in_process(graph: LockGraph) -> tuple[Callable[[], Cycles], int]:
    """The monolithic detector: a walk over the lock table it already holds."""
    waiting, holder = graph.waiting(), graph.holder()
    return (lambda: find_cycles(waiting, holder)), 0


def detect_over_ipc(channels: Sequence[Channel]) -> Cycles:
    """Ask every server what it holds and waits for, rebuild the table, walk it."""
    waiting: dict[int, int] = {}
    holder: dict[int, int] = {}
    for channel in channels:
        channel.send(QUERY)
        server, resource, held = decode(channel.recv())
        if resource != NONE:
            waiting[server] = resource
        for r in held:
            holder[r] = server
    return find_cycles(waiting, holder)


def measure(detect: Callable[[], Cycles], planted: Cycles, settings: Settings,
            ) -> tuple[list[float], bool, int]:
    """(ns per detection per batch, every detection exact, cycles found)."""
    exact = True
    found = planted
    for _ in range(max(settings.warmups, 1)):  # also sizes the batch
        start = time.perf_counter_ns()
        found = detect()
        once = time.perf_counter_ns() - start
        exact &= found == planted
    loops = max(1, math.ceil(MIN_BATCH_NS / max(once, 1)))
    values = []
    for _ in range(settings.batches):
        start = time.perf_counter_ns()
        for _ in range(loops):
            found = detect()
        values.append((time.perf_counter_ns() - start) / loops)
        exact &= found == planted  # the walk is deterministic: the batch's last answer
    return values, exact, len(found)



def _handler(graph: LockGraph, server: int) -> Callable[[Buffer], Buffer]:
    """Server ``server``'s handler, made in the server: its own state alone."""
    return state_handler(graph.reply(server))

def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    graph = make_graph(case.k, str(case.param("graph")), int(case.param("seed")))
    transport = get_transport(case.transport)
    if transport.in_process:
        detect, messages = detect_in_process(graph)
        values, exact, found = measure(detect, graph.planted, settings)
    else:
        with Supervisor(names, "same-cpu", timeout=settings.timeout_s) as sup:
            sup.pin_client()
            channels = [sup.start(transport, PAYLOAD, partial(_handler, graph, s))
                        for s in range(graph.servers)]
            # One timer around all repetitions, outside each detection's clock.
            with watchdog(settings.timeout_s * (settings.batches + 1)):
                values, exact, found = measure(lambda: detect_over_ipc(channels),
                                               graph.planted, settings)
        messages = 2 * graph.servers
    return {"detect_ns": values, "cycles_found": [found],
            "cycles_planted": [len(graph.planted)], "exact": [float(exact)],
            "messages": [messages]}
