"""What an experiment is to the harness: typed parameters in, cases and model rows out.

Experiments live in ``bench/`` and are found through the ``ipcbench.experiments``
entry-point group, so the harness never imports them by name.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import units
from harness.plots import pyplot, save
from harness.records import PROBE, Case, CaseResult
from harness.samples import medians, select
from harness.topology import builders
from servers.transports import PLACEMENTS, TRANSPORTS
from servers.workloads import WORKLOADS

ENTRY_POINT_GROUP = "ipcbench.experiments"


@dataclass(frozen=True)
class ExperimentParams:
    """An experiment's table in a suite file, checked."""

    transports: tuple[str, ...] = ("call", "pipe", "mq", "shm", "uds")
    placements: tuple[str, ...] = ("same-cpu",)
    payload_bytes: tuple[int, ...] = (64,)
    workload: str = "echo"
    iterations: int = 0
    k: tuple[int, ...] = (1,)
    topologies: tuple[str, ...] = ("chain",)
    working_sets: tuple[int, ...] = (0,)
    message_bytes: int = 64
    sched_batch: bool = False
    # Probe experiments (footprint, boot, faults, contention, layers, deadlock):
    servers: tuple[int, ...] = (1,)  # N: servers started, graph sizes
    modes: tuple[str, ...] = ("default",)  # what a probe varies: crash kind, lock kind, ...
    levels: tuple[float, ...] = (0.5,)  # load: rho, or a rate
    seeds: tuple[int, ...] = (1,)
    duration_s: float = 1.0  # how long a probe runs per batch
    service_us: float = 200.0  # mean service time (contention), mean work per request
    crash_rate: float = 1.0  # injected crashes per second (faults)
    file_bytes: int = 0  # input size (layers); 0 = everything the probe finds
    workers: int = 0  # worker processes per case; 0: the suite's [settings] workers
    given: frozenset[str] = frozenset()  # the keys the suite set; the others are defaults

    def chosen(self, key: str, default: Any) -> Any:
        """The suite's ``key``, or the experiment's own ``default`` where the suite left
        it out: never decided by comparing with the shared default, so a list the user
        gives is checked even when it equals that default."""
        return getattr(self, key) if key in self.given else default

    @classmethod
    def of(cls, **values: Any) -> ExperimentParams:
        """The parameters a suite table setting exactly ``values`` gives (unchecked)."""
        return cls(**values, given=frozenset(values))

    @classmethod
    def from_table(
        cls, where: str, table: dict[str, Any], accepted: tuple[str, ...]
    ) -> ExperimentParams:
        accepted = (*accepted, "workers")  # every experiment may run fewer or more workers
        unknown = sorted(set(table) - set(accepted))
        if unknown:
            raise ValueError(
                f"{where}: unknown key {unknown[0]!r} (known: {', '.join(accepted)})"
            )
        values: dict[str, Any] = {}
        for key, raw in table.items():
            default = getattr(cls, key)
            if isinstance(default, tuple):
                if not isinstance(raw, list) or not raw:
                    raise ValueError(f"{where}.{key}: expected a non-empty list")
                kind = type(default[0])
                if not all(_is(x, kind) for x in raw):
                    raise ValueError(f"{where}.{key}: every item must be a {kind.__name__}")
                raw = tuple(kind(x) for x in raw)
            elif not _is(raw, type(default)):
                raise ValueError(f"{where}.{key}: expected a {type(default).__name__}")
            values[key] = type(default)(raw) if not isinstance(default, tuple) else raw
        params = cls(**values, given=frozenset(table))
        params.check(where)
        return params

    def check(self, where: str) -> None:
        for name in self.transports:
            if name not in TRANSPORTS:
                raise ValueError(
                    f"{where}.transports: unknown transport {name!r} "
                    f"(known: {', '.join(TRANSPORTS)})"
                )
        for name in self.placements:
            if name not in PLACEMENTS:
                raise ValueError(
                    f"{where}.placements: unknown placement {name!r} "
                    f"(known: {', '.join(PLACEMENTS)})"
                )
        if self.workload not in WORKLOADS:
            raise ValueError(f"{where}.workload: unknown workload {self.workload!r}")
        if any(size < 0 for size in self.payload_bytes):
            raise ValueError(f"{where}.payload_bytes: sizes must be >= 0")
        if self.iterations < 0:
            raise ValueError(f"{where}.iterations: must be >= 0")
        known = sorted(builders())
        unknown = sorted(set(self.topologies) - set(known))
        if unknown:
            raise ValueError(f"{where}.topologies: unknown topology {unknown[0]!r} "
                             f"(known: {', '.join(known)})")
        if any(k < 1 for k in self.k):
            raise ValueError(f"{where}.k: must be >= 1")
        if any(w < 0 for w in self.working_sets) or self.message_bytes < 0:
            raise ValueError(f"{where}: sizes must be >= 0")
        if any(n < 1 for n in self.servers):
            raise ValueError(f"{where}.servers: must be >= 1")
        for key in ("duration_s", "service_us", "crash_rate"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{where}.{key}: must be > 0")
        if self.file_bytes < 0:
            raise ValueError(f"{where}.file_bytes: must be >= 0")
        if self.workers < 0:
            raise ValueError(f"{where}.workers: must be >= 1 (or 0 for the suite's setting)")


def _is(value: Any, kind: type) -> bool:
    """TOML types as a suite writer means them: an int is a float too; a bool is not an int."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return type(value) is kind


@dataclass(frozen=True)
class ModelRow:
    """One row of ``model.csv``.

    A *check* sets a prediction against a measurement: ``value`` is what differs (an
    error, a gap, a ratio) with its interval, ``bounds`` what the model claims for it,
    ``events`` how much independent data the run held (workers, crashes, requests), and
    ``check`` whether the run could tell (``judge``).
    """

    parameter: str
    transport: str
    value: float
    unit: str
    ci_low: float
    ci_high: float
    method: str
    placement: str = ""
    payload_bytes: int | None = None
    k: int | None = None
    variant: str = ""
    events: float | None = None
    bound_low: float | None = None
    bound_high: float | None = None
    check: str = ""  # holds | fails | untestable; empty for a parameter

    def __post_init__(self) -> None:
        units.lookup(self.unit)  # a unit the report and compare know, or ValueError


HOLDS, FAILS, UNTESTABLE = "holds", "fails", "untestable"


def judge(low: float, high: float, bound_low: float, bound_high: float) -> str:
    """``holds`` when the whole interval lies within the bounds, ``fails`` when it lies
    wholly outside them, ``untestable`` when it straddles one (or there is none): the
    run held too little data to tell, and says so instead of passing or failing."""
    if np.isnan(low) or np.isnan(high):
        return UNTESTABLE
    if bound_low <= low and high <= bound_high:
        return HOLDS
    if high < bound_low or low > bound_high:
        return FAILS
    return UNTESTABLE


def check_row(parameter: str, transport: str, estimate: tuple[float, float, float],
              unit: str, bounds: tuple[float, float], events: float, method: str,
              **where: Any) -> ModelRow:
    """A check's row: the estimate's interval judged against the model's bounds."""
    value, low, high = estimate
    return ModelRow(parameter, transport, value, unit, low, high, method, **where,
                    events=events, bound_low=bounds[0], bound_high=bounds[1],
                    check=judge(low, high, *bounds))


def parameters(model: list[ModelRow], prefix: str) -> dict[tuple[str, str, str], ModelRow]:
    """Model rows whose parameter starts with ``prefix``, by (transport, variant, parameter)."""
    return {(m.transport, m.variant, m.parameter): m for m in model
            if m.parameter.startswith(prefix)}


@dataclass
class Section:
    """A part of a run's report: a table, the note that explains it, and the plots it
    refers to (file names in the run folder). ``summary``: the terminal summary shows
    it too, not only ``report.md`` and ``report.html``."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    plots: list[str] = field(default_factory=list)
    summary: bool = True
    fit: bool = False  # ``ipcbench fit`` prints it too: the model's own tables


@dataclass
class Plan:
    """The cases an experiment will run, and those it cannot, with the reason."""

    runnable: list[Case] = field(default_factory=list)
    skipped: list[CaseResult] = field(default_factory=list)


COMMON_KEYS = ("transports", "placements", "payload_bytes", "workload", "iterations")


class Experiment(ABC):
    name: str
    description: str
    accepted: tuple[str, ...] = COMMON_KEYS

    @abstractmethod
    def plan(self, params: ExperimentParams) -> Plan: ...

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        """Parameters derived from this experiment's samples (none by default)."""
        return []

    def tables(self, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Named tables for the report and the run folder (``<name>.csv``)."""
        return {}

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        """PNG files written into ``folder`` from this run's samples, model and tables."""
        return []

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        """Sections for the terminal summary, ``report.md`` and ``report.html``.

        ``results`` is ``results.csv``; ``plots`` are the run's PNG names.
        """
        return []

    # What every experiment may use: ----------------------------------------------------

    @property
    def where(self) -> str:
        """Where its parameters sit in a suite file, for messages about them."""
        return f"experiments.{self.name}"

    @property
    def plot_file(self) -> str:
        return f"{self.name}.png"

    def mine(self, samples: pd.DataFrame, **where: Any) -> pd.DataFrame:
        """Its own samples (and of those, the ones matching ``where``)."""
        return select(samples, experiment=self.name, **where)

    def wide(self, samples: pd.DataFrame, index: list[str],
             intervals: tuple[str, ...] = ()) -> pd.DataFrame:
        """Its median per ``index`` level and metric (over workers), a column per metric,
        with ``<metric>_ci_low``/``_ci_high`` for the ``intervals`` metrics; ``k`` is
        named ``servers``. Empty when the run has none of its cases."""
        mine = self.mine(samples)
        if mine.empty:
            return pd.DataFrame()
        table = medians(mine, [*index, "metric"])
        wide = table.pivot_table(index=index, columns="metric", values="median")
        for metric in intervals:
            spread = table[table.metric == metric].set_index(index)[["ci_low", "ci_high"]]
            wide = wide.join(spread.add_prefix(f"{metric}_"))
        wide.columns.name = None
        return wide.reset_index().rename(columns={"k": "servers"})

    def figure(self, columns: int = 1, size: tuple[float, float] = (7, 4.2),
               **options: Any) -> tuple[Any, Any]:
        """A new figure and its axes (one, or ``columns`` side by side)."""
        return pyplot().subplots(1, columns, figsize=size, **options)


class ProbeExperiment(Experiment):
    """An experiment its own probe measures (footprint, boot, faults, ...): the parts
    they all share, so that a new one is its module, its probe, its parameters and its
    test. Its table is ``<name>.csv`` and its one plot ``<name>.png``."""

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Its table, ``<name>.csv``; empty when the run has none of its cases."""
        return pd.DataFrame()

    def tables(self, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        table = self.table(samples)
        return {self.name: table} if not table.empty else {}

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        table = tables.get(self.name)
        if table is None or table.empty:
            return []
        fig = self.draw(table, model, tables)
        return [] if fig is None else [save(fig, folder / self.plot_file)]

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any | None:
        """Its figure, from its table (and the run's other tables), or None."""
        return None

    def own_plots(self, plots: list[str]) -> list[str]:
        """Its plot, if the run drew it (for its report section)."""
        return [p for p in plots if p == self.plot_file]


def check_sizes(experiment: str, params: ExperimentParams) -> None:
    """A size that no listed transport can carry is a mistake in the suite, not a skip."""
    largest = max(TRANSPORTS[name].max_payload() for name in params.transports)
    too_big = [size for size in params.payload_bytes if size > largest]
    if too_big:
        raise ValueError(
            f"experiments.{experiment}.payload_bytes: {too_big[0]} B is more than any listed "
            f"transport carries here (largest: {largest} B)"
        )


def triage(cases: list[Case], refusal: Callable[[Case, int], str | None]) -> Plan:
    """The cases this machine can run, and the others skipped with the reason
    ``refusal(case, usable CPUs)`` gives."""
    cpus = len(os.sched_getaffinity(0))
    plan = Plan()
    for case in cases:
        reason = refusal(case, cpus)
        if reason:
            plan.skipped.append(CaseResult(case, "skipped", reason))
        else:
            plan.runnable.append(case)
    return plan


def probe_cases(experiment: str, transport: str, metrics: dict[str, str],
                **fields: Any) -> list[Case]:
    """One probe case per metric (name -> unit) of a single measurement.

    ``fields`` are Case fields: k, variant, level, seed, duration_s, payload_bytes...
    """
    fields.setdefault("payload_bytes", 0)
    for unit in metrics.values():
        units.lookup(unit)
    return [Case(experiment, transport, "same-cpu", metric=metric, unit=unit, topology=PROBE,
                 **fields) for metric, unit in metrics.items()]


def load_experiments() -> dict[str, Experiment]:
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        experiment = entry.load()
        found[experiment.name] = experiment
    return found
