"""Per-process counters read around a timed section: context switches and CPU time.

Read straight from ``/proc`` (what psutil reads too): every worker imports this, and
psutil's import alone cost each of them about 20 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _system_ctxt() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    return 0


def _cpu_ns(pid: int) -> int:
    # schedstat has nanoseconds; /proc/<pid>/stat has clock ticks (10 ms).
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from /proc/<pid>/status."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.endswith(tuple("0123456789")) and "ctxt_switches:" in line:
            name, value = line.split(":")
            found[name] = int(value)
    return found["voluntary_ctxt_switches"], found["nonvoluntary_ctxt_switches"]


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
        self._pids = list(pids)

    def read(self) -> Counters:
        vol = invol = cpu = 0
        for pid in self._pids:
            voluntary, involuntary = _switches(pid)
            vol += voluntary
            invol += involuntary
            cpu += _cpu_ns(pid)
        return Counters(vol, invol, cpu, _system_ctxt())
