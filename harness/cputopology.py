"""The machine's CPU topology from sysfs, and the CPU pairs each placement class names.

A *placement* says where a case's server runs against its client:

- ``same-cpu``: on the client's CPU;
- ``smt-sibling``: on another hardware thread of the client's core;
- ``same-llc``: on another core that shares the client's last-level cache;
- ``cross-llc``: in the client's package, under another last-level cache (AMD's CCX);
- ``cross-package``: in another package (socket);
- ``cross-numa``: on another NUMA node;
- ``cross-cpu``: on any other CPU (whatever the machine gives: on a VM, another vCPU).

Each resolves to a concrete client CPU and the CPUs its servers may use (a chain spreads
its servers over them), as avsm/ipc-bench's ``run.py`` picks one CPU per distinct socket,
node and cache level against CPU 0. A class the machine lacks resolves to the reason.

The reader takes a ``files`` mapping (path under ``/sys/devices/system`` -> text), so a
recorded tree (``ipcbench topology --record``) reads exactly as the live one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from servers.transports import PLACEMENTS

SYSFS = "/sys/devices/system"  # a str: every worker imports this module, and pathlib costs ms
CLASSES = PLACEMENTS
RECORD_HEADER = "# ipcbench topology record (paths under /sys/devices/system)"
Files = Callable[[str], "str | None"]


class Unavailable(ValueError):
    """This machine has no CPU pair of the class asked for (the message says why)."""


def parse_cpulist(text: str) -> list[int]:
    """``0-3,8,10-11`` -> [0, 1, 2, 3, 8, 10, 11]; ValueError when it is not a CPU list."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"not a CPU list: {text!r}")
        cpus.extend(range(first, last + 1))
    return cpus


@dataclass(frozen=True)
class Cpu:
    """One logical CPU: its package, die, core (the lowest CPU of its core), its core's
    hardware threads, its last-level cache domain (the lowest CPU sharing it; ``llc_level``
    says which level that is) and its NUMA node."""

    id: int
    package: int
    die: int
    core: int
    threads: tuple[int, ...]
    llc: int
    llc_level: int
    node: int


@dataclass(frozen=True)
class Topology:
    cpus: dict[int, Cpu]
    usable: tuple[int, ...]  # the CPUs this process may run on (all, for a record)
    known: bool = True  # False: sysfs was unreadable; only same-cpu and cross-cpu plan

    @classmethod
    def read(cls, files: Files, usable: Iterable[int] | None = None) -> Topology:
        online = files("cpu/online")
        ids = parse_cpulist(online) if online else []
        if not ids:
            raise ValueError("no cpu/online list: not a sysfs CPU tree")
        nodes: dict[int, int] = {}
        for node in parse_cpulist(files("node/online") or ""):  # none: one node
            nodes.update(dict.fromkeys(parse_cpulist(files(f"node/node{node}/cpulist") or ""),
                                       node))
        cpus = {i: _cpu(files, i, nodes.get(i, 0)) for i in ids}
        allowed = tuple(sorted(set(ids) & set(usable))) if usable is not None else tuple(ids)
        return cls(cpus, allowed)

    @classmethod
    def from_record(cls, text: str) -> Topology:
        files = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                path, _, value = line.partition("\t")
                files[path] = value
        return cls.read(files.get)

    def relation(self, a: int, b: int) -> str:
        """The most specific class the pair (a, b) falls in (never cross-numa or
        cross-cpu: those cut across the others)."""
        x, y = self.cpus[a], self.cpus[b]
        if a == b:
            return "same-cpu"
        if y.id in x.threads:
            return "smt-sibling"
        if x.llc == y.llc:
            return "same-llc"
        if x.package == y.package:
            return "cross-llc"
        return "cross-package"

    def _matches(self, placement: str, client: int, other: int) -> bool:
        if placement == "cross-cpu":
            return other != client
        if placement == "cross-numa":
            return self.cpus[other].node != self.cpus[client].node
        return self.relation(client, other) == placement

    def plan(self, placement: str) -> tuple[int, list[int]]:
        """(client CPU, the CPUs its servers use, first choice first) for a class;
        Unavailable with the reason when the usable CPUs hold no such pair."""
        if placement not in CLASSES:
            raise ValueError(f"unknown placement {placement!r} (known: {', '.join(CLASSES)})")
        if placement == "same-cpu":
            return self.usable[0], [self.usable[0]]
        if not self.known and placement != "cross-cpu":
            raise Unavailable("no readable CPU topology here (sysfs): only same-cpu and "
                              "cross-cpu can be placed")
        for client in self.usable:
            # Other cores' first threads before second ones: a chain spread over the
            # class puts one server per core before it doubles up on a core.
            servers = sorted((c for c in self.usable if self._matches(placement, client, c)),
                             key=lambda c: (self.cpus[c].threads.index(c), c))
            if servers:
                return client, servers
        raise Unavailable(self.why_not(placement))

    def why_not(self, placement: str) -> str:
        if len(self.usable) < 2:
            return f"{placement} needs two usable CPUs (this process may use one)"
        reasons = {
            "smt-sibling": "no usable CPU has an SMT sibling (no SMT here, or it is off)",
            "same-llc": "no two usable cores share a last-level cache",
            "cross-llc": "every package here has one last-level cache (no CCX split)",
            "cross-package": "one package (socket) here",
            "cross-numa": "one NUMA node here",
        }
        return reasons.get(placement, f"no usable CPU pair is {placement}")

    def plans(self) -> dict[str, tuple[int, list[int]] | str]:
        """Every class: its CPUs, or why it is not here."""
        found: dict[str, tuple[int, list[int]] | str] = {}
        for placement in CLASSES:
            try:
                found[placement] = self.plan(placement)
            except Unavailable as exc:
                found[placement] = str(exc)
        return found

    def summary(self) -> str:
        """One line a fleet's machine table can show: packages, NUMA nodes, last-level
        caches, cores and CPUs (``unknown shape`` where sysfs was unreadable)."""
        cpus = self.cpus.values()
        if not self.known:
            return f"{len(self.cpus)} CPUs, unknown shape"
        counts = [(len({c.package for c in cpus}), "package"),
                  (len({c.node for c in cpus}), "node"),
                  (len({(c.package, c.llc) for c in cpus}), "LLC"),
                  (len({(c.package, c.core) for c in cpus}), "core"),
                  (len(self.cpus), "CPU")]
        return ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in counts)

    def layout(self) -> list[tuple[int, int, int, int, tuple[int, ...]]]:
        """(package, die, LLC domain, node, threads) per core, in order."""
        cores = {}
        for cpu in self.cpus.values():
            cores[cpu.core] = (cpu.package, cpu.die, cpu.llc, cpu.node, cpu.threads)
        return sorted(cores.values())


def _cpu(files: Files, cpu: int, node: int) -> Cpu:
    base = f"cpu/cpu{cpu}"

    def number(name: str, default: int) -> int:
        text = files(f"{base}/topology/{name}")
        value = int(text) if text and text.strip().lstrip("-").isdigit() else default
        return value if value >= 0 else default  # die_id -1: the kernel does not know

    threads_text = files(f"{base}/topology/core_cpus_list") or \
        files(f"{base}/topology/thread_siblings_list")
    threads = tuple(parse_cpulist(threads_text)) if threads_text else (cpu,)
    package = number("physical_package_id", 0)
    llc, level = _last_level_cache(files, base)
    # No cache information (some VMs, some ARM boards): take the package as the domain.
    domain = min(llc) if llc else -1 - package
    return Cpu(cpu, package, number("die_id", 0), min(threads), threads, domain, level, node)


def _last_level_cache(files: Files, base: str) -> tuple[list[int], int]:
    best: tuple[list[int], int] = ([], 0)
    for index in range(16):
        level = files(f"{base}/cache/index{index}/level")
        if level is None:
            break
        kind = (files(f"{base}/cache/index{index}/type") or "").strip()
        shared = files(f"{base}/cache/index{index}/shared_cpu_list")
        if kind != "Instruction" and shared and int(level) > best[1]:
            best = (parse_cpulist(shared), int(level))
    return best


def sysfs_files(root: str | os.PathLike[str] = SYSFS) -> Files:
    def read(path: str) -> str | None:
        try:
            with open(os.path.join(root, path)) as file:
                return file.read().strip()
        except OSError:
            return None
    return read


@cache
def _sysfs() -> Topology:
    try:
        return Topology.read(sysfs_files())
    except (ValueError, OSError):  # no readable sysfs (some containers): CPUs, no shape
        ids = sorted(os.sched_getaffinity(0))
        return Topology({i: Cpu(i, 0, 0, i, (i,), -1, 0, 0) for i in ids}, tuple(ids),
                        known=False)


def this_machine() -> Topology:
    """The live machine's topology (sysfs read once per process), over the CPUs this
    process may use now (a worker, a pinned test and the runner each use other sets)."""
    every = _sysfs()
    return Topology(every.cpus, tuple(sorted(set(every.cpus) & os.sched_getaffinity(0))),
                    every.known)


def record(root: str | os.PathLike[str] = SYSFS) -> str:
    """The files the reader uses, as text: ``path<TAB>content`` per line."""
    read = sysfs_files(root)
    lines = [RECORD_HEADER]
    paths = ["cpu/online"]
    online = read("cpu/online") or ""
    for cpu in parse_cpulist(online):
        base = f"cpu/cpu{cpu}"
        paths += [f"{base}/topology/{name}" for name in (
            "physical_package_id", "die_id", "core_id", "core_cpus_list",
            "thread_siblings_list")]
        for index in range(16):
            if read(f"{base}/cache/index{index}/level") is None:
                break
            paths += [f"{base}/cache/index{index}/{name}" for name in (
                "level", "type", "shared_cpu_list")]
    paths += ["node/online", *(f"node/node{n}/cpulist"
                               for n in parse_cpulist(read("node/online") or ""))]
    for path in paths:
        value = read(path)
        if value is not None:
            lines.append(f"{path}\t{value}")
    return "\n".join(lines) + "\n"
