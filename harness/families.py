"""The gate's headline tests: one per transport, over all of its timed cases.

One case's 8 workers a side cannot see a 5% change on a shared VM: in a noisy spell a
same-CPU pipe round trip could only have been caught beyond 37-77% (Benjamini-Hochberg
over 209 cases, t with 7 degrees of freedom). A change to a transport's code or kernel
path reaches every case that uses it, so the gate first asks one question per
transport: did the geometric mean of its timed cases move? Each pass of workers gives
one value per side, the mean over the transport's cases of the log worker median,
each case centred on its own mean, so no case weighs more for being slower. The pass
means go through the test the cases use (Welch between runs, paired within ``ab``),
and Benjamini-Hochberg runs over the few transports. The cases are then judged as
before, to say where a change sits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

MIN_PASSES = 3  # fewer passes give no spread worth a test


@dataclass(frozen=True)
class CaseWorkers:
    """One case's worker medians on each side (after any reference adjustment), by pass."""

    base: dict[int, float]
    new: dict[int, float]


def transport_of(case: str) -> str:
    """``latency/pipe/same-cpu/64B/k1`` -> ``pipe`` (harness.records.Case.name)."""
    parts = case.split("/")
    return parts[1] if len(parts) > 1 else case


def pass_means(cases: list[CaseWorkers], pair: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """The family's geometric-mean value per pass on each side (aligned by pass when
    ``pair``), for the tests in ``harness.compare``; None with too few passes."""
    sums: list[dict[int, list[float]]] = [defaultdict(list), defaultdict(list)]
    for case in cases:
        centre = float(np.mean(np.log([*case.base.values(), *case.new.values()])))
        for side, values in enumerate((case.base, case.new)):
            for number, value in values.items():
                sums[side][number].append(math.log(value) - centre)
    base, new = ({n: float(np.mean(v)) for n, v in side.items()} for side in sums)
    if pair:
        both = sorted(set(base) & set(new))
        base, new = {n: base[n] for n in both}, {n: new[n] for n in both}
    if min(len(base), len(new)) < MIN_PASSES:
        return None
    return np.exp(list(base.values())), np.exp(list(new.values()))


def group(cases: dict[str, CaseWorkers]) -> dict[str, dict[str, CaseWorkers]]:
    """Cases by transport, only those every worker of which has a positive value (a
    difference such as C0 less an empty call has no logarithm)."""
    found: dict[str, dict[str, CaseWorkers]] = defaultdict(dict)
    for name, workers in sorted(cases.items()):
        values = [*workers.base.values(), *workers.new.values()]
        if values and min(values) > 0:
            found[transport_of(name)][name] = workers
    return dict(found)
