"""Every column of a run folder's CSV files and of the history, each named once with its
kind: the writers (``harness.results``), the checked reader (``harness.runfolder``),
``compare`` and ``history`` take their column lists from here.

An experiment's own parameters of a case are columns too; they are declared by the
experiment (``harness.experiment.param(..., column=...)``), not here, and a run folder
names them with their kind in ``metadata.json`` (``case_parameters``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from harness.records import BatchRecord, Case
from harness.stats import Summary

TEXT, OPTIONAL_TEXT, WHOLE, SIGNED_WHOLE, REAL, BOOL = (
    "text", "optional text", "whole", "signed whole", "real", "bool")
KINDS = (TEXT, OPTIONAL_TEXT, WHOLE, SIGNED_WHOLE, REAL, BOOL)


@dataclass(frozen=True)
class Column:
    """A column: its kind, and for a column newer than some format-1 files, the value
    rows of those files take (None: every file has it)."""

    name: str
    kind: str
    older: object = None


def names(columns: list[Column]) -> list[str]:
    return [c.name for c in columns]


# A case parameter's declared type and the kind its column has.
KIND_OF_TYPE: dict[type, str] = {str: TEXT, int: SIGNED_WHOLE, float: REAL, bool: BOOL}
TYPE_OF_KIND = {kind: kind_type for kind_type, kind in KIND_OF_TYPE.items()}


def parameter_kind(column: Column) -> str:
    """The kind a shared format-1 column has as a parameter (optional text is text)."""
    return TEXT if column.kind == OPTIONAL_TEXT else column.kind


# The columns that name a case (Case's fields, less its parameters), in file order.
IDENTITY = [Column("experiment", TEXT), Column("transport", TEXT),
            Column("placement", TEXT), Column("payload_bytes", WHOLE), Column("k", WHOLE)]
CASE = [*IDENTITY, Column("metric", TEXT), Column("unit", OPTIONAL_TEXT, "ns"),
        Column("topology", TEXT), Column("working_set", WHOLE), Column("sched_batch", BOOL),
        Column("workload", TEXT), Column("iterations", WHOLE),
        Column("duration_s", REAL, 0.0)]
assert set(names(CASE)) == {f.name for f in fields(Case)} - {"params", "workers"}

# Format 1 carried every experiment's own parameters in three shared columns; reading
# such a file turns them into the experiment's declared ones (``Experiment.format1``).
FORMAT1_SHARED = [Column("variant", OPTIONAL_TEXT, ""), Column("level", REAL, 0.0),
                  Column("seed", SIGNED_WHOLE, 0)]

COUNTERS = [Column(name, REAL) for name in (
    "ctx_switches_per_op", "cpu_ns_per_op", "ctx_voluntary_per_op", "ctx_involuntary_per_op",
    "system_ctxt_per_op", "messages_per_op")]
BATCH = [Column(f.name, BOOL if f.name == "disturbed" else WHOLE if f.name == "cpus" else REAL)
         for f in fields(BatchRecord)]
STATS = [Column(f.name, WHOLE if f.name == "n" else REAL) for f in fields(Summary)]
DISTURBANCE = [Column("batches_disturbed", REAL), Column("foreign_share", REAL),
               Column("ref_ns", REAL)]
STATUS = [Column("status", TEXT), Column("note", OPTIONAL_TEXT)]
# The CPUs a timed case's placement resolved to (blank for probes; newer than some
# format-2 folders: read as blank where absent).
PLACED = [Column("client_cpu", WHOLE), Column("server_cpu", WHOLE)]
# A probe worker's HDR histogram (encoded), on the row of its first metric; blank else.
HISTOGRAM = Column("histogram", OPTIONAL_TEXT)
BATCH_POSITION = [Column("worker", WHOLE), Column("batch", WHOLE), Column("loops", WHOLE),
                  Column("value", REAL)]

COUNTER_COLUMNS = names(COUNTERS)
BATCH_COLUMNS = names(BATCH)
STAT_COLUMNS = names(STATS)
CASE_COLUMNS = names(CASE)


def result_columns(parameters: list[str]) -> list[str]:
    """results.csv: identity, metric and unit first (DESIGN.md's contract), then the
    statistics, counters, the rest of the case, its parameters, disturbance, status."""
    head = len(IDENTITY) + 2
    return [*CASE_COLUMNS[:head], *STAT_COLUMNS, *COUNTER_COLUMNS, *CASE_COLUMNS[head:],
            *parameters, *names(PLACED), *names(DISTURBANCE), *names(STATUS)]


def sample_columns(parameters: list[str]) -> list[str]:
    return [*CASE_COLUMNS, *parameters, *names(BATCH_POSITION), *names(PLACED),
            *COUNTER_COLUMNS, *BATCH_COLUMNS, HISTOGRAM.name]


# What the history keeps of a case: what it is (once per case name, in ``case_names``)
# and its statistics (per run, in ``cases``).
HISTORY_CASE = CASE[: len(IDENTITY) + 2]
HISTORY_VALUES = [*STATS, *COUNTERS[:2]]
HISTORY = [*HISTORY_CASE, *HISTORY_VALUES]
HISTORY_STATS = names(HISTORY)
