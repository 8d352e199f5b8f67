"""Several runs as one tidy CSV: ``results.csv`` rows with run and machine columns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from harness.errors import UsageError


def merged(runs: list[Path]) -> pd.DataFrame:
    frames = []
    for run in runs:
        try:
            meta = json.loads((run / "metadata.json").read_text())
            table = pd.read_csv(run / "results.csv")
        except (OSError, ValueError) as exc:
            raise UsageError(f"{run}: not a readable run folder ({exc})") from None
        machine = meta.get("machine", {})
        table.insert(0, "machine_id", machine.get("machine_id", ""))
        table.insert(0, "started", meta.get("started", ""))
        table.insert(0, "run_id", run.resolve().name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def export(runs: list[Path], out: Path) -> int:
    """Write the merged table to ``out`` (complete or not at all); returns its rows."""
    table = merged(runs)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        table.to_csv(partial, index=False)
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror})") from None
    return len(table)
