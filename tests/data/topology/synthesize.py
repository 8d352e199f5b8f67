"""Writes the sysfs trees of four machine shapes as ``ipcbench topology --record`` would.

No such machine was at hand; each tree follows the numbering Linux gives that shape (see
each function), so the planner is tested on the CPU ids a user would really see. A tree
recorded on a real machine (``ipcbench topology --record FILE``) can sit beside them.

    python tests/data/topology/synthesize.py   # rewrites the four .txt files here
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
HEADER = "# ipcbench topology record (paths under /sys/devices/system)"


def cpulist(cpus: list[int]) -> str:
    cpus, runs, start = sorted(cpus), [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            runs.append(f"{start}" if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(runs)


def tree(note: str, cpus: dict[int, dict], nodes: dict[int, list[int]]) -> str:
    """``cpus``: id -> package, die, core_id, threads, l2 (CPUs), l3 (CPUs)."""
    lines = [HEADER, f"# {note}", f"cpu/online\t{cpulist(list(cpus))}"]
    for cpu, c in sorted(cpus.items()):
        base = f"cpu/cpu{cpu}"
        lines += [f"{base}/topology/physical_package_id\t{c['package']}",
                  f"{base}/topology/die_id\t{c['die']}",
                  f"{base}/topology/core_id\t{c['core_id']}",
                  f"{base}/topology/core_cpus_list\t{cpulist(c['threads'])}",
                  f"{base}/topology/thread_siblings_list\t{cpulist(c['threads'])}"]
        for index, (level, kind, shared) in enumerate((
                (1, "Data", c["threads"]), (1, "Instruction", c["threads"]),
                (2, "Unified", c["l2"]), (3, "Unified", c["l3"]))):
            lines += [f"{base}/cache/index{index}/level\t{level}",
                      f"{base}/cache/index{index}/type\t{kind}",
                      f"{base}/cache/index{index}/shared_cpu_list\t{cpulist(shared)}"]
    lines.append(f"node/online\t{cpulist(list(nodes))}")
    lines += [f"node/node{n}/cpulist\t{cpulist(members)}" for n, members in nodes.items()]
    return "\n".join(lines) + "\n"


def intel_two_socket() -> str:
    """2 x Xeon E5-2623 v4 (4 cores, 8 threads each): Linux numbers the first thread of
    every core first, socket by socket (0-3, 4-7), then the second threads (8-15); one L3
    per socket; a NUMA node per socket."""
    cpus = {}
    for thread in range(2):
        for socket in range(2):
            for core in range(4):
                cpu = thread * 8 + socket * 4 + core
                first = socket * 4 + core
                cpus[cpu] = {"package": socket, "die": 0, "core_id": core,
                             "threads": [first, first + 8], "l2": [first, first + 8],
                             "l3": [*range(socket * 4, socket * 4 + 4),
                                    *range(8 + socket * 4, 8 + socket * 4 + 4)]}
    nodes = {s: [c for c, v in cpus.items() if v["package"] == s] for s in range(2)}
    return tree("2-socket Intel Xeon E5-2623 v4, SMT on, NUMA node per socket", cpus, nodes)


def amd_epyc() -> str:
    """EPYC 7313P (Zen 3: 4 CCDs of one 4-core CCX, 32 MB L3 each), SMT on, NPS1: cores
    0-15, their second threads 16-31; an L3 per CCX (0-3,16-19 ...); one NUMA node."""
    cpus = {}
    for thread in range(2):
        for core in range(16):
            ccx = core // 4
            cpus[thread * 16 + core] = {
                "package": 0, "die": 0, "core_id": core, "threads": [core, core + 16],
                "l2": [core, core + 16],
                "l3": [*range(ccx * 4, ccx * 4 + 4), *range(16 + ccx * 4, 16 + ccx * 4 + 4)]}
    return tree("AMD EPYC 7313P, 4 CCX of 4 cores, SMT on, NPS1", cpus, {0: list(cpus)})


def xeon_four_socket_interleaved() -> str:
    """4 x Xeon 2.60 GHz (2 cores, 2 threads each), numbered round-robin over the sockets
    (0, 1, 2, 3 are four packages; a core's sibling is +8) and one NUMA node, as hwloc's
    recording of such a machine shows it (tests/hwloc/linux/16em64t-4s2c2t.output)."""
    cpus = {}
    for package in range(4):
        for core in range(2):
            first = package + 4 * core
            for cpu in (first, first + 8):
                cpus[cpu] = {"package": package, "die": 0, "core_id": core,
                             "threads": [first, first + 8], "l2": [first, first + 8],
                             "l3": [package, package + 4, package + 8, package + 12]}
    return tree("4-socket Xeon, CPUs numbered round-robin over sockets, SMT on, one node",
                cpus, {0: list(cpus)})


def desktop() -> str:
    """Core i7-7700 (4 cores, 8 threads, one L3): threads 0-3, their siblings 4-7."""
    cpus = {}
    for thread in range(2):
        for core in range(4):
            cpus[thread * 4 + core] = {"package": 0, "die": 0, "core_id": core,
                                       "threads": [core, core + 4], "l2": [core, core + 4],
                                       "l3": list(range(8))}
    return tree("Intel Core i7-7700 desktop, SMT on, one L3", cpus, {0: list(cpus)})


if __name__ == "__main__":
    for name, text in (("intel-2s-smt", intel_two_socket()), ("amd-epyc-4ccx", amd_epyc()),
                       ("desktop-1llc", desktop()),
                       ("xeon-4s-interleaved", xeon_four_socket_interleaved())):
        (HERE / f"{name}.txt").write_text(text)
