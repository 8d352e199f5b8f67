"""Per-process counters read around a timed section: context switches and CPU time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil


def _system_ctxt() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    return 0


def _cpu_ns(proc: psutil.Process) -> int:
    # schedstat has nanoseconds; psutil's cpu_times has clock ticks (10 ms).
    try:
        return int(Path(f"/proc/{proc.pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        times = proc.cpu_times()
        return int((times.user + times.system) * 1e9)


@dataclass(frozen=True)
class Counters:
    voluntary: int
    involuntary: int
    cpu_ns: int
    system_ctxt: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.voluntary - other.voluntary,
            self.involuntary - other.involuntary,
            self.cpu_ns - other.cpu_ns,
            self.system_ctxt - other.system_ctxt,
        )

    def per_op(self, ops: int) -> dict[str, float]:
        return {
            "ctx_voluntary_per_op": self.voluntary / ops,
            "ctx_involuntary_per_op": self.involuntary / ops,
            "ctx_switches_per_op": (self.voluntary + self.involuntary) / ops,
            "system_ctxt_per_op": self.system_ctxt / ops,
            "cpu_ns_per_op": self.cpu_ns / ops,
        }


class ProcessCounters:
    """Reads the counters of a fixed set of processes (the client and its servers)."""

    def __init__(self, pids: list[int]) -> None:
        self._procs = [psutil.Process(pid) for pid in pids]

    def read(self) -> Counters:
        vol = invol = cpu = 0
        for proc in self._procs:
            switches = proc.num_ctx_switches()
            vol += switches.voluntary
            invol += switches.involuntary
            cpu += _cpu_ns(proc)
        return Counters(vol, invol, cpu, _system_ctxt())
