"""Suite files: which experiments to run, with which parameters and how hard."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import UsageError
from harness.experiment import Experiment, Params, Plan, load_experiments
from harness.records import MAX_WORKERS, Case, Settings
from harness.runner import worker_wait

SUITES_GROUP = "ipcbench.suites"
T = TypeVar("T")
TOP_LEVEL_KEYS = {"description", "settings", "experiments"}


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    settings: Settings
    experiments: list[tuple[Experiment, Params]]

    def transports(self) -> list[str]:
        """Every transport the suite's experiments list, in their order."""
        listed = [t for _, params in self.experiments for t in getattr(params, "transports", ())]
        return list(dict.fromkeys(listed))

    def plan(self) -> Plan:
        plan = Plan()
        for experiment, params in self.experiments:
            part = experiment.plan(params)
            if params.workers:
                part.runnable = [replace(c, workers=params.workers) for c in part.runnable]
            plan.runnable += part.runnable
            plan.skipped += part.skipped
        # Tables of one experiment may share cases (each amplification table has its
        # own call baseline): a case runs once, as the first table that lists it says.
        plan.runnable = _first_of_each(plan.runnable, lambda c: c.name)
        ran = {c.name for c in plan.runnable}
        plan.skipped = [s for s in _first_of_each(plan.skipped, lambda s: s.case.name)
                        if s.case.name not in ran]
        return plan


def _first_of_each(items: list[T], key: Callable[[T], str]) -> list[T]:
    seen: set[str] = set()
    kept = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            kept.append(item)
    return kept


def builtin_suites() -> dict[str, Any]:
    found = {}
    for entry in entry_points(group=SUITES_GROUP):
        for item in files(entry.load()).iterdir():
            if item.name.endswith(".toml"):
                found[item.name.removesuffix(".toml")] = item
    return found


def load_suite(spec: str, only: list[str] | None = None) -> Suite:
    """A built-in suite by name, or a TOML file by path; UsageError on any problem."""
    builtins = builtin_suites()
    if spec in builtins:
        source, name = builtins[spec], spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(
                f"suite {spec!r}: no such file and no built-in suite of that name "
                f"(built-in: {', '.join(sorted(builtins))})"
            )
        source, name = path, path.stem
    try:
        data = tomllib.loads(source.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"suite {spec}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"suite {spec}: cannot read it ({exc.strerror})") from None
    try:
        suite = parse_suite(name, data, only)
        plan = suite.plan()  # the experiments check their parameters against this machine
        check_limits(suite.settings, plan.runnable)
        return suite
    except (ValueError, TypeError) as exc:
        raise UsageError(f"suite {spec}: {exc}") from None


MAX_WORKER_WAIT_S = 7 * 24 * 3600  # far below poll()'s limit of 2**31 - 1 ms (24.8 days)


def check_limits(settings: Settings, cases: list[Case]) -> None:
    """ValueError when a case asks for more workers than MAX_WORKERS, or when the wait
    for one of its workers would pass MAX_WORKER_WAIT_S (a product of settings that are
    each within their own bounds, and of a probe's duration_s)."""
    for case in cases:
        if case.workers > MAX_WORKERS:
            raise ValueError(f"experiments.{case.experiment}.workers must be at most "
                             f"{MAX_WORKERS}")
        wait = worker_wait(settings, case)
        if not wait <= MAX_WORKER_WAIT_S:  # NaN fails this too
            raise ValueError(
                f"a worker of {case.name} could take {wait:.3g} s (timeout_s + 2 duration_s "
                f"per batch, times batches + warmups + 2), more than the limit of "
                f"{MAX_WORKER_WAIT_S} s (7 days): lower timeout_s, batches, warmups or "
                "duration_s")


def parse_suite(name: str, data: dict[str, Any], only: list[str] | None = None) -> Suite:
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    settings = _settings(data.get("settings", {}))
    registry = load_experiments()
    tables = data.get("experiments", {})
    if not isinstance(tables, dict) or not tables:
        raise ValueError("needs at least one [experiments.NAME] table")
    for wanted in only or []:
        if wanted not in registry:
            known = ", ".join(registry)
            raise ValueError(f"--only: unknown experiment {wanted!r} (known: {known})")
        if wanted not in tables:
            raise ValueError(f"--only: experiment {wanted!r} is not in this suite")
    chosen = []
    for exp_name, value in tables.items():
        if exp_name not in registry:
            raise ValueError(
                f"unknown experiment {exp_name!r} (known: {', '.join(registry)})"
            )
        # [experiments.X] is one parameter set; [[experiments.X]] several.
        parts = value if isinstance(value, list) else [value]
        if not all(isinstance(part, dict) for part in parts):
            raise ValueError(f"experiments.{exp_name} must be a table or an array of tables")
        if only and exp_name not in only:
            continue
        experiment = registry[exp_name]
        for part in parts:
            params = experiment.params_type.from_table(f"experiments.{exp_name}", part)
            chosen.append((experiment, params))
    return Suite(name, str(data.get("description", "")), settings, chosen)


def _settings(table: Any) -> Settings:
    if not isinstance(table, dict):
        raise ValueError("[settings] must be a table")
    known = {f.name: f for f in fields(Settings)}
    for key, value in table.items():
        if key not in known:
            raise ValueError(f"settings: unknown key {key!r} (known: {', '.join(known)})")
        want = type(getattr(Settings, key))
        ok = isinstance(value, int | float) and not isinstance(value, bool) if want is float \
            else type(value) is want
        if not ok:
            raise ValueError(f"settings.{key}: expected a {want.__name__}, got {value!r}")
    values: dict[str, Any] = {k: (float(v) if known[k].type == "float" else v)
                              for k, v in table.items()}
    settings = Settings(**values)
    settings.check()
    return settings
