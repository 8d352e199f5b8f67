"""Fill a history with generated runs of a made-up fleet, to try ``ipcbench history`` and
``ipcbench fleet-report`` on, and to time them at a fleet's scale.

Every run is a real run folder's cases (``--template``, default the stored format-2
folder of the tests) with their medians scaled: per machine a level, per run 1% noise,
and on the second machine a 20% step from a kernel update two thirds of the way through.
Runs are stored one transaction each, as ``ipcbench run`` stores them.

Usage: python scripts/history_generate.py --history FILE|URL [--runs N] [--machines M]
       [--template RUN] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from harness import historydb
from harness.errors import UsageError
from harness.results import RunData

TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "data" / "run-format-2"
STEP = 1.2  # the kernel update's slowdown on the second machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", required=True, metavar="FILE|URL")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.runs < 1 or args.machines < 1:
        print("history_generate: --runs and --machines are at least 1", file=sys.stderr)
        return 2
    try:
        where = historydb.target(args.history)
        historydb.check(where, write=True)
        template = RunData.load(args.template)
    except UsageError as exc:
        print(f"history_generate: {exc}", file=sys.stderr)
        return 2
    results = template.results_frame()
    names = [c.case.name for c in template.cases]
    rng = np.random.default_rng(args.seed)
    levels = rng.uniform(0.7, 1.5, args.machines)
    start = time.time() - args.runs * 3600
    began = time.perf_counter()
    for i in range(args.runs):
        m = i % args.machines
        nth = i // args.machines  # this machine's nth run
        updated = m == 1 and nth >= (args.runs // args.machines) * 2 // 3
        factor = levels[m] * (STEP if updated else 1.0) * rng.normal(1, 0.01, len(results))
        scaled = results.copy()
        for column in ("median", "mean", "p5", "p95", "p99", "ci_low", "ci_high"):
            scaled[column] = results[column] * factor
        when = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(start + i * 3600))
        machine = {"machine_id": f"gen{m:04d}", "name": f"lab-{m + 1:02d}",
                   "cpu_model": ["EPYC 9654", "Xeon 8480+", "EPYC 7763", "Xeon 6338"][m % 4],
                   "cpu_count": [192, 112, 128, 64][m % 4], "kernel":
                   "6.12.4" if updated else "6.8.0", "virtualization": "none",
                   "python": "3.11.7", "topology": "2 packages, 2 nodes, 24 LLCs"}
        meta = {**template.metadata, "run_uuid": str(uuid.uuid4()), "started": when,
                "finished": when, "machine": machine}
        historydb.append(where, f"gen-{i:05d}", meta, scaled, names, args.template)
    took = time.perf_counter() - began
    print(f"stored {args.runs} runs of {args.machines} machines ({len(names)} cases each) in "
          f"{where} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
