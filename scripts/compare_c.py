"""Hold ipcbench's transports against C doing the same per round trip, pinned and
scheduled the same way, in alternating rounds (harness.native: what
``ipcbench run --native-reference`` adds to a run).

Prints, as medians over the rounds:

- every transport with a C equivalent: the same-cpu 64 B round trip, suite against C
  (harness/native/pingpong.c), and for pipe also against ``perf bench sched pipe``
  pinned to the same CPU, where perf is installed;
- with --pipe-detail, for pipe: alpha (one message sent and received by one process),
  beta computed the same way on both sides, (round trip - 2 alpha) / 2 switches under
  SCHED_BATCH as the suite's chains run (ipcbench also takes C0 off), and
  copy_ns_per_byte, the slope of the round trip over 64 B..64 KiB (scripts/c_pingpong.c).

Usage: python scripts/compare_c.py [--rounds N] [--transports a,b] [--pipe-detail]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from harness import native
from harness.names import new_run_prefix
from harness.records import Case
from harness.runner import Runner

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "c_pingpong.c"
BINARY = HERE / "bin" / "c_pingpong"
SIZES = [64, 256, 1024, 4096, 16384, 65536]
PERF_LOOPS = 100_000


class Suite:
    """The ipcbench side: whole cases through the runner, medians of their values."""

    def __init__(self) -> None:
        self.runner = Runner(native.SUITE_SIDE, new_run_prefix(), Console(stderr=True))

    def median(self, case: Case) -> tuple[float, float]:
        """(median ns, mean switches per op) of one case."""
        result = self.runner.run_case(case)
        if result.status != "ok":
            sys.exit(f"compare_c: ipcbench case {case.name} failed: {result.note}")
        values = [v for w in result.workers for v in w.kept()]  # as the suite's statistics
        switches = statistics.mean(w.counters["ctx_switches_per_op"] for w in result.workers)
        return statistics.median(values), switches


def perf_pipe_ns(cpu: int) -> float | None:
    """``perf bench sched pipe`` pinned to ``cpu``: ns per round trip, or None."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    done = subprocess.run(["taskset", "-c", str(cpu), perf, "bench", "sched", "pipe", "-l",
                           str(PERF_LOOPS)], capture_output=True, text=True)
    found = re.search(r"([\d.]+) usecs/op", done.stdout)
    return float(found.group(1)) * 1e3 if done.returncode == 0 and found else None


def build_pipe_detail() -> Path:
    compiler = native.compiler()
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


def slope(values: dict[int, float]) -> float:
    return float(np.polyfit(list(values), list(values.values()), 1)[0])


def pipe_detail_round(suite: Suite, cpu: int, iterations: int) -> dict[str, float]:
    c_batch = c_run(cpu, 64, iterations, batch=True)
    c_sizes = {s: c_run(cpu, s, max(iterations // 8, 2000))["round_trip_ns"] for s in SIZES}
    amp = dict(experiment="amplification", transport="pipe", placement="same-cpu",
               payload_bytes=64, sched_batch=True)
    chain, switches = suite.median(Case(**amp, topology="chain"))
    alpha, _ = suite.median(Case(**amp, topology="self", metric="message"))
    c0, _ = suite.median(Case(**{**amp, "transport": "call"}, topology="compute",
                              metric="compute"))
    py_sizes = {s: suite.median(Case("payload", "pipe", "same-cpu", s))[0] for s in SIZES}
    return {
        "c_alpha": c_batch["self_ns"], "py_alpha": alpha,
        "c_beta": (c_batch["round_trip_ns"] - 2 * c_batch["self_ns"]) / 2,
        "py_beta": (chain - 2 * alpha - c0) / switches,
        "c_copy": slope(c_sizes), "py_copy": slope(py_sizes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--transports", default=",".join(native.MECHANISMS),
                        help="comma-separated (default: every one with a C equivalent)")
    parser.add_argument("--pipe-detail", action="store_true",
                        help="also pipe's alpha, beta and copy slope against C")
    args = parser.parse_args()
    if args.rounds < 1 or args.iterations < 100:
        print("compare_c: --rounds must be >= 1 and --iterations >= 100", file=sys.stderr)
        return 2
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = [t for t in transports if t not in native.MECHANISMS]
    if unknown:
        print(f"compare_c: no C equivalent for {unknown[0]!r} (those with one: "
              f"{', '.join(native.MECHANISMS)})", file=sys.stderr)
        return 2
    cpu = min(os.sched_getaffinity(0))
    suite = Suite()
    perf: list[float] = []

    def suite_ns(case: Case) -> float:
        if case.transport == "pipe" and (found := perf_pipe_ns(cpu)) is not None:
            perf.append(found)  # in the same alternation, just before the suite's pipe
        return suite.median(case)[0]

    try:
        held = native.measure(suite_ns, transports, args.rounds, iterations=args.iterations,
                              cpu=cpu, progress=lambda text: print(text, file=sys.stderr))
    except native.NativeUnavailable as exc:
        print(f"compare_c: {exc}", file=sys.stderr)
        return 2
    header, rows = native.report_rows(held.rounds, held.skipped)
    print(f"same-cpu round trip of 64 B on CPU {cpu}; medians of {args.rounds} alternating "
          "rounds")
    print("  ".join(f"{h:>13}" for h in header))
    for row in rows:
        print("  ".join(f"{cell:>13}" for cell in row))
    if perf:
        pipe = held.rounds[held.rounds.transport == "pipe"].suite_ns.median()
        print(f"perf bench sched pipe (taskset -c {cpu}): {statistics.median(perf) / 1e3:.3f} "
              f"us; suite pipe / perf {pipe / statistics.median(perf):.2f}")
    else:
        print("perf bench sched pipe: perf is not installed (Debian: linux-perf)")
    if args.pipe_detail:
        build_pipe_detail()
        detail = [pipe_detail_round(suite, cpu, args.iterations) for _ in range(args.rounds)]
        med = {key: statistics.median(r[key] for r in detail) for key in detail[0]}
        print(f"{'pipe':26}{'C':>10}{'ipcbench':>10}{'ratio':>8}")
        for label, key, scale in (("alpha, one message (us)", "alpha", 1e-3),
                                  ("beta, one switch (us)", "beta", 1e-3),
                                  ("copy_ns_per_byte", "copy", 1.0)):
            c, py = med[f"c_{key}"], med[f"py_{key}"]
            print(f"{label:26}{c * scale:10.3f}{py * scale:10.3f}{py / c:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
