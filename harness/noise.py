"""The machine's noise floor, measured now: what ``ipcbench doctor`` says a gate can see.

For a few seconds a same-CPU pipe round trip runs in 10-ms batches, as a worker runs
them, each batch with the machine reference (``harness.reference``) and a CPU loop
timed around it and its disturbance read around it. From that series come the
coefficient of variation per batch and per second, raw and over each reference, and
an estimate of the smallest change each built-in suite could detect right now: its
workers are windows of the series as long as a worker's timed batches, spread over
the probe, and the detectable change is the one ``harness.compare`` would state for
a case with that spread.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from harness.compare import FDR, POWER
from harness.counters import CaseCounters
from harness.names import NameSource, new_run_prefix
from harness.records import Case, Settings
from harness.reference import PipeReference
from harness.supervisor import Supervisor
from harness.timing import calibrate, run_batches
from harness.topology import builder_path, load_builder

BATCH_NS = 10_000_000
CPU_LOOP = 20_000  # additions: about as long as the reference, in pure bytecode


@dataclass(frozen=True)
class Series:
    """The probe's batches: when, the round trip, both references, the disturbance."""

    at_s: np.ndarray
    value: np.ndarray
    reference: np.ndarray
    cpu_loop: np.ndarray
    foreign: np.ndarray  # share of the batch's CPU time that went elsewhere
    steal: np.ndarray


def cpu_loop_ns() -> float:
    """A loop of bytecode additions, timed like the reference (this thread's CPU clock)."""
    start = time.thread_time_ns()
    total = 0
    for i in repeat(1, CPU_LOOP):
        total += i
    return (time.thread_time_ns() - start) / CPU_LOOP


def probe(seconds: float) -> Series:
    """Run the same-CPU pipe ping-pong for ``seconds``, in 10-ms batches."""
    rows = []
    allowed = os.sched_getaffinity(0)
    try:
        with Supervisor(NameSource(new_run_prefix()), "same-cpu") as sup:
            sup.pin_client()
            setup = load_builder(builder_path("echo"))(Case("doctor", "pipe", "same-cpu", 64),
                                                       sup)
            loops = calibrate(setup.send, setup.recv, setup.message, BATCH_NS, setup.loop)
            counters = CaseCounters(sup.pids, [sup.client_cpu])
            try:
                with PipeReference() as reference:
                    end = time.monotonic() + seconds
                    refs, loops_ns = [reference.measure()], [cpu_loop_ns()]
                    while time.monotonic() < end:
                        at = time.monotonic()
                        before = counters.read()
                        [value] = run_batches(setup.send, setup.recv, setup.message, loops, 1,
                                              Settings().timeout_s, setup.loop)
                        window = counters.read() - before
                        refs.append(reference.measure())
                        loops_ns.append(cpu_loop_ns())
                        # each batch against the references around it, as a worker does
                        record = window.batch_record(at, (refs[-2] + refs[-1]) / 2, 1,
                                                     counters.scope)
                        rows.append((at, value, record.ref_ns, (loops_ns[-2] + loops_ns[-1]) / 2,
                                     record.foreign_share,
                                     record.steal_ns / max(record.window_ns, 1)))
            finally:
                counters.close()
    finally:
        os.sched_setaffinity(0, allowed)
    columns = np.array(rows, dtype=float).T
    return Series(*columns)


def cv(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.mean(values)) if len(values) > 1 else float("nan")


def per_second(series: Series, values: np.ndarray) -> np.ndarray:
    seconds = (series.at_s - series.at_s[0]).astype(int)
    return np.array([np.median(values[seconds == s]) for s in np.unique(seconds)])


def worker_spread(series: Series, batches: int, normalize: bool) -> float:
    """SD of log worker medians, a worker being ``batches`` consecutive undisturbed
    batches; normalized: over the median of its references."""
    keep = series.foreign <= 0.02
    value, ref = series.value[keep], series.reference[keep]
    count = len(value) // batches
    if count < 3:
        return float("nan")
    medians = []
    for w in range(count):
        part = slice(w * batches, (w + 1) * batches)
        medians.append(np.median(value[part]) / (np.median(ref[part]) if normalize else 1.0))
    return float(np.std(np.log(medians), ddof=1))


def detectable(spread: float, workers: int, alpha: float) -> float:
    """The change (ratio - 1) Welch's test finds with ``POWER`` between two runs of
    ``workers`` workers a side whose log worker medians spread ``spread``."""
    df = 2 * workers - 2
    se = spread * np.sqrt(2 / workers)
    from scipy import stats  # here: importing it costs every command half a second

    return float(np.expm1((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(POWER, df)) * se))


@dataclass(frozen=True)
class SuiteFloor:
    name: str
    settings: Settings
    cases: int  # timed cases compared: a lone change must pass BH at FDR / cases
    raw: tuple[float, float]  # detectable change: lone case, a change every case shares
    normalized: tuple[float, float]


def suite_floor(series: Series, name: str, settings: Settings, cases: int) -> SuiteFloor:
    batches = max(1, round(settings.batches * settings.batch_ms * 1e6 / BATCH_NS))
    found = []
    for normalize in (False, True):
        spread = worker_spread(series, batches, normalize)
        found.append((detectable(spread, settings.workers, FDR / max(cases, 1)),
                      detectable(spread, settings.workers, FDR)))
    return SuiteFloor(name, settings, cases, found[0], found[1])
