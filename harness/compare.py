"""Comparing two runs: per case, is the new one slower, faster, the same, or unknown?

Worker medians are the independent units (batches of one worker share its
process layout and its spell of host noise). Each case gets a two-sided
Mann-Whitney U test on them, and the p-values are Holm-corrected across all
cases, because a default run compares ~150 cases and uncorrected tests would
raise false alarms by chance. A case is slower or faster only when it is
significant *and* the ratio of medians passes the practical threshold.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyperf
from scipy.stats import mannwhitneyu

from harness.errors import UsageError
from harness.metadata import FINGERPRINT_KEYS

FAMILY_ALPHA = 0.05
LOWER_IS_BETTER = ("ns", "us", "ns/MiB", "ns/B", "bytes")  # costs: more is worse
MIN_WORKERS = 3


@dataclass(frozen=True)
class RunSamples:
    """What a comparison needs from a run: worker values per case, and its machine."""

    label: str
    machine: dict[str, object]
    values: dict[str, list[np.ndarray]]  # case name -> one array of values per worker
    failed: dict[str, str] = field(default_factory=dict)  # case name -> why it did not run
    units: dict[str, str] = field(default_factory=dict)  # case name -> unit, when not ns


def load_samples(path: Path) -> RunSamples:
    """A run folder or a ``pyperf.json`` file; UsageError when it is neither."""
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        return _from_pyperf(path)
    raise UsageError(f"{path}: no such run folder or pyperf.json file")


def _from_folder(folder: Path) -> RunSamples:
    try:
        machine = json.loads((folder / "metadata.json").read_text())["machine"]
        samples = pd.read_csv(folder / "samples.csv")
    except FileNotFoundError as exc:
        raise UsageError(f"{folder}: not a run folder (missing {Path(exc.filename).name})"
                         ) from None
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"{folder}: corrupt run files ({exc})") from None
    needed = {"experiment", "transport", "placement", "payload_bytes", "k", "worker", "value"}
    if not needed <= set(samples.columns):
        raise UsageError(f"{folder}: samples.csv lacks {sorted(needed - set(samples.columns))}")
    for column in ("unit", "variant"):  # empty text reads back as NaN
        if column in samples.columns:
            samples[column] = samples[column].fillna("")
    if "unit" in samples.columns:  # only costs, where more is worse, are judged
        samples = samples[samples.unit.replace("", "ns").isin(LOWER_IS_BETTER)]
    names = case_names(samples)
    values: dict[str, list[np.ndarray]] = {}
    units: dict[str, str] = {}
    for (name, _worker), rows in samples.assign(case=names).groupby(["case", "worker"]):
        values.setdefault(name, []).append(rows.value.to_numpy(float))
        if "unit" in rows and rows.unit.iloc[0] not in ("", "ns"):
            units[name] = str(rows.unit.iloc[0])
    return RunSamples(folder.name, machine, values, _failed_cases(folder), units)


def _failed_cases(folder: Path) -> dict[str, str]:
    """Cases a run tried and lost (status ``error``): they have no samples to compare."""
    try:
        results = pd.read_csv(folder / "results.csv", keep_default_na=False)
    except (OSError, ValueError):
        return {}
    if "status" not in results.columns:
        return {}
    errors = results[results.status == "error"]
    return dict(zip(case_names(errors), errors.note, strict=True)) if len(errors) else {}


def case_names(samples: pd.DataFrame) -> pd.Series:
    """The same names the run's pyperf.json uses (harness.records.Case.name)."""
    from harness.records import Case

    columns = [c for c in samples.columns if c in Case.__dataclass_fields__]
    keys = samples[columns].drop_duplicates()
    names = {tuple(row): Case.from_dict(dict(zip(columns, row, strict=True))).name
             for row in keys.itertuples(index=False)}
    return pd.Series([names[tuple(r)] for r in samples[columns].itertuples(index=False)],
                     index=samples.index)


def _from_pyperf(path: Path) -> RunSamples:
    try:
        suite = pyperf.BenchmarkSuite.load(str(path))
    except Exception as exc:  # pyperf raises plain Exceptions of several kinds
        raise UsageError(f"{path}: not a readable pyperf file ({exc})") from None
    values = {}
    machine: dict[str, object] = {}
    for bench in suite.get_benchmarks():
        runs = [np.array(run.values) * 1e9 for run in bench.get_runs() if run.values]
        values[bench.get_name()] = runs
        meta = bench.get_metadata()
        machine = machine or {k: meta[f"ipcbench_{k}"] for k in ("machine_id", *FINGERPRINT_KEYS)
                              if f"ipcbench_{k}" in meta}
    return RunSamples(path.name, machine, values)


def machine_differences(base: RunSamples, new: RunSamples) -> list[str]:
    keys = [k for k in FINGERPRINT_KEYS if k in base.machine or k in new.machine]
    # str(): pyperf metadata holds the fingerprint as text, metadata.json as numbers too
    return [f"{k}: {base.machine.get(k)} vs {new.machine.get(k)}" for k in keys
            if str(base.machine.get(k)) != str(new.machine.get(k))]


@dataclass(frozen=True)
class Verdict:
    case: str
    base_median: float
    new_median: float
    ratio: float
    p_value: float
    p_adjusted: float
    verdict: str  # slower | faster | same | unknown
    reason: str
    unit: str = "ns"  # "slower" on bytes means larger


def compare(base: RunSamples, new: RunSamples, threshold: float = 0.05) -> list[Verdict]:
    common = sorted(set(base.values) & set(new.values))
    lost = sorted(set(base.values) & set(new.failed))
    if not common and not lost:
        raise UsageError(f"{base.label} and {new.label} have no case in common")
    tests = []
    for name in common:
        b, n = base.values[name], new.values[name]
        b_med = np.array([np.median(w) for w in b])
        n_med = np.array([np.median(w) for w in n])
        ratio = float(np.median(np.concatenate(n)) / np.median(np.concatenate(b)))
        # Tarone (1990): a test whose smallest attainable p is above alpha can never
        # reject; left in the Holm family it would only cost the others their power.
        testable = (len(b_med) >= MIN_WORKERS and len(n_med) >= MIN_WORKERS
                    and _min_p(len(b_med), len(n_med)) < FAMILY_ALPHA)
        p = float(mannwhitneyu(n_med, b_med, alternative="two-sided").pvalue) if testable \
            else math.nan
        tests.append((name, float(np.median(np.concatenate(b))),
                      float(np.median(np.concatenate(n))), ratio, p))
    adjusted = holm([t[4] for t in tests])
    family = sum(not math.isnan(t[4]) for t in tests)
    judged = [Verdict(*t, q, *_judge(t[3], q, threshold, _floor(base, new, t[0], family)),
                      unit=base.units.get(t[0], "ns"))
              for t, q in zip(tests, adjusted, strict=True)]
    failed = [Verdict(name, float(np.median(np.concatenate(base.values[name]))), math.nan,
                      math.nan, math.nan, math.nan, "failed", f"failed in {new.label}: "
                      f"{new.failed[name]}") for name in lost]
    return failed + sorted(judged, key=lambda v: -abs(math.log(v.ratio)) if v.ratio > 0 else 0)


def _min_p(n1: int, n2: int) -> float:
    """Mann-Whitney's smallest exact two-sided p for these sample sizes."""
    return 2 / math.comb(n1 + n2, n1)


def _floor(base: RunSamples, new: RunSamples, name: str, tests: int) -> float:
    """The smallest Holm-adjusted p these worker counts can reach: the exact minimum
    times the number of cases tested."""
    return min(1.0, _min_p(len(base.values[name]), len(new.values[name])) * max(tests, 1))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan)."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    m = len(finite)
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def _judge(ratio: float, p: float, threshold: float, floor: float) -> tuple[str, str]:
    beyond = abs(ratio - 1) > threshold
    if math.isnan(p):
        if not beyond:
            return "same", "within the threshold (too few workers for a test)"
        return "unknown", (f"beyond the threshold, but too few workers to ever be "
                           f"significant (p cannot reach {FAMILY_ALPHA})")
    if p < FAMILY_ALPHA and beyond:
        return ("slower" if ratio > 1 else "faster"), "significant and beyond the threshold"
    if not beyond:
        return "same", "within the threshold"
    if floor >= FAMILY_ALPHA:
        return "unknown", (f"beyond the threshold, but these worker counts cannot reach "
                           f"p < {FAMILY_ALPHA} over this many cases: run more workers")
    return "unknown", "beyond the threshold but not significant: too noisy to say"
