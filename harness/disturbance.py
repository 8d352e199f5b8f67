"""Which timed batches were disturbed, and how disturbed a run was.

A batch is disturbed when more than ``LIMIT`` of the CPU time its window offered on
the case's CPUs went elsewhere: to other tasks, interrupts, or the hypervisor
(steal). On one CPU the case always has a runnable process, so that share is
exact and its quiet floor is zero (on a 2-vCPU KVM guest: median 0.01%, p99 0.5%;
with two CPU hogs on the machine, the batches they reached lost 30-60% and ran
twice as long). A case spread over CPUs leaves them idle while it waits, and a
VM's vCPU wake-up lands in that share too (7-13% on the same guest), so there the
limit counts from the case's own quiet floor: the lowest decile of its batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from harness.records import BatchRecord, CaseResult, WorkerResult

LIMIT = 0.02
PROBE_LIMIT = 0.10
FLOOR_PERCENTILE = 10


def floor(batches: list[BatchRecord]) -> float:
    """The share a case shows undisturbed: 0 on one CPU, else its lowest decile."""
    if not batches or all(b.cpus <= 1 for b in batches):
        return 0.0
    return float(np.percentile([b.foreign_share for b in batches], FLOOR_PERCENTILE))


def mark(result: CaseResult) -> None:
    """Set ``disturbed`` on every batch of a case, in place.

    A worker whose batches were all disturbed drops out of the statistics. When
    fewer than half of the workers keep a batch, the case keeps them all and
    says so in its note: what it measured is then the disturbed machine.
    """
    every = [b for w in result.workers for b in w.batches]
    if not every:
        _mark_probe(result)
        return
    limit = floor(every) + LIMIT
    marked = [replace(w, batches=[replace(b, disturbed=b.foreign_share > limit)
                                  for b in w.batches]) for w in result.workers]
    keeping = sum(1 for w in marked if w.kept())
    if keeping * 2 < len(marked):
        result.note = _join(result.note, f"too disturbed to set batches aside ({keeping} of "
                            f"{len(marked)} workers had an undisturbed batch): every batch "
                            "is kept")
        marked = [replace(w, batches=[replace(b, disturbed=False) for b in w.batches])
                  for w in marked]
    result.workers = marked


def _mark_probe(result: CaseResult) -> None:
    """A probe's workers, each whole: set aside when other work took more than
    ``PROBE_LIMIT`` beyond the least disturbed of them. A probe waits across CPUs (its
    floor is a vCPU's wake-ups, as above), and the runner reads a worker's life in
    whole ticks where there is no cpuidle, so its limit is wider than a batch's."""
    shares = [w.foreign_share for w in result.workers]
    if not shares or any(s is None for s in shares):
        return  # an older worker, or a run read back from its folder
    limit = min(s for s in shares if s is not None) + PROBE_LIMIT
    marked = [replace(w, disturbed=w.foreign_share is not None and w.foreign_share > limit)
              for w in result.workers]
    dropped = sum(w.disturbed for w in marked)
    if not dropped:
        return
    if (len(marked) - dropped) * 2 < len(marked):
        result.note = _join(result.note, f"too disturbed to set workers aside ({dropped} of "
                            f"{len(marked)} lost more than {PROBE_LIMIT:.0%} beyond the "
                            "least disturbed one): every worker is kept")
        return
    result.note = _join(result.note, f"{dropped} of {len(marked)} workers set aside: other "
                        f"work took more than {PROBE_LIMIT:.0%} of the CPUs beyond the least "
                        "disturbed one")
    result.workers = marked


def _join(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def kept_workers(result: CaseResult, keep_disturbed: bool = False) -> list[WorkerResult]:
    """The workers that keep at least one batch for the statistics."""
    return [w for w in result.workers if w.kept(keep_disturbed)]


@dataclass(frozen=True)
class RunDisturbance:
    """How disturbed a run was, over its timed batches."""

    batches: int
    disturbed: int
    foreign_share: float  # of the CPU time the case's CPUs offered, over every batch
    steal_share: float
    reference_low: float  # p5 and p95 of the reference over the run, ns
    reference_high: float

    @property
    def reference_spread(self) -> float:
        mid = (self.reference_low + self.reference_high) / 2
        return (self.reference_high - self.reference_low) / mid if mid else float("nan")

    def summary(self) -> str:
        if not self.batches:
            return "no timed batches (probe experiments only): disturbance not measured"
        return (f"{self.disturbed} of {self.batches} timed batches "
                f"({self.disturbed / self.batches:.1%}) lost more than {LIMIT:.0%} of their "
                f"CPU time to other work and were set aside; other work took "
                f"{self.foreign_share:.2%} of the cases' CPU time, steal {self.steal_share:.2%}; "
                f"the reference spread {self.reference_spread:.0%} over the run (p5 "
                f"{self.reference_low:.0f} ns, p95 {self.reference_high:.0f} ns)")


def run_disturbance(results: list[CaseResult]) -> RunDisturbance:
    batches = [b for r in results for w in r.workers for b in w.batches]
    if not batches:
        return RunDisturbance(0, 0, float("nan"), float("nan"), float("nan"), float("nan"))
    offered = sum(b.window_ns * b.cpus for b in batches)
    refs = [b.ref_ns for b in batches if np.isfinite(b.ref_ns)]
    low, high = np.percentile(refs, [5, 95]) if refs else (float("nan"), float("nan"))
    return RunDisturbance(
        len(batches), sum(b.disturbed for b in batches),
        sum(max(b.foreign_ns, 0.0) for b in batches) / offered,
        sum(b.steal_ns for b in batches) / offered, float(low), float(high))
