"""This machine's baseline: a saved run folder under ``results/baselines/<machine-id>/``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from harness import runfolder
from harness.errors import UsageError

BASELINES = Path("results") / "baselines"
# A machine id becomes a folder name: nothing that could climb out of BASELINES.
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def machine_id(folder: Path) -> str:
    try:
        found = json.loads((folder / "metadata.json").read_text())["machine"]["machine_id"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{folder}: no machine fingerprint in metadata.json ({exc})") from None
    found = str(found)
    if SAFE_ID.fullmatch(found) is None or found in (".", ".."):
        raise UsageError(f"{folder}: machine_id {found[:80]!r} in metadata.json is not a safe "
                         "folder name (letters, digits, '.', '_', '-')")
    return found


def baseline_folder(run: Path, root: Path = BASELINES) -> Path:
    """``root/<machine id of run>``, checked to stay right under ``root``."""
    target = root / machine_id(run)
    if target.is_symlink() or target.resolve().parent != root.resolve():
        raise UsageError(f"baseline folder {target} is a symlink or leads out of {root}")
    return target


def save(run: Path, root: Path = BASELINES) -> Path:
    """Copy a run folder in as its machine's baseline, replacing the previous one whole."""
    target = baseline_folder(run, root)
    runfolder.check(run)  # a damaged run would make every later compare refuse
    staging = target.with_name(f".{target.name}.new")
    if staging.is_symlink():
        raise UsageError(f"baseline staging folder {staging} is a symlink; remove it")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def find(run: Path, root: Path = BASELINES) -> Path:
    """The baseline of the machine ``run`` was measured on."""
    target = baseline_folder(run, root)
    if not (target / "samples.csv").is_file():
        raise UsageError(f"no baseline for machine {target.name} under {root}; "
                         f"save one with: ipcbench baseline save RUN")
    return target
