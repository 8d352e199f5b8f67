"""Hold the suite's same-cpu pipe round trip against a C ping-pong pinned the same way.

Builds scripts/c_pingpong.c with the system compiler, then alternates C and
ipcbench measurements (the same harness code the suites use) so both see the
same machine state, and prints the medians and their ratio.
Usage: python scripts/compare_c.py [--rounds N] [--payload BYTES]
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

from rich.console import Console

from harness.ipcnames import new_run_prefix
from harness.records import Case, Settings
from harness.runner import Runner

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "c_pingpong.c"
BINARY = HERE / "bin" / "c_pingpong"


def build() -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("compare_c: no C compiler (cc or gcc) found")
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        BINARY.parent.mkdir(exist_ok=True)
        subprocess.run([compiler, "-O2", "-o", str(BINARY), str(SOURCE)], check=True)
    return BINARY


def c_round_trip(binary: Path, cpu: int, payload: int, iterations: int) -> dict[str, float]:
    out = subprocess.run([str(binary), str(cpu), str(payload), str(iterations)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=50_000)
    args = parser.parse_args()
    binary = build()
    cpu = min(os.sched_getaffinity(0))
    settings = Settings(workers=3, batches=5, warmups=1, batch_ms=20)
    runner = Runner(settings, new_run_prefix(), Console(stderr=True))
    case = Case("latency", "pipe", "same-cpu", args.payload)
    c_values, py_values = [], []
    for _ in range(args.rounds):
        c_values.append(c_round_trip(binary, cpu, args.payload, args.iterations)["round_trip_ns"])
        result = runner.run_case(case)
        if result.status != "ok":
            sys.exit(f"compare_c: ipcbench case failed: {result.note}")
        py_values.append(statistics.median(v for w in result.workers for v in w.values))
    c_med, py_med = statistics.median(c_values), statistics.median(py_values)
    print(f"same-cpu pipe round trip, {args.payload} B, medians of {args.rounds} rounds:")
    print(f"  C ping-pong : {c_med / 1000:.3f} us   rounds: "
          + " ".join(f"{v / 1000:.2f}" for v in c_values))
    print(f"  ipcbench    : {py_med / 1000:.3f} us   rounds: "
          + " ".join(f"{v / 1000:.2f}" for v in py_values))
    print(f"  ratio ipcbench/C: {py_med / c_med:.3f}  (goal <= 1.2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
