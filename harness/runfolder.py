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
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness import columns as col
from harness.errors import UsageError
from harness.records import PROBE, Case

if TYPE_CHECKING:
    from harness.experiment import Experiment

# The run folder's format. Raise it when a file changes shape, and teach ``read`` to
# bring the older format up to date: a stored folder of every earlier format
# (tests/data) must load, refit, render and compare in every later version. Folders
# written before the format was versioned carry none: they are format 1.
#   1: every experiment's own case parameters in the shared columns variant, level, seed
#      (and contention's hold time in iterations). (Within format 1, model.csv's
#      copy_ns_per_byte unit was once written "ns/byte"; it is "ns/B".)
#   2: a column per declared case parameter, named with its kind per experiment in
#      metadata.json's "case_parameters".
FORMAT_VERSION = 2
FILES = ("metadata.json", "results.csv", "samples.csv")
STATUSES = ("ok", "skipped", "error")
BATCH_NUMBERS = [c for c in col.BATCH_COLUMNS if c != "disturbed"]
LARGEST_WHOLE = 2**53  # exact in a float: pandas may read a whole column as floats
KIND_OF_TYPE, TYPE_OF_KIND = col.KIND_OF_TYPE, col.TYPE_OF_KIND

Parameters = dict[str, dict[str, str]]  # experiment -> its case parameters -> kind


@dataclass(frozen=True)
class RunFiles:
    """The checked files, brought up to today's format: every column present (older
    files' missing ones at their defaults), empty text as "", and each experiment's
    case parameters in their own columns, named in ``parameters``."""

    metadata: dict[str, Any]
    results: pd.DataFrame
    samples: pd.DataFrame  # empty (no columns) when the caller did not ask for it
    parameters: Parameters


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
    version = metadata.get("format_version", 1)
    parameters = {} if version == 1 else _parameters(folder / "metadata.json", metadata)
    own = [] if version == 1 else _parameter_columns(parameters)
    case_columns = col.CASE + (col.FORMAT1_SHARED if version == 1 else own)
    # A format-1 file may predate a column (older): it gets the column's default.
    needed = [c.name for c in case_columns if version > 1 or c.older is None]
    results = _csv(folder / "results.csv", keep_default_na=False, na_values=[""])
    _check_columns(folder / "results.csv", results, [*needed, *col.names(col.STATUS)])
    _check_cases(folder / "results.csv", results, case_columns, parameters)
    _check_status(folder / "results.csv", results)
    _check_placed(folder / "results.csv", results)
    table = pd.DataFrame()
    if samples:
        table = _csv(folder / "samples.csv")
        _check_columns(folder / "samples.csv", table, [
            *needed, *col.names(col.BATCH_POSITION), *col.COUNTER_COLUMNS])
        if require_samples and table.empty:
            raise UsageError(f"{folder / 'samples.csv'}: no samples (only a header)")
        _check_cases(folder / "samples.csv", table, case_columns, parameters)
        _check_samples(folder / "samples.csv", table)
        _check_placed(folder / "samples.csv", table)
    if version == 1:
        results, parameters = _from_format1(results)
        table, _ = _from_format1(table) if samples else (table, {})
    return RunFiles(metadata, _tidy(results), _tidy(table) if samples else table, parameters)


def _parameters(path: Path, metadata: dict[str, Any]) -> Parameters:
    """metadata.json's case_parameters, checked: per experiment, column -> kind."""
    found = metadata.get("case_parameters")
    if not isinstance(found, dict) or not all(
            isinstance(own, dict) and all(kind in TYPE_OF_KIND for kind in own.values())
            for own in found.values()):
        raise UsageError(f"{path}: needs \"case_parameters\": per experiment, each case "
                         f"parameter's kind ({', '.join(TYPE_OF_KIND)})")
    return found


def _parameter_columns(parameters: Parameters) -> list[col.Column]:
    merged: dict[str, str] = {}
    for own in parameters.values():
        for name, kind in own.items():
            if merged.setdefault(name, kind) != kind or name in col.CASE_COLUMNS:
                raise UsageError(f"case parameter {name!r}: two meanings in one run folder")
    # Blank in every other experiment's rows: the kind is checked where there is a value.
    return [col.Column(name, kind, older=None) for name, kind in merged.items()]


def _from_format1(frame: pd.DataFrame) -> tuple[pd.DataFrame, Parameters]:
    """A format-1 table with each experiment's parameters moved out of the shared columns
    (variant, level, seed; contention's iterations) into its declared ones
    (``Experiment.format1``). An experiment this installation does not know keeps what it
    set of them under their old names."""
    experiments = _experiments()
    frame = frame.copy()
    for column in [*col.CASE, *col.FORMAT1_SHARED]:  # older files lack the newer ones
        if column.name not in frame.columns and column.older is not None:
            frame[column.name] = column.older
    shared = col.names(col.FORMAT1_SHARED)
    moved: dict[str, pd.Series] = {}
    parameters: Parameters = {}
    for name, rows in frame.groupby("experiment", sort=False).groups.items():
        experiment = experiments.get(str(name))
        if experiment is not None:
            mapping = {old: (new, convert) for old, new, convert in experiment.format1}
            declared = experiment.case_columns()
            kinds = {c: KIND_OF_TYPE[kind] for c, (kind, _) in declared.items()}
        else:
            used = [c for c in col.FORMAT1_SHARED
                    if (frame.loc[rows, c.name].fillna(c.older) != c.older).any()]
            mapping = {c.name: (c.name, TYPE_OF_KIND[col.parameter_kind(c)]) for c in used}
            kinds = {c.name: col.parameter_kind(c) for c in used}
        for old, (new, convert) in mapping.items():
            values = frame.loc[rows, old].map(convert)
            moved[new] = values if new not in moved else moved[new].combine_first(values)
            if old == "iterations":  # contention's hold time: no workload loop
                frame.loc[rows, "iterations"] = 0
        parameters[str(name)] = {c: kinds[c] for c in kinds if c in
                                 {new for new, _ in mapping.values()}}
    frame = frame.drop(columns=[c for c in shared if c in frame.columns])
    for new, values in moved.items():
        frame[new] = values.reindex(frame.index)
    return frame, parameters


def format1_name(name: str) -> str:
    """A probe case's name as format 1 wrote it (``faults/pipe/kill/k2/L5/1s/64B/m``: the
    shared variant, level ``L``, seed ``s`` and iterations ``i``) as it is named now
    (``faults/pipe/k2/mode=kill/crash_rate=5/1s/64B/m``); any other name as it is. History
    rows written before format 2 are read through this."""
    parts = name.split("/")
    if "=" in name or len(parts) < 5 or not _K.fullmatch(parts[3]) or _K.fullmatch(parts[2]):
        return name  # a timed case's name, or one already current
    old: dict[str, Any] = {"variant": "" if parts[2] == "-" else parts[2], "level": 0.0,
                           "seed": 0, "iterations": 0}
    duration, payload = 0.0, 0
    for token in parts[4:-1]:
        if token.endswith("B") and token[:-1].isdigit():
            payload = int(token[:-1])
        elif token.endswith("s") and _NUMBER.fullmatch(token[:-1]):
            duration = float(token[:-1])
        elif token[:1] == "L" and _NUMBER.fullmatch(token[1:]):
            old["level"] = float(token[1:])
        elif token[:1] in ("s", "i") and _WHOLE.fullmatch(token[1:]):
            old["seed" if token[0] == "s" else "iterations"] = int(token[1:])
        else:
            return name  # not a name format 1 wrote
    experiment = _experiments().get(parts[0])
    mapping = experiment.format1 if experiment is not None else tuple(
        (c.name, c.name, col.TYPE_OF_KIND[col.parameter_kind(c)]) for c in col.FORMAT1_SHARED
        if old[c.name] != c.older)
    params = tuple((new, convert(old[before])) for before, new, convert in mapping)
    if experiment is not None:  # in the order the experiment declares them
        order = list(experiment.case_columns())
        params = tuple(sorted(params, key=lambda p: order.index(p[0])))
    iterations = 0 if any(before == "iterations" for before, _, _ in mapping) else \
        old["iterations"]
    return Case(parts[0], parts[1], "same-cpu", payload, int(parts[3][1:]), metric=parts[-1],
                topology=PROBE, iterations=iterations, duration_s=duration,
                params=params).name


_K = re.compile(r"k\d+")
_WHOLE = re.compile(r"-?\d+")


@cache
def _experiments() -> dict[str, Experiment]:
    from harness.experiment import load_experiments  # bench's: only old names need them

    return load_experiments()
_NUMBER = re.compile(r"-?\d+(\.\d*)?(e[-+]?\d+)?")


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Empty text as "", an empty unit as ns, ``disturbed`` as booleans."""
    frame = frame.copy()
    for column in [*col.CASE, *col.STATUS, col.HISTOGRAM]:
        if column.kind == col.OPTIONAL_TEXT and column.name in frame.columns:
            frame[column.name] = frame[column.name].astype(object).fillna("").astype(str)
    if "unit" in frame.columns:
        frame.loc[frame.unit == "", "unit"] = "ns"
    if "value" in frame.columns and "disturbed" not in frame.columns:
        frame["disturbed"] = False  # samples from before batch records: none set aside
    if "disturbed" in frame.columns:
        frame["disturbed"] = frame.disturbed.fillna(False).astype(bool)
    return frame


def case_of(row: dict[str, Any], parameters: Parameters) -> Case:
    """The case a (read and tidied) row names."""
    core: dict[str, Any] = {}
    for column in col.CASE:
        value = row[column.name]
        core[column.name] = (int(value) if column.kind == col.WHOLE else
                             float(value) if column.kind == col.REAL else
                             bool(value) if column.kind == col.BOOL else str(value))
    own = parameters.get(core["experiment"], {})
    params = tuple((name, TYPE_OF_KIND[kind](row[name])) for name, kind in own.items())
    return Case(**core, params=params)


def case_names(frame: pd.DataFrame, parameters: Parameters) -> pd.Series:
    """Each row's case name (``Case.name``: pyperf.json's and history's key)."""
    keys = [c for c in frame.columns if c in col.CASE_COLUMNS
            or any(c in own for own in parameters.values())]
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    # One name per distinct row (a blank parameter is NaN, and NaN is no dict key).
    ids = frame.groupby(keys, dropna=False, sort=False).ngroup()
    names: dict[int, str] = {}
    for record, group in zip(frame[keys].to_dict("records"), ids.to_numpy(), strict=True):
        if group not in names:  # rows as dicts at once: a row lookup each costs a millisecond
            names[group] = case_of(record, parameters).name
    return ids.map(names).astype(object)


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


NATIVE_FILE = "native.csv"  # --native-reference: harness.native.COLUMNS, round by round
NATIVE_COLUMNS = ["round", "transport", "mechanism", "payload_bytes", "cpu", "native_ns",
                  "suite_ns"]


def read_native(folder: Path) -> pd.DataFrame | None:
    """The native reference's rounds, where the run measured them; else None."""
    path = folder / NATIVE_FILE
    if not path.exists():
        return None
    table = _csv(path)
    _check_columns(path, table, NATIVE_COLUMNS)
    for column in ("native_ns", "suite_ns"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values <= 0).any():
            raise UsageError(f"{path}: {column} must be positive numbers")
    return table


def _csv(path: Path, **options: Any) -> pd.DataFrame:
    try:
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # pandas ends every row: this one was cut
            raise UsageError(f"{path}: cut short (its last line is incomplete)")
        return pd.read_csv(path, **options)
    except (OSError, ValueError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        raise UsageError(f"{path}: unreadable ({_why(exc).splitlines()[0]})") from None


def check_statistics(path: Path, results: pd.DataFrame) -> None:
    """UsageError unless every measured row has the statistics the history stores, as
    numbers (``read`` checks a case's columns; the statistics only matter to a reader
    that keeps them)."""
    _check_columns(path, results, col.names(col.HISTORY_VALUES))
    measured = results[results.status == "ok"].copy()
    for column in col.names(col.HISTORY_VALUES):
        _numbers(path, measured, column)


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


def _check_cases(path: Path, frame: pd.DataFrame, columns: list[col.Column],
                 parameters: Parameters) -> None:
    """The columns that name a case: text where text, whole numbers where counts. A case
    parameter's column is checked in the rows of the experiments that declare it (and
    is blank in the others')."""
    for column in columns:
        if column.name not in frame.columns:
            continue  # a format-1 file older than the column: it gets the default
        owners = [name for name, own in parameters.items() if column.name in own]
        _check_kind(path, frame, column, frame.experiment.isin(owners) if owners else None)


def _check_kind(path: Path, frame: pd.DataFrame, column: col.Column,
                present: pd.Series | None) -> None:
    """UsageError at the first cell not of the column's kind (of those ``present``)."""
    name, kind, cells = column.name, column.kind, frame[column.name]
    skip = ~present if present is not None else pd.Series(False, index=frame.index)
    if kind == col.TEXT:
        bad = ~cells.map(lambda v: isinstance(v, str) and v != "") & ~skip
        _refuse(path, frame, bad, name, "a name")
    elif kind == col.OPTIONAL_TEXT:
        _refuse(path, frame, ~cells.map(lambda v: isinstance(v, str) or v is None or (
            isinstance(v, float) and math.isnan(v))), name, "text")
    elif kind in (col.WHOLE, col.SIGNED_WHOLE):
        numbers = _numbers(path, frame, name)
        low = -LARGEST_WHOLE if kind == col.SIGNED_WHOLE else 0
        bad = ~(numbers.between(low, LARGEST_WHOLE) & (numbers == numbers.round())) & ~skip
        _refuse(path, frame, bad, name, "a whole number" + ("" if low else " >= 0"))
    elif kind == col.REAL:
        numbers = _numbers(path, frame, name)
        _refuse(path, frame, ~np.isfinite(numbers) & ~skip, name, "a finite number")
    elif kind == col.BOOL:
        _refuse(path, frame, ~cells.map(lambda v: isinstance(v, bool | np.bool_)) & ~skip,
                name, "True or False")


def _check_placed(path: Path, frame: pd.DataFrame) -> None:
    """CPU numbers where a timed case ran; blank for probes and in older files. A probe's
    histogram (samples.csv only) is text."""
    for column in col.PLACED:
        if column.name not in frame.columns:
            frame[column.name] = np.nan
        _check_kind(path, frame, column, frame[column.name].notna())
    if "value" in frame.columns:
        if col.HISTOGRAM.name not in frame.columns:
            frame[col.HISTOGRAM.name] = ""
        _check_kind(path, frame, col.HISTOGRAM, None)


def _check_status(path: Path, frame: pd.DataFrame) -> None:
    _refuse(path, frame, ~frame.status.isin(STATUSES), "status", " or ".join(STATUSES))


def _check_samples(path: Path, frame: pd.DataFrame) -> None:
    for column in ("worker", "batch", "loops"):
        _check_kind(path, frame, col.Column(column, col.WHOLE), None)
    value = _numbers(path, frame, "value")
    bad = ~np.isfinite(value)
    if bad.any():
        line = _line(frame, bad)
        row = frame.iloc[line - 2]
        where = "/".join(str(row[c]) for c in col.names(col.IDENTITY))
        raise UsageError(f"{path} line {line}: value is {value.iloc[line - 2]} in a case "
                         f"of {where}: a measurement is always a finite number")
    for column in col.COUNTER_COLUMNS:  # nan: a counter this machine could not read
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
