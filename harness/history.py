"""Run history in SQLite, and change points in each case's series.

Every run appends its per-case statistics. ``ipcbench history`` shows the
trend of each case over the runs of one machine and flags change points
with a robust z-score over a lookback window: a run whose median lies more
than ``Z_LIMIT`` median absolute deviations from the median of the runs
before it (at least ``MIN_LOOKBACK`` of them), and more than the practical
threshold away in ratio. The MAD, not the standard deviation, keeps one
earlier outlier from hiding the next shift (Iglewicz and Hoaglin's modified
z-score, applied to a moving window as in change-point monitoring).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.columns import HISTORY_STATS
from harness.errors import UsageError
from harness.runfolder import format1_name

DEFAULT_PATH = Path("results") / "history.sqlite"
LOOKBACK = 10
MIN_LOOKBACK = 4
Z_LIMIT = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
MAD_TO_SIGMA = 0.6745

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, git_commit TEXT,
    machine_id TEXT, suite TEXT, folder TEXT
);
CREATE TABLE IF NOT EXISTS cases (
    run_id TEXT REFERENCES runs(run_id), name TEXT, experiment TEXT, transport TEXT,
    placement TEXT, payload_bytes INTEGER, k INTEGER, metric TEXT, unit TEXT, n INTEGER,
    median REAL, mean REAL, stdev REAL, p5 REAL, p95 REAL, p99 REAL, ci_low REAL,
    ci_high REAL, ctx_switches_per_op REAL, cpu_ns_per_op REAL,
    PRIMARY KEY (run_id, name)
);
"""
STAT_COLUMNS = HISTORY_STATS
assert all(f" {c} " in SCHEMA for c in STAT_COLUMNS)  # the table holds these, in this order
# PRAGMA user_version: 1 once the rows' case names are those of run folder format 2
# (a probe's parameters by name); older rows are renamed on the first write.
NAMES_VERSION = 1


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _expected_columns() -> dict[str, list[str]]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        return {table: _columns(db, table) for table in ("runs", "cases")}
    finally:
        db.close()


def _read_only(path: Path) -> sqlite3.Connection:
    """Opened so that nothing, not even the schema, is written (an empty file stays empty)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _tables(path: Path) -> set[str]:
    """The tables of an existing history file, its schema checked; UsageError if it is not
    one this code can read and append to."""
    try:
        db = _read_only(path)
        try:
            found = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'")}
            columns = {table: _columns(db, table) for table in found & {"runs", "cases"}}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise UsageError(f"history {path}: not a readable SQLite database ({exc})") from None
    foreign = sorted(found - {"runs", "cases"})
    if foreign:
        raise UsageError(f"history {path}: not an ipcbench history (it holds table "
                         f"{foreign[0]!r})")
    for table, names in columns.items():
        if names != _expected_columns()[table]:
            raise UsageError(f"history {path}: table {table!r} has other columns than an "
                             f"ipcbench history ({', '.join(names)})")
    return found


def check(path: Path, append: bool = False) -> None:
    """UsageError unless ``path`` is a history this code can read (and, with ``append``,
    add to, or create). Only reads: ``ipcbench run`` calls it before measuring, so a bad
    path costs nothing, and an existing file, empty or not, is left as it is."""
    try:
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
    except OSError as exc:
        raise UsageError(f"history {path}: cannot look at it ({exc.strerror})") from None
    if is_dir:
        raise UsageError(f"history {path}: is a folder, not a SQLite file")
    if exists and not is_file:
        raise UsageError(f"history {path}: not a regular file")
    if not exists:
        if not append:
            raise UsageError(f"history {path}: no such database (runs append to it as they "
                             "finish)")
        _creatable(path)
        return
    _tables(path)
    if append and not os.access(path, os.W_OK):
        raise UsageError(f"history {path}: not writable")


def _creatable(path: Path) -> None:
    """A new file can be made at ``path``: its nearest existing folder takes a file (an
    unnamed one, gone when closed, so nothing is left there)."""
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"history {path}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"history {path}: cannot create it there ({exc.strerror})") from None


def connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30)  # another run may be appending right now
        db.executescript(SCHEMA)
        _rename_cases(db)
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"history {path}: cannot open ({exc})") from None
    return db


def _rename_cases(db: sqlite3.Connection) -> None:
    """Rows stored under format-1 probe names get today's names, once (one transaction,
    under SQLite's write lock, so two runs opening an old file at once rename it once)."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        if db.execute("PRAGMA user_version").fetchone()[0] >= NAMES_VERSION:
            return
        names = [row[0] for row in db.execute("SELECT DISTINCT name FROM cases")]
        renamed = [(format1_name(name), name) for name in names]
        db.executemany("UPDATE cases SET name = ? WHERE name = ?",
                       [pair for pair in renamed if pair[0] != pair[1]])
        db.execute(f"PRAGMA user_version = {NAMES_VERSION}")


def append(path: Path, run_id: str, metadata: dict, results: pd.DataFrame, names: list[str],
           folder: Path) -> str:
    """Store one run's measured cases (``names`` are their case names, row for row).

    Returns the id it is stored under: ``run_id``, or ``run_id-2``, ``-3``... when another
    run of that name is already stored (two folders of one basename, in two places): a
    row never replaces another run's."""
    measured = results.assign(name=names)[results.status == "ok"]
    rows = list(measured[["name", *STAT_COLUMNS]].itertuples(index=False))
    db = connect(path)
    try:
        with db:  # one transaction: the run and its cases, or nothing
            stored = _insert_run(db, run_id, metadata, folder)
            db.executemany(
                f"INSERT INTO cases VALUES (?, {', '.join('?' * (len(STAT_COLUMNS) + 1))})",
                [(stored, *[_plain(v) for v in row]) for row in rows])
    except sqlite3.Error as exc:
        raise UsageError(f"history {path}: cannot append ({exc})") from None
    finally:
        db.close()
    return stored


def _insert_run(db: sqlite3.Connection, run_id: str, metadata: dict, folder: Path) -> str:
    """The first free id of ``run_id``, ``run_id-2``, ...; the insert itself decides (the
    primary key), so two runs appending at once cannot take the same one."""
    for n in range(1, 10_000):
        candidate = run_id if n == 1 else f"{run_id}-{n}"
        try:
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", (
                candidate, metadata.get("started"), metadata.get("finished"),
                metadata.get("git_commit"), metadata.get("machine", {}).get("machine_id"),
                metadata.get("suite"), str(folder.resolve())))
            return candidate
        except sqlite3.IntegrityError:
            continue
    raise UsageError(f"history: no free run id for {run_id!r}")


def _plain(value: object) -> object:
    """numpy scalars as Python ones; NaN as NULL."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


def series(path: Path, machine: str | None = None) -> pd.DataFrame:
    """One row per run and case, oldest first."""
    check(path)
    query = ("SELECT r.run_id, r.started, r.git_commit, r.machine_id, c.name, c.median, "
             "COALESCE(c.unit, 'ns') AS unit "
             "FROM cases c JOIN runs r USING (run_id)")
    if {"runs", "cases"} - _tables(path):  # an empty file: no run yet
        return pd.DataFrame(columns=["run_id", "started", "git_commit", "machine_id", "name",
                                     "median", "unit"])
    try:
        db = _read_only(path)
        try:
            table = pd.read_sql_query(query, db)
        finally:
            db.close()
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise UsageError(f"history {path}: unreadable ({exc})") from None
    bad = pd.to_numeric(table["median"], errors="coerce").isna() & table["median"].notna()
    if bad.any():
        raise UsageError(f"history {path}: a median of run {table.run_id[bad].iloc[0]!r} is "
                         "not a number")
    table["median"] = pd.to_numeric(table["median"], errors="coerce")
    current = {name: format1_name(name) for name in table.name.unique()}
    table["name"] = table.name.map(current)  # a file no run has written to since
    if machine:
        table = table[table.machine_id == machine]
    return table.sort_values(["started", "run_id"]).reset_index(drop=True)


@dataclass(frozen=True)
class ChangePoint:
    name: str
    run_id: str
    before: float  # median of the lookback window
    after: float
    z: float


def change_points(values: np.ndarray, threshold: float = 0.05,
                  ) -> list[tuple[int, float, float]]:
    """(index, robust z, window median) where a value departs from its lookback window.

    After a change the window restarts there, as sequential detectors do: the
    new level is judged against itself, so a step is flagged once, at its start.
    """
    found = []
    start = 0
    for i in range(MIN_LOOKBACK, len(values)):
        window = values[max(start, i - LOOKBACK) : i]
        if len(window) < MIN_LOOKBACK:
            continue
        center = float(np.median(window))
        mad = float(np.median(np.abs(window - center)))
        # a floor on the spread: identical past values must not make any change infinite
        spread = max(mad, center * threshold / 10) / MAD_TO_SIGMA
        z = (values[i] - center) / spread
        if abs(z) > Z_LIMIT and abs(values[i] / center - 1) > threshold:
            found.append((i, float(z), center))
            start = i
    return found


def detect(table: pd.DataFrame, threshold: float = 0.05) -> list[ChangePoint]:
    points = []
    for name, rows in table.groupby("name", sort=True):
        values = rows["median"].to_numpy(float)
        for i, z, before in change_points(values, threshold):
            points.append(ChangePoint(name, rows.run_id.iloc[i], before, float(values[i]), z))
    return points


def plot_series(table: pd.DataFrame, point: ChangePoint, folder: Path) -> Path:
    from harness.plots import pyplot, save

    plt = pyplot()
    rows = table[table.name == point.name].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    unit = str(rows.unit.iloc[0]) if "unit" in rows else "ns"
    scale, label = (1000, "us") if unit == "ns" else (1, unit)
    ax.plot(rows.index, rows["median"] / scale, "o-", ms=3)
    flagged = rows.index[rows.run_id == point.run_id]
    ax.plot(flagged, rows.loc[flagged, "median"] / scale, "ro", ms=8, label="change point")
    ax.set(title=point.name, xlabel="run (oldest first)", ylabel=f"median ({label})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    folder.mkdir(parents=True, exist_ok=True)
    safe = point.name.replace("/", "_")
    return save(fig, folder / f"{safe}.png")
