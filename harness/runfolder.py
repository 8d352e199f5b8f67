"""Reading a run folder's files, checked: the one place that decides a folder is sound.

Every command that reads a saved run (fit, report, compare, ab, baseline save, export)
goes through :func:`read`, so a hand-edited, truncated or foreign file is refused with
one line naming the file, the line and the column (``UsageError``: exit status 2)
instead of a traceback deep in pandas or in an experiment's fit.

A non-finite ``value`` (nan, inf) is refused too: the runner never writes one (every
value is a measured time or count), so it can only come from damage, and a statistic
over it would be nan, which ``compare`` must never read as "same".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.records import BATCH_COLUMNS, COUNTER_COLUMNS, KEY_COLUMNS, Case

# The run folder's format. Raise it when a file changes shape, and teach ``read`` to
# bring the older format up to date: a stored folder of every earlier format
# (tests/data) must load, refit, render and compare in every later version. Folders
# written before the format was versioned carry none: they are format 1. (Within
# format 1, model.csv's copy_ns_per_byte unit was once written "ns/byte"; it is "ns/B".)
FORMAT_VERSION = 1
FILES = ("metadata.json", "results.csv", "samples.csv")
DEFAULTED = ("unit", "variant", "level", "seed", "duration_s")  # newer than some runs
CASE_COLUMNS = [*KEY_COLUMNS, "metric", "unit", "topology", "working_set", "sched_batch",
                "workload", "iterations", "variant", "level", "seed", "duration_s"]
# What every command needs of samples.csv (batch records are newer than some runs).
SAMPLE_NEEDED = [c for c in (*CASE_COLUMNS, "worker", "batch", "loops", "value",
                             *COUNTER_COLUMNS) if c not in DEFAULTED]
RESULT_NEEDED = ["status", "note", *(c for c in CASE_COLUMNS if c not in DEFAULTED)]
STATUSES = ("ok", "skipped", "error")
TEXT = ("experiment", "transport", "placement", "metric", "topology", "workload")
OPTIONAL_TEXT = ("unit", "variant")
WHOLE = ("payload_bytes", "k", "working_set", "iterations", "worker", "batch", "loops")
SIGNED_WHOLE = ("seed",)
REAL = ("level", "duration_s")
BOOLS = ("sched_batch",)
BATCH_NUMBERS = [c for c in BATCH_COLUMNS if c != "disturbed"]
LARGEST_WHOLE = 2**53  # exact in a float: pandas may read a whole column as floats


@dataclass(frozen=True)
class RunFiles:
    metadata: dict[str, Any]
    results: pd.DataFrame
    samples: pd.DataFrame  # empty (no columns) when the caller did not ask for it


def read(folder: Path, samples: bool = True, require_samples: bool = False) -> RunFiles:
    """The folder's metadata, results and (if asked) samples, each checked.

    ``require_samples``: a folder with no sample row at all is refused (a baseline or a
    report needs some); otherwise an empty samples.csv is a run whose cases all failed.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such run folder")
    wanted = FILES if samples else FILES[:2]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{folder}: not a run folder (missing {', '.join(missing)})")
    metadata = read_metadata(folder / "metadata.json")
    results = _csv(folder / "results.csv", keep_default_na=False, na_values=[""])
    _check_columns(folder / "results.csv", results, RESULT_NEEDED)
    _check_cases(folder / "results.csv", results)
    _check_status(folder / "results.csv", results)
    table = pd.DataFrame()
    if samples:
        table = _csv(folder / "samples.csv")
        _check_columns(folder / "samples.csv", table, SAMPLE_NEEDED)
        if require_samples and table.empty:
            raise UsageError(f"{folder / 'samples.csv'}: no samples (only a header)")
        _check_samples(folder / "samples.csv", table)
    return RunFiles(metadata, results, table)


def check(folder: Path) -> None:
    """UsageError unless ``folder`` is a whole run with samples (``baseline save``)."""
    read(folder, require_samples=True)


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise UsageError(f"{path}: unreadable ({_why(exc)})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a JSON object (a {type(data).__name__})")
    version = data.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UsageError(f"{path}: \"format_version\" is {version!r}, not a format number")
    if version > FORMAT_VERSION:
        raise UsageError(f"{path}: written in run folder format {version} by a newer "
                         f"ipcbench; this one reads formats 1 to {FORMAT_VERSION} (upgrade "
                         "ipcbench to read it)")
    machine = data.get("machine")
    if not isinstance(machine, dict) or not isinstance(machine.get("machine_id"), str | int) \
            or isinstance(machine.get("machine_id"), bool) or machine.get("machine_id") == "":
        raise UsageError(f"{path}: needs a \"machine\" object with a \"machine_id\"")
    extra = data.get("machine_extra", {})
    if not isinstance(extra, dict):
        raise UsageError(f"{path}: \"machine_extra\" is not an object")
    mhz = extra.get("cpu_mhz_nominal")
    if mhz is not None and (isinstance(mhz, bool) or not isinstance(mhz, int | float)
                            or not math.isfinite(mhz) or mhz < 0):
        raise UsageError(f"{path}: \"cpu_mhz_nominal\" is {mhz!r}, not a clock rate in MHz")
    if not isinstance(data.get("keep_disturbed", False), bool):
        raise UsageError(f"{path}: \"keep_disturbed\" is not true or false")
    return data


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _csv(path: Path, **options: Any) -> pd.DataFrame:
    try:
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # pandas ends every row: this one was cut
            raise UsageError(f"{path}: cut short (its last line is incomplete)")
        return pd.read_csv(path, **options)
    except (OSError, ValueError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        raise UsageError(f"{path}: unreadable ({_why(exc).splitlines()[0]})") from None


def _check_columns(path: Path, frame: pd.DataFrame, needed: list[str]) -> None:
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise UsageError(f"{path}: lacks column {absent[0]!r}")


def _line(frame: pd.DataFrame, where: pd.Series) -> int:
    """The file line of the first row ``where`` marks (the header is line 1)."""
    return int(np.flatnonzero(where.to_numpy())[0]) + 2


def _refuse(path: Path, frame: pd.DataFrame, where: pd.Series, column: str, want: str) -> None:
    if where.any():
        line = _line(frame, where)
        value = frame[column].iloc[line - 2]
        raise UsageError(f"{path} line {line}: {column} is {_show(value)}, not {want}")


def _show(value: object) -> str:
    return "empty" if isinstance(value, float) and math.isnan(value) else repr(
        value.item() if isinstance(value, np.generic) else value)


def _numbers(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as floats; UsageError at the first cell that is not a number."""
    col = frame[column]
    if pd.api.types.is_bool_dtype(col):
        _refuse(path, frame, col.notna(), column, "a number")
    numbers = pd.to_numeric(col, errors="coerce")
    _refuse(path, frame, numbers.isna() & col.notna(), column, "a number")
    if not pd.api.types.is_numeric_dtype(col):
        frame[column] = numbers  # e.g. " 12" read as text: the frame carries the number
    return numbers.astype(float)


def _check_cases(path: Path, frame: pd.DataFrame) -> None:
    """The columns that name a case: text where text, whole numbers where counts."""
    for column in TEXT:
        col = frame[column]
        bad = ~col.map(lambda v: isinstance(v, str) and v != "")
        _refuse(path, frame, bad, column, "a name")
    for column in OPTIONAL_TEXT:
        if column in frame.columns:
            col = frame[column]
            _refuse(path, frame, ~col.map(lambda v: isinstance(v, str) or v is None or (
                isinstance(v, float) and math.isnan(v))), column, "text")
    for column in (*WHOLE, *SIGNED_WHOLE):
        if column not in frame.columns:
            continue
        numbers = _numbers(path, frame, column)
        low = -LARGEST_WHOLE if column in SIGNED_WHOLE else 0
        bad = ~(numbers.between(low, LARGEST_WHOLE) & (numbers == numbers.round()))
        _refuse(path, frame, bad, column, "a whole number" + ("" if low else " >= 0"))
    for column in REAL:
        if column in frame.columns:
            numbers = _numbers(path, frame, column)
            _refuse(path, frame, ~np.isfinite(numbers), column, "a finite number")
    for column in BOOLS:
        col = frame[column]
        _refuse(path, frame, ~col.map(lambda v: isinstance(v, bool | np.bool_)), column,
                "True or False")


def _check_status(path: Path, frame: pd.DataFrame) -> None:
    _refuse(path, frame, ~frame.status.isin(STATUSES), "status", " or ".join(STATUSES))


def _check_samples(path: Path, frame: pd.DataFrame) -> None:
    _check_cases(path, frame)
    value = _numbers(path, frame, "value")
    bad = ~np.isfinite(value)
    if bad.any():
        line = _line(frame, bad)
        row = frame.iloc[line - 2]
        case = Case.from_dict({c: row[c] for c in CASE_COLUMNS if c in frame.columns})
        raise UsageError(f"{path} line {line}: value is {value.iloc[line - 2]} in case "
                         f"{case.name}: a measurement is always a finite number")
    for column in COUNTER_COLUMNS:  # nan: a counter this machine could not read
        numbers = _numbers(path, frame, column)
        _refuse(path, frame, np.isinf(numbers), column, "a finite number or empty")
    present = [c for c in BATCH_NUMBERS if c in frame.columns]
    if present:
        numbers = pd.DataFrame({c: _numbers(path, frame, c) for c in present})
        timed = numbers.notna().any(axis=1)  # a probe's row has no batch record at all
        for column in present:
            _refuse(path, frame, timed & ~np.isfinite(numbers[column]), column,
                    "a finite number (the row's other batch fields are set)")
        if "ref_ns" in present:
            _refuse(path, frame, timed & (numbers.ref_ns <= 0), "ref_ns", "a positive time")
        if "cpus" in present:
            cpus = numbers.cpus
            _refuse(path, frame, timed & ((cpus < 1) | (cpus != cpus.round())), "cpus",
                    "a whole number >= 1")
    if "disturbed" in frame.columns:
        _refuse(path, frame, ~frame.disturbed.map(
            lambda v: isinstance(v, bool | np.bool_) or (isinstance(v, float) and math.isnan(v))),
            "disturbed", "True, False or empty")
