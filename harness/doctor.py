"""``ipcbench doctor``: what on this machine will make numbers noisy, and how to fix it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import noise, reference
from harness.cleanup import stray_processes
from harness.disturbance import LIMIT
from harness.ipcnames import SHM_DIR, pid_alive, runner_pid, scratch_root, state_dir
from harness.metadata import virtualization
from harness.names import PREFIX
from harness.records import PROBE
from servers.transports import TRANSPORTS
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


def check_transport_limits() -> Finding:
    """The largest frame each transport carries here, as it reads its limits."""
    limits = []
    for name, transport in TRANSPORTS.items():
        if not transport.in_process:
            try:
                limits.append(f"{name} {transport.max_payload():,} B")
            except OSError as exc:
                limits.append(f"{name} unreadable ({exc.strerror})")
    return Finding(OK, "frame limits", ", ".join(limits))


def check_futex_call(calls: int = 20_000) -> Finding:
    """What a futex call through ctypes costs here (the ``futex`` transport makes four
    per round trip), beside a plain system call made by Python's own os module."""
    import mmap
    import time

    from servers.transports.futex import Doorbell, futex_syscall

    syscall = futex_syscall()
    if syscall is None:
        return Finding(NOTE, "futex call", "no futex syscall number known for this machine")
    area = mmap.mmap(-1, mmap.PAGESIZE)
    bell = Doorbell(area, 0, syscall, timeout=1.0)

    def per_call(call: Callable[[], object]) -> float:
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        return (time.perf_counter_ns() - started) / calls

    wake = min(per_call(bell.ring) for _ in range(3))  # FUTEX_WAKE, nobody waiting
    plain = min(per_call(os.getppid) for _ in range(3))
    bell.release()
    area.close()
    return Finding(OK, "futex call", f"a FUTEX_WAKE through ctypes costs {wake:.0f} ns here "
                   f"(nobody waiting), a plain system call from Python {plain:.0f} ns: the "
                   f"{wake - plain:.0f} ns between is ctypes' call and the futex's own work")


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
          check_shm, check_pipes, check_transport_limits, check_futex_call, check_open_files,
          check_leftovers)
NOISE_SUITES = ("quick", "default")


def check_noise(seconds: float) -> list[Finding]:
    """Sample the machine's jitter now, and say what the built-in suites could detect."""
    from harness.suite import load_suite  # the experiments: only when the noise is asked for

    series = noise.probe(seconds)
    batches = len(series.value)
    if batches < 10:
        return [Finding(NOTE, "noise", f"only {batches} batches in {seconds:g} s: too few")]
    disturbed = float(np.mean(series.foreign > LIMIT))
    value_s = noise.per_second(series, series.value)
    found = [
        Finding(NOTE, "noise: host",
                f"over {seconds:g} s: steal {np.mean(series.steal):.2%} of the CPU's time; "
                f"{disturbed:.0%} of 10-ms batches lost more than {LIMIT:.0%} of their CPU time "
                "to other work (a run sets those aside)"),
        Finding(NOTE, "noise: jitter",
                f"same-CPU pipe round trip {np.median(series.value) / 1000:.2f} us; CV per "
                f"10-ms batch {noise.cv(series.value):.1%} raw, "
                f"{noise.cv(series.value / series.reference):.1%} over the reference; per "
                f"second ({len(value_s)} s) {noise.cv(value_s):.1%} raw, "
                f"{noise.cv(noise.per_second(series, series.value / series.reference)):.1%} "
                f"over the reference ({reference.NAME}), "
                f"{noise.cv(noise.per_second(series, series.value / series.cpu_loop)):.1%} over "
                "a CPU loop"),
    ]
    for name in NOISE_SUITES:
        suite = load_suite(name)
        cases = sum(c.topology != PROBE for c in suite.plan().runnable)
        floor = noise.suite_floor(series, name, suite.settings, cases)
        s = floor.settings
        found.append(Finding(
            NOTE, f"noise: {name} suite",
            f"{s.workers} workers x {s.batches} batches of {s.batch_ms:g} ms: detectable now "
            f"{_pct(floor.raw[0])} raw, {_pct(floor.normalized[0])} with --normalize, for a "
            f"change in one case of {cases}; {_pct(floor.raw[1])} and "
            f"{_pct(floor.normalized[1])} for a change many cases share"))
    return found


def _pct(change: float) -> str:
    return "-" if np.isnan(change) else f"{change:.1%}"


def diagnose(noise_seconds: float = 0.0) -> list[Finding]:
    found = [check() for check in CHECKS]
    if noise_seconds > 0:
        found += check_noise(noise_seconds)
    return found + pyperf_system()
