"""One worker process: run one case in a fresh interpreter and print its values as JSON.

The runner starts a new worker for every value set, as pyperf does, so one
case cannot warm the next. Workers import only what a timed case needs; the
servers they fork inherit that small image.
"""

from __future__ import annotations

import os
import sys
import time

from harness.counters import CaseCounters, Counters
from harness.names import NameSource
from harness.protocol import HISTOGRAM, Reply, Task
from harness.records import PROBE, BatchRecord, Case, Settings, WorkerResult
from harness.reference import PipeReference
from harness.supervisor import Supervisor
from harness.timing import run_batches, warm_up, watchdog
from harness.topology import Setup, load_builder
from servers.process import die_with_parent

# Probes live in light modules of their own: the servers they fork inherit the image.
PROBES_GROUP = "ipcbench.probes"


def one_batch(setup: Setup, loops: int, timeout: float) -> float:
    """ns of one batch; with a baseline (C0), less an empty batch timed right after it."""
    [full] = run_batches(setup.send, setup.recv, setup.message, loops, 1, timeout, setup.loop)
    if setup.baseline is None:
        return full
    [empty] = run_batches(setup.baseline, None, setup.message, loops, 1, timeout)
    return full - empty


def timed_batches(setup: Setup, loops: int, settings: Settings, counters: CaseCounters,
                  reference: PipeReference) -> tuple[list[float], list[BatchRecord], Counters]:
    """The timed batches, the counters read just around each, and the reference timed
    between them; returns ns per loop, the batches' records (each with the mean of the
    references just before and just after it), and the counters summed over the
    batches alone (the reference's own time stays out)."""
    values, windows, starts = [], [], []
    references = [reference.measure()]
    for _ in range(settings.batches):
        starts.append(time.monotonic())
        before = counters.read()
        values.append(one_batch(setup, loops, settings.timeout_s))
        windows.append(counters.read() - before)
        references.append(reference.measure())
    records = [window.batch_record(at, (references[i] + references[i + 1]) / 2,
                                   counters.cpu_count, counters.scope)
               for i, (window, at) in enumerate(zip(windows, starts, strict=True))]
    return values, records, sum(windows[1:], windows[0])


def run_case(case: Case, settings: Settings, names: NameSource, builder: str) -> WorkerResult:
    with Supervisor(names, case.placement, case.sched_batch, settings.timeout_s) as sup:
        sup.pin_client()
        setup = load_builder(builder)(case, sup)
        with sup.watch():
            values, loops, warmups, batches, spent = measure(setup, sup, settings)
    hops = setup.hops
    per_op = spent.per_op(loops * settings.batches * hops)
    per_op["messages_per_op"] = setup.messages / hops
    return WorkerResult(loops, [v / hops for v in values], [v / hops for v in warmups], per_op,
                        batches, client_cpu=sup.client_cpu, server_cpu=sup.server_cpus[0])


def measure(setup: Setup, sup: Supervisor, settings: Settings
            ) -> tuple[list[float], int, list[float], list[BatchRecord], Counters]:
    """Check, calibrate, warm up and time one case whose servers are running."""
    with watchdog(settings.timeout_s):
        setup.check()
    loops, warmups = warm_up(
        setup.send, setup.recv, setup.message, target_ns=int(settings.batch_ms * 1e6),
        warmups=settings.warmups, timeout=settings.timeout_s, loop=setup.loop,
    )
    # Opened after the servers are forked, so that none of them inherits these fds.
    cpus = [sup.client_cpu, *(s.cpu for s in sup.servers)]
    counters = CaseCounters(sup.pids, cpus)
    try:
        with PipeReference() as reference:
            values, batches, spent = timed_batches(setup, loops, settings, counters, reference)
    finally:
        counters.close()
    with watchdog(settings.timeout_s):
        setup.check()
    return values, loops, warmups, batches, spent


def run_probe(cases: list[Case], settings: Settings, names: NameSource) -> list[WorkerResult]:
    """One measurement of an experiment's own probe; a value list per case (metric)."""
    from importlib.metadata import entry_points  # 36 ms: only probe workers pay it

    found = entry_points(group=PROBES_GROUP, name=cases[0].experiment)
    if not found:
        raise RuntimeError(f"no probe for experiment {cases[0].experiment!r} "
                           f"(entry point group {PROBES_GROUP})")
    probe = next(iter(found)).load()
    values = probe(cases, settings, names)
    histogram = values.pop(HISTOGRAM, [""])[0]
    missing = [c.metric for c in cases if not values.get(c.metric)]
    if missing:
        raise RuntimeError(f"probe {cases[0].experiment} returned no {missing[0]!r} values")
    results = [WorkerResult(1, [float(v) for v in values[c.metric]], [], {}) for c in cases]
    results[0].histogram = str(histogram)  # once per measurement: with its first metric
    return results


def main() -> int:
    task = Task.from_json(sys.stdin.read())
    die_with_parent(task.runner_pid)
    os.sched_setaffinity(0, task.cpus)
    names = NameSource(f"{task.prefix}{os.getpid()}-", task.journal)
    cases, settings = task.cases, task.settings
    try:
        if cases[0].topology == PROBE:
            results = run_probe(cases, settings, names)
        else:
            [case] = cases
            results = [run_case(case, settings, names, task.builder)]
    except Exception as exc:
        print(Reply([], f"{type(exc).__name__}: {exc}").to_json())
        return 1
    print(Reply(results).to_json())
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Everything is reaped, closed and written: skip the interpreter's teardown (module
    # clean-up and a last collection), a few milliseconds of every worker's life.
    os._exit(code)
