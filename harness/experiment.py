"""What an experiment is to the harness: typed parameters in, cases and model rows out.

Experiments live in ``bench/`` and are found through the ``ipcbench.experiments``
entry-point group, so the harness never imports them by name.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Any, Self, Union, get_args, get_origin, get_type_hints

import numpy as np
import pandas as pd

from harness import units
from harness.plots import pyplot, save
from harness.records import PROBE, Case, CaseResult
from harness.samples import medians, select

ENTRY_POINT_GROUP = "ipcbench.experiments"


ALL = "all"  # a list of choices written as ["all"]: every one that applies


def param(default: Any, meaning: str, unit: str = "", *, low: float | None = None,
          positive: bool = False, choices: Callable[[], Iterable[str]] | None = None,
          applies: Callable[[], Iterable[str]] | None = None, column: str = "") -> Any:
    """One key of an experiment's suite table: its default (None: the experiment
    decides from the other keys), what it means, its unit, and what values it takes:
    at least ``low``, above zero (``positive``), or one of ``choices()``; for a list,
    every item. A list of choices may be written ``["all"]``: every choice, or those
    ``applies()`` names (a transport added to the registry joins such a suite).

    ``column``: each of its values (each item, for a list) is a parameter of the
    experiment's cases under that name: a column of results.csv and samples.csv, a
    part of the case's name, and so a key of compare and history."""
    return field(default=default, metadata={"meaning": meaning, "unit": unit, "low": low,
                                            "positive": positive, "choices": choices,
                                            "applies": applies, "column": column})


@dataclass(frozen=True)
class Params:
    """An experiment's table in a suite file, typed. Each experiment declares its keys
    once, as a subclass whose fields are ``param(...)``s: from that come the keys a
    suite may use, their types and bounds, and the one-line errors (exit 2)."""

    workers: int | None = param(None, "worker processes per case (default: the suite's "
                                "[settings] workers)", low=1)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_table(cls, where: str, table: dict[str, Any]) -> Self:
        """The parameters of one ``[experiments.NAME]`` table; ValueError naming the key
        and what it takes when a key is unknown, of the wrong type or out of range."""
        keys = cls.keys()
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (accepted: "
                             f"{', '.join(keys)})")
        hints = get_type_hints(cls)
        values = {key: _typed(f"{where}.{key}", raw, hints[key]) for key, raw in table.items()}
        for f in fields(cls):
            every = f.metadata.get("applies") or f.metadata.get("choices")
            value = values.get(f.name)
            if every is None or not isinstance(value, tuple) or ALL not in value:
                continue
            if value != (ALL,):
                raise ValueError(f'{where}.{f.name}: "{ALL}" stands alone (it is every '
                                 f"{_one(f.name)} that applies)")
            values[f.name] = tuple(every())
        params = cls(**values)
        params.check(where)
        return params

    @classmethod
    def case_columns(cls) -> dict[str, tuple[type, str]]:
        """The parameters its cases carry, in declared order: column -> (type, unit)."""
        hints = get_type_hints(cls)
        found = {}
        for f in fields(cls):
            if f.metadata.get("column"):
                hint = hints[f.name]
                args = [a for a in get_args(hint) if a is not type(None)]
                if get_origin(hint) in (Union, UnionType):
                    hint, args = args[0], list(get_args(args[0]))
                kind = args[0] if get_origin(hint) is tuple else hint
                found[f.metadata["column"]] = (kind, f.metadata["unit"])
        return found

    def check(self, where: str) -> None:
        """The declared bounds and choices; subclasses add what spans several keys."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            for item in (value if isinstance(value, tuple) else (value,)):
                if item is None:
                    continue
                if meta.get("low") is not None and item < meta["low"]:
                    raise ValueError(f"{where}.{f.name}: must be >= {meta['low']:g}, not "
                                     f"{item!r}")
                if meta.get("positive") and not item > 0:
                    raise ValueError(f"{where}.{f.name}: must be > 0, not {item!r}")
                known = meta.get("choices")
                if known is not None and item not in set(known()):
                    raise ValueError(f"{where}.{f.name}: unknown {_one(f.name)} "
                                     f"{item!r} (known: {', '.join(known())})")


def _one(key: str) -> str:
    """A list key's item: topologies -> topology, modes -> mode."""
    return key[:-3] + "y" if key.endswith("ies") else key.removesuffix("s")


def _typed(where: str, raw: Any, hint: Any) -> Any:
    """``raw`` from TOML as the declared type: a tuple of one kind from a non-empty list,
    or a scalar; ``X | None`` takes an X (None is "not given", never written)."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (Union, UnionType):
        hint = args[0]
        args = list(get_args(hint))
    if get_origin(hint) is tuple:
        kind = args[0]
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"{where}: expected a non-empty list")
        if not all(_is(x, kind) for x in raw):
            raise ValueError(f"{where}: every item must be a {kind.__name__}")
        return tuple(kind(x) for x in raw)
    if not _is(raw, hint):
        raise ValueError(f"{where}: expected a {hint.__name__}")
    return hint(raw)


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
    # Which of an experiment's configurations the row is of, where one transport,
    # variant and k ran under several (contention: its hold and window).
    config: str = ""

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


class Experiment(ABC):
    name: str
    description: str
    params_type: type[Params] = Params  # its suite table's keys
    # Run folders of format 1 kept its own parameters in the shared columns variant,
    # level and seed (and contention's hold in iterations): (old column, its declared
    # column, how a value converts). Reading such a folder applies these.
    format1: tuple[tuple[str, str, Callable[[Any], Any]], ...] = ()
    # Case parameters the experiment derives rather than takes from a suite key (a CPU
    # pair the machine gives): column -> (type, unit), after the suite keys' ones.
    derived: tuple[tuple[str, type, str], ...] = ()

    @classmethod
    def case_columns(cls) -> dict[str, tuple[type, str]]:
        """Its cases' own parameters, in order: column -> (type, unit)."""
        return {**cls.params_type.case_columns(),
                **{name: (kind, unit) for name, kind, unit in cls.derived}}

    @abstractmethod
    def plan(self, params: Any) -> Plan:
        """Its cases for ``params`` (an instance of ``params_type``)."""

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
        """Its own samples (and of those, the ones matching ``where``), with a column for
        each of its case parameters even where the run had none of its cases."""
        absent = [c for c in self.case_columns() if c not in samples.columns]
        if absent:
            samples = samples.assign(**dict.fromkeys(absent, np.nan))
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


def probe_cases(experiment: Experiment, transport: str, metrics: dict[str, str], *,
                k: int = 1, payload_bytes: int = 0, duration_s: float = 0.0,
                placement: str = "same-cpu", **params: Any) -> list[Case]:
    """One probe case per metric (name -> unit) of a single measurement.

    ``params`` are the experiment's declared case parameters, every one of them
    (``param(..., column=...)``), each of its declared type: ValueError otherwise.
    """
    for unit in metrics.values():
        units.lookup(unit)
    declared = experiment.case_columns()
    if set(params) != set(declared):
        raise ValueError(f"{experiment.name}: a case takes the parameters "
                         f"{', '.join(declared) or 'none'}, not {', '.join(params) or 'none'}")
    own = tuple((column, kind(params[column])) for column, (kind, _) in declared.items())
    return [Case(experiment.name, transport, placement, payload_bytes, k, metric=metric,
                 unit=unit, topology=PROBE, duration_s=duration_s, params=own)
            for metric, unit in metrics.items()]


def case_columns(experiments: Iterable[Experiment]) -> dict[str, type]:
    """Every column the experiments' cases carry, and its type; ValueError where two
    experiments give one name two types (a column has one meaning, one kind)."""
    found: dict[str, type] = {}
    for experiment in experiments:
        for column, (kind, _) in experiment.case_columns().items():
            if found.setdefault(column, kind) is not kind:
                raise ValueError(f"{experiment.name}: its case parameter {column!r} is a "
                                 f"{kind.__name__}, another experiment's a "
                                 f"{found[column].__name__}")
    return found


def load_experiments() -> dict[str, Experiment]:
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        experiment = entry.load()
        found[experiment.name] = experiment
    return found
