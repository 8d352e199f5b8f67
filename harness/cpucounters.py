"""Per-CPU counters: steal time, idle time and context switches of the CPUs a case uses.

Read around every timed batch, so they stay cheap: one read of ``/proc/stat``, the
cpuidle residency files (microseconds, where the kernel has a cpuidle driver) and,
where the kernel lets us, one perf software counter of context switches per CPU.
Without perf (``perf_event_paranoid`` and no CAP_PERFMON) the switches are the whole
machine's (``/proc/stat ctxt``); ``scope`` says which.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import astuple, dataclass

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
CPUIDLE = "/sys/devices/system/cpu/cpu{}/cpuidle"

# perf_event_open(2): the syscall number and the start of struct perf_event_attr.
PERF_SYSCALL = {"x86_64": 298, "aarch64": 241, "ppc64le": 319, "s390x": 331}
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CONTEXT_SWITCHES = 3
PERF_FLAG_FD_CLOEXEC = 8
PERF_ATTR_SIZE = 64  # PERF_ATTR_SIZE_VER0: type, size, config and the fields up to config1


@dataclass(frozen=True)
class CpuTotals:
    """Cumulative counters summed over a set of CPUs."""

    steal_ns: int
    idle_ns: int
    switches: int  # context switches on those CPUs, or on every CPU (scope "system")
    system_ctxt: int

    def __sub__(self, other: CpuTotals) -> CpuTotals:
        return CpuTotals(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __add__(self, other: CpuTotals) -> CpuTotals:
        return CpuTotals(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def _perf_switch_counter(cpu: int) -> int | None:
    """A counting perf event of every context switch on ``cpu``, or None if not allowed."""
    number = PERF_SYSCALL.get(os.uname().machine)
    if number is None:
        return None
    attr = struct.pack("IIQ", PERF_TYPE_SOFTWARE, PERF_ATTR_SIZE,
                       PERF_COUNT_SW_CONTEXT_SWITCHES).ljust(PERF_ATTR_SIZE, b"\0")
    buffer = ctypes.create_string_buffer(attr, PERF_ATTR_SIZE)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(number, buffer, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    return fd if fd >= 0 else None


def _idle_states(cpu: int) -> list[str]:
    try:
        return sorted(s for s in os.listdir(CPUIDLE.format(cpu)) if s.startswith("state"))
    except OSError:  # no cpuidle driver: idle comes from /proc/stat, in ticks
        return []


def _read_int(path: str) -> int:
    with open(path) as file:
        return int(file.read())


class CpuCounters:
    """Reads the totals of ``cpus``; ``close`` releases the perf events."""

    def __init__(self, cpus: list[int]) -> None:
        self.cpus = sorted(set(cpus))
        names = {f"cpu{c}" for c in self.cpus}
        self._lines = names
        self._idle_files = [f"{CPUIDLE.format(c)}/{state}/time" for c in self.cpus
                            for state in _idle_states(c)]
        self.idle_source = "cpuidle" if self._idle_files else "/proc/stat"
        fds = [_perf_switch_counter(c) for c in self.cpus]
        if all(fd is not None for fd in fds):
            self._perf = [fd for fd in fds if fd is not None]
            self.scope = "cpus"
        else:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
            self._perf = []
            self.scope = "system"

    def read(self) -> CpuTotals:
        steal = idle_ticks = ctxt = 0
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith("cpu"):
                    fields = line.split()
                    if fields[0] in self._lines:
                        idle_ticks += int(fields[4]) + int(fields[5])
                        steal += int(fields[8])
                elif line.startswith("ctxt "):
                    ctxt = int(line.split()[1])
                    break
        if self._idle_files:
            idle_ns = 1000 * sum(_read_int(path) for path in self._idle_files)
        else:
            idle_ns = idle_ticks * TICK_NS
        if self._perf:
            switches = sum(struct.unpack("Q", os.read(fd, 8))[0] for fd in self._perf)
        else:
            switches = ctxt
        return CpuTotals(steal * TICK_NS, idle_ns, switches, ctxt)

    def close(self) -> None:
        for fd in self._perf:
            os.close(fd)
        self._perf = []
