"""``ipcbench doctor``: what on this machine will make numbers noisy, and how to fix it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.cleanup import stray_processes
from harness.ipcnames import SHM_DIR, pid_alive, runner_pid, scratch_root, state_dir
from harness.metadata import virtualization
from harness.names import PREFIX
from servers.transports.mq import QUEUE_DEPTH, MqLimits
from servers.transports.pipe import pipe_max_size

OK, NOTE, WARN = "ok", "note", "attention"


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    text: str


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def check_virtualization() -> Finding:
    virt = virtualization()
    if virt == "none":
        return Finding(OK, "virtualization", "bare metal")
    return Finding(NOTE, "virtualization",
                   f"{virt}: cross-cpu rows measure vCPU wake-up, and the host's load comes and "
                   "goes in spells; compare cases within one run, or pin the VM's vCPUs on the "
                   "host")


def check_governor() -> Finding:
    governors = {g for g in (_read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor")
                             for c in sorted(os.sched_getaffinity(0))) if g}
    if not governors:
        return Finding(NOTE, "CPU governor", "no cpufreq here (the VM or firmware sets the clock)")
    if governors == {"performance"}:
        return Finding(OK, "CPU governor", "performance")
    return Finding(WARN, "CPU governor",
                   f"{', '.join(sorted(governors))}: the clock moves under load; run "
                   "`python -m pyperf system tune` or set the governor to performance")


def check_isolation() -> Finding:
    isolated = _read("/sys/devices/system/cpu/isolated") or ""
    if isolated:
        return Finding(OK, "isolated CPUs", isolated)
    return Finding(NOTE, "isolated CPUs",
                   "none: other tasks may run on the measured CPU (isolcpus= on the kernel "
                   "command line keeps them off)")


def check_load() -> Finding:
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    if load > 0.5 * cpus:
        return Finding(WARN, "load", f"1-minute load {load:.2f} on {cpus} CPUs: other work "
                       "competes with the benchmark; stop it first")
    return Finding(OK, "load", f"1-minute load {load:.2f} on {cpus} CPUs")


def check_mq() -> Finding:
    limits = MqLimits.read()
    pairs = limits.queue_pairs_allowed(64)
    text = (f"msgsize_max {limits.msgsize_max} B, msg_max {limits.msg_max}, queues_max "
            f"{limits.queues_max}, RLIMIT_MSGQUEUE {limits.rlimit_bytes} B: "
            f"{pairs} queue pairs of 64 B")
    if limits.msg_max < QUEUE_DEPTH or pairs < 16:
        return Finding(WARN, "message queues", text + "; raise fs.mqueue.* or `ulimit -q` "
                       "for mq chains and rings")
    return Finding(OK, "message queues", text)


def check_shm() -> Finding:
    stat = os.statvfs(SHM_DIR)
    free = stat.f_bavail * stat.f_frsize
    if free < 256 << 20:
        return Finding(WARN, "/dev/shm", f"{free >> 20} MiB free: the shm payload sweep needs "
                       "256 MiB; remount /dev/shm larger")
    return Finding(OK, "/dev/shm", f"{free >> 20} MiB free")


def check_pipes() -> Finding:
    return Finding(OK, "pipes", f"pipe-max-size {pipe_max_size()} B")


def check_leftovers() -> Finding:
    objects = [p.name for p in SHM_DIR.iterdir() if PREFIX in p.name]
    journals = [p.name for folder in (state_dir(), scratch_root())  # and scratch folders
                for p in folder.glob(f"{PREFIX}*") if not pid_alive(runner_pid(p.name) or 0)]
    strays = stray_processes()
    if objects or journals or strays:
        found = len(objects) + len(journals) + len(strays)
        return Finding(WARN, "leftovers", f"{found} objects, journals or processes of dead "
                       "runs; run `ipcbench cleanup`")
    return Finding(OK, "leftovers", "no IPC objects or processes of dead runs")


def check_open_files() -> Finding:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        return Finding(WARN, "open files", f"RLIMIT_NOFILE {soft}: rings of 64 processes need "
                       "more; `ulimit -n 4096`")
    return Finding(OK, "open files", f"RLIMIT_NOFILE {soft}")


def pyperf_system() -> list[Finding]:
    """pyperf's own advice (``pyperf system show``: ASLR, IRQ affinity, perf events...)."""
    try:
        done = subprocess.run([sys.executable, "-m", "pyperf", "system", "show"],
                              capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Finding(NOTE, "pyperf system show", f"could not run: {exc}")]
    section, found = "", []
    for line in done.stdout.splitlines():
        if line.strip() in ("Advices", "Warnings", "Errors"):
            section = line.strip()
        elif section and line.strip() and not line.startswith(("=", "Run ")):
            found.append(Finding(NOTE, f"pyperf: {section.lower().rstrip('s')}", line.strip()))
    return found


CHECKS = (check_virtualization, check_governor, check_isolation, check_load, check_mq,
          check_shm, check_pipes, check_open_files, check_leftovers)


def diagnose() -> list[Finding]:
    return [check() for check in CHECKS] + pyperf_system()
