"""Shared helpers for tests that run the real command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

TINY_SUITE = """
description = "tests: every transport, tiny batches"

[settings]
workers = 2
batches = 2
warmups = 0
batch_ms = 1.0
timeout_s = 5.0

[experiments.latency]
transports = ["call", "pipe", "mq", "shm", "shm-spin", "uds"]
placements = ["same-cpu", "cross-cpu"]
payload_bytes = [64]

[experiments.payload]
transports = ["pipe", "mq", "shm", "uds"]
payload_bytes = [0, 64, 1024, 16384]

[experiments.amplification]
transports = ["call", "pipe", "shm"]
topologies = ["chain", "fanout"]
k = [1, 2, 3]
sched_batch = true

[experiments.ring]
transports = ["pipe", "shm"]
k = [2, 3]
sched_batch = true
"""


def sigint_as_a_terminal_sends_it() -> None:
    """For a child that a test interrupts with SIGINT: a shell starts background jobs
    (and so CI scripts, and the pytest they run) with SIGINT ignored, and Python then
    leaves it ignored; a user's Ctrl-C reaches a foreground command with it on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_suite(folder: Path, text: str = TINY_SUITE, name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def ipcbench(*args: str, cwd: Path | None = None, timeout: float = 300, columns: int = 160,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": str(columns)})


def run_worker(case: dict | list[dict], settings: dict | None = None, prefix: str = "",
               env: dict[str, str] | None = None) -> dict:
    """Run one case (or a probe's cases) in a real worker process, as the runner does.

    Returns the case's result, or for a list of cases ``{metric: result}``.
    """
    from harness.protocol import Reply, Task
    from harness.records import PROBE, Case, Settings
    from harness.topology import builder_path

    cases = case if isinstance(case, list) else [case]
    first = Case.from_dict(cases[0])
    task = Task([Case.from_dict(c) for c in cases],
                Settings(**(settings or {"workers": 1, "batches": 2, "warmups": 0,
                                         "batch_ms": 5.0, "timeout_s": 5.0})),
                prefix or f"ipcb-{os.getpid()}-test-", os.devnull, os.getpid(),
                sorted(os.sched_getaffinity(0)),
                "" if first.topology == PROBE else builder_path(first.topology))
    done = subprocess.run([sys.executable, "-I", "-m", "harness.worker"], input=task.to_json(),
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout, done.stderr
    reply = Reply.from_json(done.stdout)
    assert not reply.error, reply.error
    results = [r.to_dict() for r in reply.results]
    if isinstance(case, list):
        return {c.get("metric", "round_trip"): r for c, r in zip(cases, results, strict=True)}
    return results[0]


DATA = Path(__file__).parent / "data"
SCALED = ["median", "mean", "stdev", "p5", "p95", "p99", "ci_low", "ci_high"]


def fleet_folders(folder: Path, count: int, machines: tuple[str, ...] = ("lab-a", "lab-b"),
                  scale: dict[str, float] | None = None, first: int = 0) -> list[Path]:
    """``count`` run folders (metadata.json and results.csv: what ``ipcbench store``
    reads) of the stored format-2 run, as if run one hour apart on ``machines`` in turn.
    Each has its own run_uuid, start and machine name, and its statistics scaled by its
    own factor (``scale[machine]`` times 1.001 per run), so no two runs' rows are alike."""
    import json
    import uuid

    import pandas as pd

    meta = json.loads((DATA / "run-format-2" / "metadata.json").read_text())
    results = pd.read_csv(DATA / "run-format-2" / "results.csv", keep_default_na=False,
                          na_values=[""])
    made = []
    for i in range(first, first + count):
        machine = machines[i % len(machines)]
        run = folder / f"run-{i:03d}"
        run.mkdir(parents=True)
        factor = (scale or {}).get(machine, 1.0) * (1 + 0.001 * i)
        scaled = results.copy()
        scaled[SCALED] = results[SCALED] * factor
        scaled.to_csv(run / "results.csv", index=False)
        (run / "metadata.json").write_text(json.dumps({
            **meta, "run_uuid": str(uuid.uuid4()),
            "started": f"2026-12-{1 + i // 24:02d}T{i % 24:02d}:00:00+0000",
            "machine": {**meta["machine"], "name": machine, "machine_id": f"id-{machine}",
                        "topology": "1 package, 1 node, 1 LLC, 2 cores, 2 CPUs"}}))
        made.append(run)
    return made
