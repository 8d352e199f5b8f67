"""Shared helpers for tests that run the real command line."""

from __future__ import annotations

import os
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
"""


def write_suite(folder: Path, text: str = TINY_SUITE, name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def ipcbench(*args: str, cwd: Path | None = None, timeout: float = 300,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env={**os.environ, "COLUMNS": "160"})
