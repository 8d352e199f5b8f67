"""Counters read around every timed batch: the case's processes and the CPUs they run on.

Read straight from ``/proc`` (what psutil reads too): every worker imports this, and
psutil's import alone cost each of them about 20 ms. A batch's window gives both
the per-operation counters (switches, CPU time) and what disturbed it (steal time,
other tasks on the case's CPUs, time the case's processes waited to run).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, fields

from harness.cpucounters import CpuCounters, CpuTotals
from harness.records import BatchRecord


def _schedstat(pid: int) -> tuple[int, int, int]:
    """(CPU ns, ns runnable but waiting, timeslices) from /proc/<pid>/schedstat."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        runtime, delay, slices = schedstat.read().split()
    return int(runtime), int(delay), int(slices)


def _switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from /proc/<pid>/status."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if "ctxt_switches:" in line:
                name, value = line.split(":")
                found[name] = int(value)
    return found["voluntary_ctxt_switches"], found["nonvoluntary_ctxt_switches"]


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of a case's processes (summed) and CPUs, at one moment."""

    clock_ns: int
    voluntary: int
    involuntary: int
    cpu_ns: int
    run_delay_ns: int
    timeslices: int
    cpu: CpuTotals

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def per_op(self, ops: int) -> dict[str, float]:
        return {
            "ctx_voluntary_per_op": self.voluntary / ops,
            "ctx_involuntary_per_op": self.involuntary / ops,
            "ctx_switches_per_op": (self.voluntary + self.involuntary) / ops,
            "system_ctxt_per_op": self.cpu.system_ctxt / ops,
            "cpu_ns_per_op": self.cpu_ns / ops,
        }

    def batch_record(self, at_s: float, ref_ns: float, cpus: int, scope: str) -> BatchRecord:
        """What disturbed the window these counters span (a difference of two reads)."""
        ours = self.timeslices if scope == "cpus" else self.voluntary + self.involuntary
        return BatchRecord(
            at_s=at_s, window_ns=self.clock_ns, ref_ns=ref_ns,
            switches=self.voluntary + self.involuntary, steal_ns=self.cpu.steal_ns,
            other_switches=max(0, self.cpu.switches - ours), run_delay_ns=self.run_delay_ns,
            # CPU time on the case's CPUs that went to neither its processes nor idle:
            # other tasks, interrupts, and steal (which Linux keeps out of task time).
            foreign_ns=cpus * self.clock_ns - self.cpu.idle_ns - self.cpu_ns, cpus=cpus)


class CaseCounters:
    """Reads the counters of this process (the client), its servers, and their CPUs."""

    def __init__(self, servers: list[int], cpus: list[int]) -> None:
        self._pids = [os.getpid(), *servers]
        self._cpus = CpuCounters(cpus)
        self.cpu_count = len(self._cpus.cpus)
        self.scope = self._cpus.scope

    def read(self) -> Counters:
        switches = [_switches(pid) for pid in self._pids]
        sched = [_schedstat(pid) for pid in self._pids]
        # The client's own schedstat lags by its current timeslice; its thread clock does not.
        cpu = time.thread_time_ns() + sum(s[0] for s in sched[1:])
        return Counters(time.perf_counter_ns(), sum(v for v, _ in switches),
                        sum(i for _, i in switches), cpu, sum(s[1] for s in sched),
                        sum(s[2] for s in sched), self._cpus.read())

    def close(self) -> None:
        self._cpus.close()


def _own_cpu_ns() -> int:
    """CPU time of this process and of every child it has reaped (with their own)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return int(sum(u.ru_utime + u.ru_stime for u in usage) * 1e9)


class LifeWindow:
    """What other work took of ``cpus`` while the runner waited for one worker: CPU time
    on them that went to neither idle nor this process and its reaped children (the
    worker, and through it its servers), or steal. For probes, which time no batches."""

    def __init__(self, cpus: list[int]) -> None:
        self._cpu = CpuCounters(cpus)
        self._count = len(self._cpu.cpus)
        self._start = (time.perf_counter_ns(), self._cpu.read(), _own_cpu_ns())

    def foreign_share(self) -> float:
        """Over the window until now: call it after the worker is reaped."""
        clock, cpu, own = time.perf_counter_ns(), self._cpu.read(), _own_cpu_ns()
        offered = self._count * (clock - self._start[0])
        spent = cpu - self._start[1]
        foreign = offered - spent.idle_ns - (own - self._start[2])
        return max(foreign, spent.steal_ns, 0) / offered if offered > 0 else 0.0

    def close(self) -> None:
        self._cpu.close()
