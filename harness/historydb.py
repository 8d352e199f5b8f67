"""Where run history lives: a SQLite file by default, or a PostgreSQL server a fleet shares.

One schema for both, through SQLAlchemy Core. Three tables: ``machines`` (a fingerprint and
the name the user gives it, one row per pair), ``runs`` (one per stored run) and ``cases``
(one per measured case of a run). The schema carries its version in ``ipcbench_schema``;
a file written before that table existed is upgraded in place the first time it is opened.

Concurrent writers, on one machine or many, are safe because each run is one transaction
(the run, its machine row and its cases together, or nothing) and a run is known by
``run_uuid``. Storing the same run twice stores it once, and two runs with the same folder
name get ``name``, ``name-2``, ... as their ids, whichever commits first.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool

from harness.columns import (
    BOOL,
    HISTORY,
    HISTORY_CASE,
    HISTORY_VALUES,
    REAL,
    SIGNED_WHOLE,
    WHOLE,
    names,
)
from harness.errors import UsageError
from harness.history import DEFAULT_PATH, HISTORY_VARIABLE
from harness.metadata import FINGERPRINT_KEYS
from harness.runfolder import format1_name

SCHEMA_VERSION = 2
# Before the schema table, a SQLite file's PRAGMA user_version was its version. 0: case names
# of run folder format 1; 1: today's names.
MACHINE_FIELDS = ("name", *FINGERPRINT_KEYS, "topology")
MAX_SAME_NAME = 10_000  # runs of one folder name: name, name-2, ...

_TYPES = {WHOLE: sa.BigInteger, SIGNED_WHOLE: sa.BigInteger, REAL: sa.Double, BOOL: sa.Boolean}

schema = sa.MetaData()
machines = sa.Table(
    "machines", schema,
    # A hash of the name and every fingerprint field: the same machine after a kernel
    # update is a new row with the same name, so a series runs on across the update.
    sa.Column("machine_key", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("machine_id", sa.Text),  # the fingerprint's own hash, as in metadata.json
    sa.Column("cpu_model", sa.Text), sa.Column("cpu_count", sa.BigInteger),
    sa.Column("kernel", sa.Text), sa.Column("virtualization", sa.Text),
    sa.Column("python", sa.Text), sa.Column("topology", sa.Text),
    sa.Index("ix_machines_name", "name"),
)
runs = sa.Table(
    "runs", schema,
    sa.Column("run_key", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, nullable=False, unique=True),  # the folder's name, or -2...
    sa.Column("run_uuid", sa.Text, unique=True),  # the run's identity: stored once
    sa.Column("machine_key", sa.Text, sa.ForeignKey("machines.machine_key"), nullable=False),
    sa.Column("suite", sa.Text), sa.Column("started", sa.Text),
    sa.Column("started_utc", sa.Text),  # sorts across machines in other time zones
    sa.Column("finished", sa.Text), sa.Column("git_commit", sa.Text),
    sa.Column("folder", sa.Text),
    sa.Column("stored_at", sa.Text), sa.Column("stored_from", sa.Text),  # when, which host
    # how disturbed the machine was: share of timed batches set aside, of CPU time stolen
    sa.Column("disturbed_share", sa.Double), sa.Column("steal_share", sa.Double),
    sa.Index("ix_runs_machine_started", "machine_key", "started_utc"),
)
# A case's name and what it is, once: a run's rows are numbers only, so a fleet's
# million rows read fast and take little room.
case_names = sa.Table(
    "case_names", schema,
    sa.Column("case_key", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    *[sa.Column(c.name, _TYPES.get(c.kind, sa.Text)) for c in HISTORY_CASE],
)
cases = sa.Table(
    "cases", schema,
    sa.Column("run_key", sa.Integer, sa.ForeignKey("runs.run_key"), primary_key=True),
    sa.Column("case_key", sa.Integer, sa.ForeignKey("case_names.case_key"), primary_key=True),
    *[sa.Column(c.name, _TYPES.get(c.kind, sa.Text)) for c in HISTORY_VALUES],
)
versions = sa.Table("ipcbench_schema", schema,
                    sa.Column("version", sa.Integer, nullable=False))
OURS = {t.name for t in schema.sorted_tables}
# A history from before the schema table: two tables, and PRAGMA user_version.
LEGACY_COLUMNS = {
    "runs": ["run_id", "started", "finished", "git_commit", "machine_id", "suite", "folder"],
    "cases": ["run_id", "name", *names(HISTORY)]}


@dataclass(frozen=True)
class Target:
    """A history: a SQLite file (``path``) or a server's database (``url``)."""

    url: sa.URL
    path: Path | None

    def __str__(self) -> str:
        return str(self.path) if self.path else shown(self.url)


SECRET_PARAMETERS = ("password", "passfile", "sslpassword")


def shown(url: sa.URL) -> str:
    """The URL as messages show it: no password, in the user part or in the query."""
    hidden = {k: "***" for k in url.query if k.lower() in SECRET_PARAMETERS}
    return url.update_query_dict(hidden).render_as_string(hide_password=True)


def target(given: str | os.PathLike[str] | None = None) -> Target:
    """``--history``, else ``$IPCBENCH_HISTORY``, else ``results/history.sqlite``: a file
    path, a ``sqlite:///`` URL or a ``postgresql://`` URL."""
    text = os.fspath(given) if given is not None else (
        os.environ.get(HISTORY_VARIABLE) or str(DEFAULT_PATH))
    if "://" not in text:
        return Target(sa.URL.create("sqlite", database=text), Path(text))
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        raise UsageError(f"history {text.split('://')[0]}://...: not a database URL") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise UsageError("history sqlite://: name a file (sqlite:///path/history.sqlite)")
        return Target(url, Path(url.database))
    if backend != "postgresql":
        raise UsageError(f"history {shown(url)}: a SQLite file or a postgresql:// URL")
    if url.drivername not in ("postgresql", "postgresql+psycopg"):
        raise UsageError(f"history {shown(url)}: ipcbench talks to PostgreSQL through "
                         "psycopg (postgresql:// or postgresql+psycopg://)")
    # SQLAlchemy's default driver is psycopg2; ipcbench installs psycopg 3
    return Target(url.set(drivername="postgresql+psycopg"), None)


# ---------------------------------------------------------------- checks before opening

def _file_problem(path: Path, write: bool) -> str | None:
    """Why a SQLite history cannot be used at ``path``, or None; looks without writing."""
    try:
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
    except OSError as exc:
        return f"cannot look at it ({exc.strerror})"
    if is_dir:
        return "is a folder, not a SQLite file"
    if exists and not is_file:
        return "not a regular file"
    if not exists:
        return _creatable(path) if write else "no such database (runs append to it as " \
            "they finish)"
    if write and not os.access(path, os.W_OK):
        return "not writable"
    return None


def _creatable(path: Path) -> str | None:
    """None if a new file can be made at ``path`` (tried with an unnamed file, so nothing
    is left there)."""
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot create it there ({exc.strerror})"
    return None


def check(where: Target, write: bool = False) -> None:
    """UsageError unless ``where`` is a history this code can read (and, with ``write``,
    add to or create). ``ipcbench run`` calls it before measuring, so a bad history costs
    nothing; it writes nothing, so an existing file, empty or not, stays as it is."""
    if where.path is not None:
        problem = _file_problem(where.path, write)
        if problem:
            raise UsageError(f"history {where}: {problem}")
        if not where.path.exists():
            return
    with _engine(where, write=False) as engine, _connected(where, engine) as conn:
        _version(where, conn)


# ---------------------------------------------------------------- engines and versions

@contextmanager
def _engine(where: Target, write: bool) -> Iterator[sa.Engine]:
    """An engine that keeps no pooled connection past the ``with``. A SQLite writer
    takes the file's write lock at BEGIN (another run may be appending: it waits up to
    30 s), so two writers never both read first and then deadlock upgrading."""
    if where.path is not None:
        if write:
            try:
                where.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"history {where}: cannot create its folder "
                                 f"({exc.strerror})") from None
        # A file: URI that sqlite decodes itself (any byte of the path escaped); read-only
        # opening writes nothing, not even an empty file's header.
        uri = where.path.resolve().as_uri() + ("?mode=rwc" if write else "?mode=ro")
        engine = sa.create_engine("sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(
            uri, uri=True, timeout=30))

        @sa.event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
    else:
        # READ COMMITTED whatever the server's default: after waiting on another writer's
        # lock, a statement must see what that writer committed
        engine = sa.create_engine(where.url, poolclass=NullPool, isolation_level="READ COMMITTED",
                                  connect_args={"connect_timeout": 10})
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _connected(where: Target, engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction on ``engine``; a database error becomes one line naming the history
    (never its password)."""
    try:
        with engine.begin() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise UsageError(f"history {where}: {_reason(exc)}") from None


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    first = str(original).strip().splitlines()
    text = first[0] if first else type(original).__name__
    if "file is not a database" in text or "not a database" in text:
        return f"not a readable SQLite database ({text})"
    return text


def _version(where: Target, conn: sa.Connection) -> int | None:
    """The schema version found: None for an empty database, a legacy version for a file
    from before the schema table. UsageError if it is not a history of ours."""
    tables = set(sa.inspect(conn).get_table_names())
    ours = tables & OURS
    if where.path is not None and tables - OURS:  # a whole file is ours or not at all
        raise UsageError(f"history {where}: not an ipcbench history (it holds table "
                         f"{sorted(tables - OURS)[0]!r})")
    if not ours:
        return None
    if versions.name in tables:
        found = conn.execute(sa.select(sa.func.max(versions.c.version))).scalar()
        if found is None or found > SCHEMA_VERSION:
            raise UsageError(f"history {where}: schema version {found} is not one this "
                             f"ipcbench reads (it reads up to {SCHEMA_VERSION}); upgrade "
                             "ipcbench")
        _check_columns(where, conn, {t.name: [c.name for c in t.columns]
                                     for t in schema.sorted_tables})
        return int(found)
    if where.path is None or not {"runs", "cases"} <= tables or ours - {"runs", "cases"}:
        raise UsageError(f"history {where}: holds tables {sorted(ours)} but no "
                         f"{versions.name}: not an ipcbench history")
    _check_columns(where, conn, LEGACY_COLUMNS)
    found = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
    if found not in (0, 1):
        raise UsageError(f"history {where}: user_version {found} with the tables of a "
                         "history from before schema versions: not one ipcbench wrote")
    return found


def _check_columns(where: Target, conn: sa.Connection, expected: dict[str, list[str]]) -> None:
    inspector = sa.inspect(conn)
    for table, wanted in expected.items():
        found = [c["name"] for c in inspector.get_columns(table)]
        if found != wanted:
            raise UsageError(f"history {where}: table {table!r} has other columns than an "
                             f"ipcbench history ({', '.join(found)})")


# ---------------------------------------------------------------- creating and upgrading

def _lock_schema(conn: sa.Connection) -> None:
    """Serialize schema changes between writers: SQLite's BEGIN IMMEDIATE already holds
    the file's write lock; a server takes an advisory lock until the transaction ends."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(b"ipcbench history schema")
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _ready(where: Target, conn: sa.Connection, create: bool,
           storing: dict[str, Any] | None = None) -> bool:
    """Bring the schema to SCHEMA_VERSION inside ``conn``'s transaction (the upgrade is
    all or nothing). False if the database is empty and ``create`` is off.

    The lock is taken only to change the schema, so writers of a current database do
    not queue behind each other; under it the version is read again, since another
    writer may have made the change while this one waited."""
    if _version(where, conn) == SCHEMA_VERSION:
        return True
    _lock_schema(conn)
    found = _version(where, conn)
    if found == SCHEMA_VERSION:
        return True
    if found is None:
        if not create:
            return False
        schema.create_all(conn)
        conn.execute(versions.insert().values(version=SCHEMA_VERSION))
        return True
    if found == 0:
        _rename_format1_cases(conn)
    _upgrade_to_2(conn, storing)
    return True


def _rename_format1_cases(conn: sa.Connection) -> None:
    """Legacy rows stored under format-1 probe names get today's names."""
    old = conn.exec_driver_sql("SELECT DISTINCT name FROM cases").scalars().all()
    renamed = [(format1_name(n), n) for n in old if format1_name(n) != n]
    if renamed:
        conn.exec_driver_sql("UPDATE cases SET name = ? WHERE name = ?", renamed)


def _upgrade_to_2(conn: sa.Connection, storing: dict[str, Any] | None) -> None:
    """A history file from before schema versions, rebuilt in today's tables.

    Machines become rows of their own, runs get a unique id and a UTC start, and a case's
    name is stored once. An old run's machine is known by its fingerprint hash alone,
    unless its run folder is still where the history says and is still that run's (same
    start, same machine), in which case its metadata.json gives the fingerprint and the
    run's id. Old runs of this machine take its name, so its series go on unbroken: the
    name of the run being stored (``storing``: its metadata's machine) if that run is
    this machine's, else ``$IPCBENCH_MACHINE_NAME`` or the host name. An old run is this
    machine's if its fingerprint is this one's, or, where its folder tells, if its CPU
    and virtualization are (kernel and Python may have changed since). Others are named
    by their fingerprint hash.
    """
    from harness.metadata import fingerprint, machine_name

    here = fingerprint()
    name_here = (storing or {}).get("name") if (storing or {}).get(
        "machine_id") == here["machine_id"] else None
    name_here = name_here or machine_name()
    hardware = ("cpu_model", "cpu_count", "virtualization")
    for table in ("runs", "cases"):
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO old_{table}")
    schema.create_all(conn)
    old = conn.exec_driver_sql("SELECT run_id, started, finished, git_commit, machine_id, "
                               "suite, folder FROM old_runs").all()
    given: set[str] = set()
    for run_id, started, finished, git_commit, machine_id, suite, folder in old:
        meta = _folder_metadata(folder)
        recorded = meta.get("machine")
        if not (isinstance(recorded, dict) and recorded.get("machine_id") == machine_id
                and meta.get("started") == started):
            meta, recorded = {}, {}  # the folder is gone, or holds another run now
        machine = {**recorded, "machine_id": machine_id}
        mine = machine_id == here["machine_id"] or (bool(recorded) and all(
            recorded.get(k) == here[k] for k in hardware))
        machine["name"] = name_here if mine else str(machine_id or "unknown")
        uuid = run_uuid(meta) if meta else None
        if uuid in given:  # two rows of one run (stored twice from one folder): one id
            uuid = None
        given.add(uuid or "")
        conn.execute(runs.insert().values(
            run_id=run_id, run_uuid=uuid, machine_key=_insert_machine(conn, machine),
            suite=suite, started=started, started_utc=utc(started), finished=finished,
            git_commit=git_commit, folder=folder, **_disturbance(meta)))
    identity = ", ".join(c.name for c in HISTORY_CASE)
    # one row per name; were an old file to disagree with itself, its first run's says
    conn.exec_driver_sql(
        f"INSERT INTO case_names (name, {identity}) SELECT name, {identity} FROM old_cases "
        "WHERE rowid IN (SELECT MIN(rowid) FROM old_cases GROUP BY name)")
    values = ", ".join(c.name for c in HISTORY_VALUES)
    conn.exec_driver_sql(
        f"INSERT INTO cases (run_key, case_key, {values}) SELECT r.run_key, n.case_key, "
        + ", ".join(f"o.{c.name}" for c in HISTORY_VALUES)
        + " FROM old_cases o JOIN runs r ON r.run_id = o.run_id "
          "JOIN case_names n ON n.name = o.name")
    conn.exec_driver_sql("DROP TABLE old_cases")
    conn.exec_driver_sql("DROP TABLE old_runs")
    conn.exec_driver_sql("PRAGMA user_version = 2")  # the version an older ipcbench read
    conn.execute(versions.insert().values(version=SCHEMA_VERSION))


def _folder_metadata(folder: str | None) -> dict[str, Any]:
    try:
        found = json.loads((Path(folder or "") / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


# ---------------------------------------------------------------- writing

def utc(started: object) -> str | None:
    """An ISO time with an offset, as UTC text that sorts (``2026-12-04T07:22:49Z``);
    a time without an offset is taken as it is."""
    if not isinstance(started, str) or not started:
        return None
    try:
        moment = datetime.fromisoformat(started)
    except ValueError:
        return started
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if moment.tzinfo else "")


def run_uuid(metadata: dict[str, Any]) -> str:
    """A run's identity: metadata.json's ``run_uuid``, or for a folder written before runs
    had one, a hash of what made that run unique (its IPC prefix holds its pid and a
    random part; with its start and machine, no other run shares them)."""
    given = metadata.get("run_uuid")
    if isinstance(given, str) and given:
        return given
    basis = [metadata.get(k) for k in ("ipc_prefix", "started", "finished", "suite")]
    basis.append((metadata.get("machine") or {}).get("machine_id"))
    return "h-" + hashlib.sha256(json.dumps(basis, default=str).encode()).hexdigest()[:30]


def machine_key(machine: dict[str, Any]) -> str:
    fields = [str(machine.get(k)) for k in MACHINE_FIELDS]
    return hashlib.sha256("\0".join(fields).encode()).hexdigest()[:20]


def _insert_machine(conn: sa.Connection, machine: dict[str, Any]) -> str:
    """The machine's row, inserted unless present (a concurrent insert of the same row is
    not an error); returns its key."""
    key = machine_key(machine)
    row = {"machine_key": key, "name": str(machine.get("name") or machine.get("machine_id")),
           "machine_id": str(machine.get("machine_id", "")) or None,
           **{k: machine.get(k) for k in (*FINGERPRINT_KEYS, "topology")}}
    if isinstance(row["cpu_count"], str):
        row["cpu_count"] = int(row["cpu_count"]) if row["cpu_count"].isdigit() else None
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(machines).values(row).on_conflict_do_nothing())
    return key


@dataclass(frozen=True)
class Stored:
    run_id: str
    new: bool  # False: this run was stored before (same run_uuid), under run_id


def append(where: Target, run_id: str, metadata: dict[str, Any], results: pd.DataFrame,
           names: list[str], folder: Path, machine_name: str | None = None) -> Stored:
    """Store one run's measured cases (``names`` are their case names, row for row), in
    one transaction. ``machine_name`` names a machine whose metadata has no name (a folder
    from before names); otherwise the metadata's name is the machine's."""
    measured = results.assign(name=names)[results.status == "ok"]
    identity = [c.name for c in HISTORY_CASE]
    values = [c.name for c in HISTORY_VALUES]
    kinds = measured.drop_duplicates("name")[["name", *identity]]
    machine = dict(metadata.get("machine") or {})
    if not machine.get("name"):
        machine["name"] = machine_name or str(machine.get("machine_id") or "unknown")
    uuid = run_uuid(metadata)
    with _engine(where, write=True) as engine, _connected(where, engine) as conn:
        _ready(where, conn, create=True, storing=machine)
        done = conn.execute(sa.select(runs.c.run_id).where(runs.c.run_uuid == uuid)).scalar()
        if done is not None:
            return Stored(done, new=False)
        key = _insert_machine(conn, machine)
        stored, run_key = _insert_run(conn, run_id, uuid, {
            "started": metadata.get("started"), "finished": metadata.get("finished"),
            "git_commit": metadata.get("git_commit"), "suite": metadata.get("suite"),
            "folder": str(folder.resolve()), "run_uuid": uuid, "machine_key": key,
            "started_utc": utc(metadata.get("started")),
            "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stored_from": platform.node(), **_disturbance(metadata)})
        if stored.new and len(measured):
            keys = _case_keys(conn, kinds)
            conn.execute(cases.insert(), [
                {"run_key": run_key, "case_key": keys[row[0]],
                 **dict(zip(values, map(_plain, row[1:]), strict=True))}
                for row in measured[["name", *values]].itertuples(index=False)])
        return stored


def _case_keys(conn: sa.Connection, kinds: pd.DataFrame) -> dict[str, int]:
    """Each case name's key, a new name inserted first. In name order: two writers adding
    the same new names wait on each other in one order, never in a cycle."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    rows = [{k: _plain(v) for k, v in row.items()}
            for row in kinds.sort_values("name").to_dict("records")]
    conn.execute(insert(case_names).on_conflict_do_nothing(index_elements=["name"]), rows)
    found = conn.execute(sa.select(case_names.c.name, case_names.c.case_key).where(
        case_names.c.name.in_(kinds.name.tolist())))
    return {name: key for name, key in found.all()}


def _insert_run(conn: sa.Connection, run_id: str, uuid: str, row: dict[str, Any],
                ) -> tuple[Stored, int]:
    """The first free id of ``run_id``, ``run_id-2``, ...; the insert decides (the unique
    key), each try in a savepoint so a taken id does not end the transaction. If the one
    taken turns out to be this very run, stored by a concurrent writer, that is the
    answer. Returns the run and its row's key."""
    taken = set(conn.execute(sa.select(runs.c.run_id).where(
        runs.c.run_id.startswith(run_id, autoescape=True))).scalars())
    for n in range(1, MAX_SAME_NAME + 1):
        candidate = run_id if n == 1 else f"{run_id}-{n}"
        if candidate in taken:
            continue
        try:
            with conn.begin_nested():
                key = conn.execute(runs.insert().values(run_id=candidate, **row)
                                   .returning(runs.c.run_key)).scalar_one()
            return Stored(candidate, new=True), key
        except sa.exc.IntegrityError:
            done = conn.execute(sa.select(runs.c.run_id).where(runs.c.run_uuid == uuid)).scalar()
            if done is not None:
                return Stored(done, new=False), -1
    raise UsageError(f"history: {MAX_SAME_NAME} runs named {run_id!r} are stored already")


def _disturbance(metadata: dict[str, Any]) -> dict[str, float | None]:
    found = metadata.get("disturbance")
    found = found if isinstance(found, dict) else {}
    batches, disturbed = found.get("batches"), found.get("disturbed")
    share = disturbed / batches if isinstance(batches, int | float) and batches and \
        isinstance(disturbed, int | float) else None
    steal = found.get("steal_share")
    return {"disturbed_share": share,
            "steal_share": float(steal) if isinstance(steal, int | float) else None}


def _plain(value: object) -> object:
    """numpy scalars as Python ones; NaN as NULL."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Filters:
    """Which runs to read: machines by name or fingerprint hash, a kernel, a suite, and
    cases whose name holds ``case``."""

    machines: tuple[str, ...] = ()
    kernel: str | None = None
    suite: str | None = None
    case: str | None = None

    def said(self) -> str:
        """`` (machine m1) (suite quick)``, or nothing for no filter."""
        said = [f"machine {', '.join(self.machines)}" if self.machines else "",
                f"kernel {self.kernel}" if self.kernel else "",
                f"suite {self.suite}" if self.suite else "",
                f"case containing {self.case!r}" if self.case else ""]
        return "".join(f" ({s})" for s in said if s)

    def where(self, query: sa.Select, with_cases: bool = True) -> sa.Select:
        if self.machines:
            query = query.where(sa.or_(machines.c.name.in_(self.machines),
                                       machines.c.machine_id.in_(self.machines)))
        if self.kernel:
            query = query.where(machines.c.kernel == self.kernel)
        if self.suite:
            query = query.where(runs.c.suite == self.suite)
        if self.case and with_cases:
            query = query.where(case_names.c.name.contains(self.case, autoescape=True))
        return query


RUN_COLUMNS = [runs.c.run_id, runs.c.started, runs.c.started_utc, runs.c.suite,
               runs.c.git_commit, runs.c.folder, runs.c.disturbed_share, runs.c.steal_share]
MACHINE_COLUMNS = [machines.c.name.label("machine"), machines.c.machine_key,
                   machines.c.machine_id, machines.c.cpu_model, machines.c.cpu_count,
                   machines.c.topology, machines.c.kernel, machines.c.virtualization,
                   machines.c.python]
SERIES_COLUMNS = ["run_id", "started_utc", "machine", "kernel", "suite", "git_commit",
                  "name", "median", "unit"]


@contextmanager
def _reading(where: Target) -> Iterator[sa.Connection | None]:
    """A connection to read in (an old file upgraded first), or None if the history is
    empty."""
    with _engine(where, write=False) as engine, _connected(where, engine) as conn:
        found = _version(where, conn)
    if found is None:
        yield None
        return
    if found != SCHEMA_VERSION:
        upgrade(where)
    with _engine(where, write=False) as engine, _connected(where, engine) as conn:
        yield conn


def _read(where: Target, *queries: sa.Select) -> list[pd.DataFrame] | None:
    """Each query's rows; None if the history is empty."""
    with _reading(where) as conn:
        return None if conn is None else [pd.read_sql(query, conn) for query in queries]


def upgrade(where: Target) -> None:
    """Upgrade an older history in place (one transaction)."""
    if where.path is not None and not os.access(where.path, os.W_OK):
        raise UsageError(f"history {where}: written by an older ipcbench, and upgrading it "
                         "in place needs write access")
    with _engine(where, write=True) as engine, _connected(where, engine) as conn:
        _ready(where, conn, create=False)


def _joined(*columns: Any, with_cases: bool) -> sa.Select:
    joined = runs.join(machines, runs.c.machine_key == machines.c.machine_key)
    if with_cases:
        joined = cases.join(joined, cases.c.run_key == runs.c.run_key).join(
            case_names, case_names.c.case_key == cases.c.case_key)
    return sa.select(*columns).select_from(joined)


def series(where: Target, filters: Filters = Filters()) -> pd.DataFrame:
    """One row per run and case: its median, the run's machine and kernel; oldest first.

    Runs and case names are read apart from the medians and joined here: only numbers
    come out of the database by the hundred thousand, straight off the driver's cursor
    (1000 runs of the quick suite's 317 cases: 0.6 s in a quiet spell, 0.8 s in a noisy
    one; through pandas' reader it was 1.1 s)."""
    run_query = filters.where(_joined(
        runs.c.run_key, runs.c.run_id, runs.c.started_utc, machines.c.name.label("machine"),
        machines.c.kernel, runs.c.suite, runs.c.git_commit, with_cases=False),
        with_cases=False).order_by(runs.c.started_utc.asc().nulls_first(), runs.c.run_id)
    name_query = sa.select(case_names.c.case_key, case_names.c.name,
                           sa.func.coalesce(case_names.c.unit, "ns").label("unit"))
    if filters.case:
        name_query = name_query.where(case_names.c.name.contains(filters.case,
                                                                 autoescape=True))
    value_query = sa.select(cases.c.run_key, cases.c.case_key, cases.c.median).where(
        cases.c.run_key.in_(sa.select(run_query.subquery().c.run_key)))
    if filters.case:
        value_query = value_query.where(cases.c.case_key.in_(
            sa.select(name_query.subquery().c.case_key)))
    with _reading(where) as conn:
        if conn is None:
            return pd.DataFrame(columns=SERIES_COLUMNS)
        run_rows = pd.read_sql(run_query, conn)
        name_rows = pd.read_sql(name_query.order_by(case_names.c.name), conn)
        fetched = conn.execute(value_query).cursor.fetchall()
    values = np.array(fetched, dtype=float).reshape(-1, 3)  # a NULL median: NaN
    run_at = pd.Index(run_rows.run_key).get_indexer(values[:, 0].astype(np.int64))
    name_at = pd.Index(name_rows.case_key).get_indexer(values[:, 1].astype(np.int64))
    order = np.lexsort((name_at, run_at))  # the runs come oldest first
    run_at, name_at = run_at[order], name_at[order]
    table = {c: run_rows[c].to_numpy()[run_at] for c in SERIES_COLUMNS if c in run_rows}
    table |= {c: name_rows[c].to_numpy()[name_at] for c in ("name", "unit")}
    table["median"] = values[order, 2]
    return pd.DataFrame(table)[SERIES_COLUMNS]


def runs_table(where: Target, filters: Filters = Filters()) -> pd.DataFrame:
    """One row per run with its machine's fingerprint; oldest first."""
    columns = [*RUN_COLUMNS, *MACHINE_COLUMNS]
    query = filters.where(_joined(*columns, with_cases=False), with_cases=False)
    read = _read(where, query.order_by(runs.c.started_utc.asc().nulls_first(), runs.c.run_id))
    return read[0] if read else pd.DataFrame(columns=[c.name for c in columns])


def export_table(where: Target, filters: Filters = Filters()) -> pd.DataFrame:
    """Every stored case with its run and machine: the tidy table ``export`` writes."""
    columns = [*RUN_COLUMNS, *MACHINE_COLUMNS, case_names.c.name.label("case"),
               *[case_names.c[c.name] for c in HISTORY_CASE],
               *[cases.c[c.name] for c in HISTORY_VALUES]]
    query = filters.where(_joined(*columns, with_cases=True))
    read = _read(where, query.order_by(runs.c.started_utc.asc().nulls_first(), runs.c.run_id,
                                       case_names.c.name))
    return read[0] if read else pd.DataFrame(columns=[c.name for c in columns])
