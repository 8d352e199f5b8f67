"""Hold ipcbench's pipe numbers against a C ping-pong pinned and scheduled the same way.

Builds scripts/c_pingpong.c with the system compiler, then alternates C and
ipcbench rounds (the same harness code the suites use) so both see the same
machine state, and prints, as medians over the rounds:

- the same-cpu pipe round trip (64 B): ipcbench against C, goal <= 1.2x;
- beta, computed the same way on both sides: (round trip - 2 alpha) / 2
  switches, alpha being one message sent and received by one process,
  under SCHED_BATCH as the suite's chains run (ipcbench also takes C0 off);
- copy_ns_per_byte: the slope of the round trip over 64 B..64 KiB.

Usage: python scripts/compare_c.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from harness.names import new_run_prefix
from harness.records import Case, Settings
from harness.runner import Runner

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "c_pingpong.c"
BINARY = HERE / "bin" / "c_pingpong"
SIZES = [64, 256, 1024, 4096, 16384, 65536]


def build() -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("compare_c: no C compiler (cc or gcc) found")
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        BINARY.parent.mkdir(exist_ok=True)
        subprocess.run([compiler, "-O2", "-o", str(BINARY), str(SOURCE)], check=True)
    return BINARY


def c_run(cpu: int, payload: int, iterations: int, batch: bool = False) -> dict[str, float]:
    command = [str(BINARY), str(cpu), str(payload), str(iterations)] + (["batch"] if batch else [])
    return json.loads(subprocess.run(command, capture_output=True, text=True,
                                     check=True).stdout)


class Suite:
    """The ipcbench side: whole cases through the runner, medians of their values."""

    def __init__(self) -> None:
        settings = Settings(workers=3, batches=5, warmups=1, batch_ms=20)
        self.runner = Runner(settings, new_run_prefix(), Console(stderr=True))

    def median(self, case: Case) -> tuple[float, float]:
        """(median ns, mean switches per op) of one case."""
        result = self.runner.run_case(case)
        if result.status != "ok":
            sys.exit(f"compare_c: ipcbench case {case.name} failed: {result.note}")
        values = [v for w in result.workers for v in w.kept()]  # as the suite's statistics
        switches = statistics.mean(w.counters["ctx_switches_per_op"] for w in result.workers)
        return statistics.median(values), switches


def slope(values: dict[int, float]) -> float:
    return float(np.polyfit(list(values), list(values.values()), 1)[0])


def one_round(suite: Suite, cpu: int, iterations: int) -> dict[str, float]:
    c_rt = c_run(cpu, 64, iterations)["round_trip_ns"]
    c_batch = c_run(cpu, 64, iterations, batch=True)
    c_sizes = {s: c_run(cpu, s, max(iterations // 8, 2000))["round_trip_ns"] for s in SIZES}
    py_rt, _ = suite.median(Case("latency", "pipe", "same-cpu", 64))
    amp = dict(experiment="amplification", transport="pipe", placement="same-cpu",
               payload_bytes=64, sched_batch=True)
    chain, switches = suite.median(Case(**amp, topology="chain"))
    alpha, _ = suite.median(Case(**amp, topology="self", metric="message"))
    c0, _ = suite.median(Case(**{**amp, "transport": "call"}, topology="compute",
                              metric="compute"))
    py_sizes = {s: suite.median(Case("payload", "pipe", "same-cpu", s))[0] for s in SIZES}
    return {
        "c_rt": c_rt, "py_rt": py_rt,
        "c_alpha": c_batch["self_ns"], "py_alpha": alpha,
        "c_beta": (c_batch["round_trip_ns"] - 2 * c_batch["self_ns"]) / 2,
        "py_beta": (chain - 2 * alpha - c0) / switches,
        "c_copy": slope(c_sizes), "py_copy": slope(py_sizes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50_000)
    args = parser.parse_args()
    build()
    cpu = min(os.sched_getaffinity(0))
    suite = Suite()
    rounds = [one_round(suite, cpu, args.iterations) for _ in range(args.rounds)]
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    rows = [
        ("round trip, 64 B (us)", "rt", 1e-3, "<= 1.2"),
        ("alpha, one message (us)", "alpha", 1e-3, ""),
        ("beta, one switch (us)", "beta", 1e-3, "within 20%"),
        ("copy_ns_per_byte", "copy", 1.0, "within 10%"),
    ]
    print(f"pipe, same-cpu, CPU {cpu}; medians of {args.rounds} alternating rounds")
    print(f"{'':26}{'C':>10}{'ipcbench':>10}{'ratio':>8}  goal")
    for label, key, scale, goal in rows:
        c, py = med[f"c_{key}"], med[f"py_{key}"]
        print(f"{label:26}{c * scale:10.3f}{py * scale:10.3f}{py / c:8.3f}  {goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
