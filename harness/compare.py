"""Comparing two runs: per case, is the new one slower, faster, the same, or could the
comparison not have told (underpowered)?

Worker medians are the independent units (batches of one worker share its process
layout and its spell of host noise). Each case is judged on the log of its worker
medians: Welch's t-test between two runs, or a paired t-test when base and new
workers ran back to back (``ipcbench ab``). On the log scale a change is a ratio,
and the test's own standard error gives the smallest change the case could have
detected (its minimum detectable effect, at ``POWER``).

Why not Mann-Whitney with Holm, as before: with 8 workers a side the smallest
two-sided Mann-Whitney p is 1.6e-4, while Holm's first step over the ~700 cases of a
default run needs 7e-5, so the gate could hardly ever fire. The t-test's p is
continuous, and the p-values are corrected with Benjamini and Hochberg's false
discovery rate, which keeps the expected share of false alarms among the cases
flagged at ``FDR``: when nothing changed, that is the chance of any false alarm at
all; when a change reaches many cases (a transport, the kernel) it lets them all
through. A case is slower or faster only when it is significant *and* its ratio
passes the practical threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyperf

from harness import runfolder
from harness.errors import UsageError
from harness.families import CaseWorkers, group, pass_means
from harness.metadata import FINGERPRINT_KEYS
from harness.stats import sensitivity
from harness.units import is_cost

FDR = 0.05
POWER = 0.8
MIN_WORKERS = 2
MAX_LOG_SHIFT = 700.0  # exp() of more overflows a float


@dataclass(frozen=True)
class RunSamples:
    """What a comparison needs from a run: worker values per case, and its machine."""

    label: str
    machine: dict[str, object]
    values: dict[str, list[np.ndarray]]  # case name -> one array of values per worker
    failed: dict[str, str] = field(default_factory=dict)  # case name -> why it did not run
    units: dict[str, str] = field(default_factory=dict)  # case name -> unit, when not ns
    refs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # the reference, alike
    gate: frozenset[str] = frozenset()  # timed cases: --require-power holds them to it
    ids: dict[str, list[int]] = field(default_factory=dict)  # each worker's number (pass)

    def worker_medians(self, name: str) -> np.ndarray:
        return np.array([np.median(v) for v in self.values[name]])

    def worker_references(self, name: str) -> np.ndarray | None:
        """The median reference of each worker, or None where there is none (probes)."""
        if name not in self.refs:
            return None
        return np.array([np.median(r) for r in self.refs[name]])

    def worker_ids(self, name: str) -> list[int]:
        return self.ids.get(name) or list(range(len(self.values[name])))

    def reference(self) -> float:
        every = [r for refs in self.refs.values() for r in refs]
        return float(np.median(np.concatenate(every))) if every else math.nan


def load_samples(path: Path, keep_disturbed: bool = False) -> RunSamples:
    """A run folder or a ``pyperf.json`` file; UsageError when it is neither."""
    if path.is_dir():
        return _from_folder(path, keep_disturbed)
    if path.is_file():
        return _from_pyperf(path)
    raise UsageError(f"{path}: no such run folder or pyperf.json file")


def _from_folder(folder: Path, keep_disturbed: bool) -> RunSamples:
    files = runfolder.read(folder)  # checked: a nan value or a cut file is refused here
    machine, samples = files.metadata["machine"], files.samples
    samples = samples[samples.unit.map(is_cost)]  # only costs, where more is worse, are judged
    if not keep_disturbed:
        samples = samples[~samples.disturbed]
    names = runfolder.case_names(samples, files.parameters)
    values: dict[str, list[np.ndarray]] = {}
    refs: dict[str, list[np.ndarray]] = {}
    ids: dict[str, list[int]] = {}
    units: dict[str, str] = {}
    gate = set()
    for (name, worker), rows in samples.assign(case=names).groupby(["case", "worker"]):
        values.setdefault(name, []).append(rows.value.to_numpy(float))
        ids.setdefault(name, []).append(int(worker))
        if "ref_ns" in rows and rows.ref_ns.notna().all():
            refs.setdefault(name, []).append(rows.ref_ns.to_numpy(float))
            gate.add(name)  # timed cases carry a reference; probes do not
        if rows.unit.iloc[0] != "ns":
            units[name] = str(rows.unit.iloc[0])
    refs = {name: r for name, r in refs.items() if len(r) == len(values[name])}
    return RunSamples(folder.name, machine, values, _failed_cases(files), units, refs,
                      frozenset(gate), ids)


def _failed_cases(files: runfolder.RunFiles) -> dict[str, str]:
    """Cases a run tried and lost (status ``error``): they have no samples to compare."""
    errors = files.results[files.results.status == "error"]
    names = runfolder.case_names(errors, files.parameters)
    return dict(zip(names, errors.note, strict=True)) if len(errors) else {}


def _from_pyperf(path: Path) -> RunSamples:
    try:
        suite = pyperf.BenchmarkSuite.load(str(path))
    except Exception as exc:  # pyperf raises plain Exceptions of several kinds
        raise UsageError(f"{path}: not a readable pyperf file ({exc})") from None
    values = {}
    machine: dict[str, object] = {}
    for bench in suite.get_benchmarks():
        runs = [np.array(run.values) * 1e9 for run in bench.get_runs() if run.values]
        values[runfolder.format1_name(bench.get_name())] = runs  # a format-1 run's too
        meta = bench.get_metadata()
        machine = machine or {k: meta[f"ipcbench_{k}"] for k in ("machine_id", *FINGERPRINT_KEYS)
                              if f"ipcbench_{k}" in meta}
    return RunSamples(path.name, machine, values, gate=frozenset(values))


def machine_differences(base: RunSamples, new: RunSamples) -> list[str]:
    keys = [k for k in FINGERPRINT_KEYS if k in base.machine or k in new.machine]
    # str(): pyperf metadata holds the fingerprint as text, metadata.json as numbers too
    return [f"{k}: {base.machine.get(k)} vs {new.machine.get(k)}" for k in keys
            if str(base.machine.get(k)) != str(new.machine.get(k))]


@dataclass(frozen=True)
class Difference:
    """new - base on the log scale, with its standard error and degrees of freedom."""

    delta: float
    se: float
    df: float

    @property
    def p_value(self) -> float:
        if self.se == 0:
            return 1.0 if self.delta == 0 else 0.0
        from scipy import stats  # here: importing it costs every command half a second

        return float(2 * stats.t.sf(abs(self.delta) / self.se, self.df))

    def detectable(self, alpha: float) -> float:
        """The smallest ratio - 1 found with probability ``POWER`` at two-sided ``alpha``."""
        from scipy import stats

        shift = (stats.t.ppf(1 - alpha / 2, self.df) + stats.t.ppf(POWER, self.df)) * self.se
        # Two workers of wide spread at a strict level: no change this side of infinity.
        return float(math.expm1(shift)) if shift < MAX_LOG_SHIFT else math.inf


def on_common_reference(base: np.ndarray, base_ref: np.ndarray, new: np.ndarray,
                        new_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Worker medians as they would be at the median reference of both runs: each moved
    by the case's own sensitivity to the reference (``harness.stats.sensitivity``),
    fitted on both runs' workers with an intercept each."""
    refs = np.log(np.concatenate([base_ref, new_ref]))
    values = np.log(np.concatenate([base, new]))
    side = np.r_[np.zeros(len(base)), np.ones(len(new))]
    slope = sensitivity(values, refs, side)
    adjusted = np.exp(values - slope * (refs - np.median(refs)))
    return adjusted[: len(base)], adjusted[len(base) :]


def welch(base: np.ndarray, new: np.ndarray) -> Difference | None:
    """Two independent sets of worker medians (two runs)."""
    if min(len(base), len(new)) < MIN_WORKERS or min(base.min(), new.min()) <= 0:
        return None
    lb, ln = np.log(base), np.log(new)
    vb, vn = lb.var(ddof=1) / len(lb), ln.var(ddof=1) / len(ln)
    se = math.sqrt(vb + vn)
    if se == 0 and ln.mean() != lb.mean():
        return None  # e.g. page tables, in whole pages: no spread seen is not no spread
    df = (vb + vn) ** 2 / (vb**2 / (len(lb) - 1) + vn**2 / (len(ln) - 1)) if se else \
        len(lb) + len(ln) - 2.0
    return Difference(float(ln.mean() - lb.mean()), se, float(df))


def paired(base: np.ndarray, new: np.ndarray) -> Difference | None:
    """Worker medians in pairs that ran back to back (``ipcbench ab``), aligned."""
    n = len(base)
    if n < MIN_WORKERS or min(base.min(), new.min()) <= 0:
        return None
    d = np.log(new) - np.log(base)
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se == 0 and d.mean() != 0:
        return None  # every pair moved alike: quantized values, not evidence
    return Difference(float(d.mean()), se, n - 1.0)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """BH-adjusted p-values, the q-values (nan stays nan)."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    m = len(finite)
    running = 1.0
    for rank in range(m, 0, -1):
        p, i = finite[rank - 1]
        running = min(running, p * m / rank)
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Verdict:
    case: str
    base_median: float
    new_median: float
    ratio: float
    p_value: float
    q_value: float
    detectable: float  # the smallest change (ratio - 1) this case could have caught
    verdict: str  # slower | faster | same | underpowered | unknown | failed
    reason: str
    unit: str = "ns"  # "slower" on bytes means larger
    gate: bool = True


@dataclass(frozen=True)
class Comparison:
    verdicts: list[Verdict]
    threshold: float
    normalized: bool
    paired: bool
    reference_change: float  # new reference over base reference, - 1 (nan if none)
    families: list[Verdict] = field(default_factory=list)  # one per transport (the gate)

    @property
    def regressed(self) -> bool:
        return any(v.verdict in ("slower", "failed") for v in [*self.families, *self.verdicts])

    def underpowered_gate(self) -> list[Verdict]:
        """The headline tests that could not see the threshold: the transports', or
        where there are none, every timed case's."""
        gate = self.families or [v for v in self.verdicts if v.gate]
        return [v for v in gate if v.verdict == "underpowered"]

    def powered(self) -> int:
        """Cases that could have caught a change of the threshold's size."""
        return sum(v.detectable <= self.threshold for v in self.verdicts)


def comparison_frame(result: Comparison) -> pd.DataFrame:
    """The verdicts as a table (``comparison.csv``): the transports' first, then the cases'."""
    rows = [{"level": "transport", **asdict(v)} for v in result.families]
    rows += [{"level": "case", **asdict(v)} for v in result.verdicts]
    return pd.DataFrame(rows)


def compare(base: RunSamples, new: RunSamples, threshold: float = 0.05,
            normalize: bool = False, pair: bool = False) -> Comparison:
    common = sorted(set(base.values) & set(new.values))
    lost = sorted(set(base.values) & set(new.failed))
    if not common and not lost:
        raise UsageError(f"{base.label} and {new.label} have no case in common")
    # A nan median would pass as "within the threshold": such a case fails, by name.
    broken = {name: side.label for name in common for side in (base, new)
              if not all(np.isfinite(v).all() for v in side.values[name])}
    common = [name for name in common if name not in broken]
    found = []
    timed: dict[str, CaseWorkers] = {}
    for name in common:
        b, n = base.worker_medians(name), new.worker_medians(name)
        b_ref, n_ref = base.worker_references(name), new.worker_references(name)
        # a difference (C0) has no ratio to move
        fitted = normalize and b_ref is not None and n_ref is not None \
            and min(b.min(), n.min()) > 0
        if fitted and b_ref is not None and n_ref is not None:
            b, n = on_common_reference(b, b_ref, n, n_ref)
        if name in base.gate and name in new.gate:
            timed[name] = CaseWorkers(dict(zip(base.worker_ids(name), b, strict=True)),
                                      dict(zip(new.worker_ids(name), n, strict=True)))
        if pair:  # the workers of one pass, and only those both sides kept
            b_of = dict(zip(base.worker_ids(name), b, strict=True))
            n_of = dict(zip(new.worker_ids(name), n, strict=True))
            both = sorted(set(b_of) & set(n_of))
            b, n = np.array([b_of[i] for i in both]), np.array([n_of[i] for i in both])
        diff = (paired if pair else welch)(b, n)
        if diff is not None and fitted:  # the sensitivity was fitted on these workers
            diff = Difference(diff.delta, diff.se, max(diff.df - 1, 1.0))
        found.append((name, diff, b, n))
    p_values = [d.p_value if d else math.nan for _, d, _, _ in found]
    q_values = benjamini_hochberg(p_values)
    tested = sum(not math.isnan(p) for p in p_values)
    rejected = sum(q <= FDR for q in q_values if not math.isnan(q))
    # BH rejects every p at or below FDR * R / m: the level this comparison ran at.
    alpha = FDR * max(rejected, 1) / max(tested, 1)
    judged = [_verdict(name, diff, b, n, q, alpha, threshold, base, new)
              for (name, diff, b, n), q in zip(found, q_values, strict=True)]
    failed = [Verdict(name, float(np.median(np.concatenate(base.values[name]))), math.nan,
                      math.nan, math.nan, math.nan, math.nan, "failed",
                      f"failed in {new.label}: {new.failed[name]}") for name in lost]
    failed += [Verdict(name, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                       "failed", f"non-finite values in {label}: nothing to judge")
               for name, label in sorted(broken.items())]
    order = sorted(judged, key=lambda v: -abs(math.log(v.ratio)) if v.ratio > 0 else 0)
    return Comparison(failed + order, threshold, normalize, pair,
                      new.reference() / base.reference() - 1,
                      _families(timed, pair, threshold, base, new))


def _families(timed: dict[str, CaseWorkers], pair: bool, threshold: float,
              base: RunSamples, new: RunSamples) -> list[Verdict]:
    """One verdict per transport over its timed cases (``harness.families``)."""
    tests = []
    for transport, cases in group(timed).items():
        means = pass_means(list(cases.values()), pair)
        diff = (paired if pair else welch)(*means) if means else None
        tests.append((transport, cases, diff))
    q_values = benjamini_hochberg([d.p_value if d else math.nan for _, _, d in tests])
    tested = sum(d is not None for _, _, d in tests)
    rejected = sum(q <= FDR for q in q_values if not math.isnan(q))
    alpha = FDR * max(rejected, 1) / max(tested, 1)
    verdicts = []
    for (transport, cases, diff), q in zip(tests, q_values, strict=True):
        ratio = math.exp(diff.delta) if diff else math.nan
        detectable = diff.detectable(alpha) if diff else math.inf
        verdict, reason = _judge(ratio, q, detectable, threshold, diff is not None)
        plural = "s" if len(cases) != 1 else ""
        verdicts.append(Verdict(f"{transport}: {len(cases)} timed case{plural} (geometric mean)",
                                math.nan, math.nan, ratio, diff.p_value if diff else math.nan,
                                q, detectable, verdict, reason))
    return verdicts


def _verdict(name: str, diff: Difference | None, b: np.ndarray, n: np.ndarray, q: float,
             alpha: float, threshold: float, base: RunSamples, new: RunSamples) -> Verdict:
    base_median = float(np.median(np.concatenate(base.values[name])))
    new_median = float(np.median(np.concatenate(new.values[name])))
    with np.errstate(divide="ignore", invalid="ignore"):  # a median of 0: no ratio
        ratio = math.exp(diff.delta) if diff else float(np.median(n) / np.median(b))
    detectable = diff.detectable(alpha) if diff else math.inf
    verdict, reason = _judge(ratio, q, detectable, threshold, diff is not None)
    return Verdict(name, base_median, new_median, ratio, diff.p_value if diff else math.nan,
                   q, detectable, verdict, reason, base.units.get(name, "ns"),
                   name in base.gate and name in new.gate)


def _judge(ratio: float, q: float, detectable: float, threshold: float,
           testable: bool) -> tuple[str, str]:
    beyond = abs(ratio - 1) > threshold
    if not testable:
        return "underpowered", (f"no test: fewer than {MIN_WORKERS} workers a side, values <= 0, "
                                "or no spread at all to judge a difference by")
    if q <= FDR and beyond:
        return ("slower" if ratio > 1 else "faster"), f"significant, beyond {threshold:.0%}"
    if detectable > threshold:
        return "underpowered", f"cannot see {threshold:.0%}: more workers, or a quieter machine"
    if not beyond:
        return "same", f"within {threshold:.0%}"
    return "unknown", f"beyond {threshold:.0%}, not significant"
