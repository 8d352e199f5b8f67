"""Memory of N idle-but-warm servers, and of the same N services as objects in one process."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from harness.names import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor
from harness.timing import watchdog
from servers.transports import Channel, get_transport
from servers.workloads import Workload

# Requests each service answers before it is measured: a server's footprint is
# the pages it touches serving, not only those it touched starting.
WARM_REQUESTS = 50


def page_table_bytes(pid: int) -> int:
    """VmPTE from /proc/<pid>/status: the page tables USS and PSS do not count."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPTE:"):
            return int(line.split()[1]) * 1024
    return 0


def start_services(case: Case, sup: Supervisor) -> list[Channel]:
    transport = get_transport(case.transport)
    if case.param("start") == "exec":
        return [sup.exec_echo(case.payload_bytes) for _ in range(case.k)]
    return [sup.start(transport, case.payload_bytes, Workload().handler) for _ in range(case.k)]


def warm(channel: Channel, message: bytes) -> None:
    for _ in range(WARM_REQUESTS):
        channel.send(message)
        if bytes(channel.recv()) != message:
            raise RuntimeError("a footprint server answered with other bytes")


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    with Supervisor(names, "same-cpu", timeout=settings.timeout_s) as sup:
        channels = start_services(case, sup)
        message = os.urandom(case.payload_bytes)
        for channel in channels:
            with watchdog(settings.timeout_s):  # a stuck server fails the case, not hangs it
                warm(channel, message)

        pids = [os.getpid(), *sup.pids]  # the client, as M_k's process, and each server
        memory = [psutil.Process(pid).memory_full_info() for pid in pids]
        tables = [page_table_bytes(pid) for pid in pids]
    return {
        "uss_total": [sum(m.uss for m in memory)],
        "pss_total": [sum(m.pss for m in memory)],
        "rss_total": [sum(m.rss for m in memory)],
        "pte_total": [sum(tables)],
        "uss_client": [memory[0].uss],
    }
