"""This machine's baseline: a saved run folder under ``results/baselines/<machine-id>/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.errors import UsageError

BASELINES = Path("results") / "baselines"


def machine_id(folder: Path) -> str:
    try:
        return str(json.loads((folder / "metadata.json").read_text())["machine"]["machine_id"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{folder}: no machine fingerprint in metadata.json ({exc})") from None


def save(run: Path, root: Path = BASELINES) -> Path:
    """Copy a run folder in as its machine's baseline, replacing the previous one whole."""
    if not (run / "samples.csv").is_file():
        raise UsageError(f"{run}: not a run folder (no samples.csv)")
    target = root / machine_id(run)
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def find(run: Path, root: Path = BASELINES) -> Path:
    """The baseline of the machine ``run`` was measured on."""
    target = root / machine_id(run)
    if not (target / "samples.csv").is_file():
        raise UsageError(f"no baseline for machine {target.name} under {root}; "
                         f"save one with: ipcbench baseline save RUN")
    return target
