"""Several runs as one tidy CSV: ``results.csv`` rows with run and machine columns."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from harness import runfolder
from harness.errors import UsageError

ADDED = ("run_id", "started", "machine_id")  # the columns export puts in front


def merged(runs: list[Path]) -> pd.DataFrame:
    frames = []
    for run in runs:
        files = runfolder.read(run, samples=False)  # results.csv is all it exports
        meta, table = files.metadata, files.results
        taken = [c for c in ADDED if c in table.columns]
        if taken:
            raise UsageError(f"{run / 'results.csv'}: has a column {taken[0]!r} of its own")
        machine = meta["machine"]
        table.insert(0, "machine_id", machine.get("machine_id", ""))
        table.insert(0, "started", meta.get("started", ""))
        table.insert(0, "run_id", run.resolve().name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def export(runs: list[Path], out: Path) -> int:
    """Write the merged table to ``out`` (complete or not at all); returns its rows."""
    table = merged(runs)
    write_csv(table, out)
    return len(table)


def write_csv(table: pd.DataFrame, out: Path) -> None:
    """``out`` written whole or not at all (beside it first, then renamed)."""
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        table.to_csv(partial, index=False)
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror})") from None
