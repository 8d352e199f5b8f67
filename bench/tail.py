"""Tail latency: every round trip timed, its percentiles up to p99.99 and the max.

Each worker records its round trips in an HDR histogram (``bench.probes.tail``); the
histograms are kept in samples.csv, so runs merge and compare: the table adds every
worker's histogram of a configuration and reads the percentiles off the sum. The
per-worker percentiles are the samples compare judges (p99 among them). The clock's own
cost is stated beside them; it is in every value and is not subtracted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from bench.params import known_transports
from bench.probes.tail import DIGITS, HIGHEST_NS, LOWEST_NS, METRICS, PERCENTILES
from bench.timed import refusal
from harness.experiment import (
    ModelRow,
    Params,
    Plan,
    ProbeExperiment,
    Section,
    param,
    probe_cases,
    triage,
)
from harness.plots import finish_axes, save
from harness.samples import select
from servers.transports import PLACEMENTS

NINES = (0.5, 0.9, 0.99, 0.999, 0.9999)  # the x axis' marks, as HdrHistogram plots them
KEYS = ["transport", "placement", "payload_bytes", "round_trips"]  # one configuration
SHOWN = {"p50_ns": "p50", "p90_ns": "p90", "p99_ns": "p99", "p999_ns": "p99.9",
         "p9999_ns": "p99.99"}


def _placements() -> tuple[str, ...]:
    return PLACEMENTS


@dataclass(frozen=True)
class TailParams(Params):
    """Its table in a suite file."""

    transports: tuple[str, ...] = param(("pipe",), "what the client and server speak",
                                        choices=known_transports)
    placements: tuple[str, ...] = param(("same-cpu",), "where the server runs against the "
                                        "client", choices=_placements)
    payload_bytes: tuple[int, ...] = param((64,), "request and reply size", "bytes", low=0)
    round_trips: int = param(20_000, "round trips each worker times per batch (one "
                             "histogram over all its batches)", low=100,
                             column="round_trips")


class Tail(ProbeExperiment):
    name = "tail"
    description = "every round trip timed: p50 to p99.99 and the max, per transport and placement"
    params_type = TailParams

    def plan(self, params: TailParams) -> Plan:
        cases = [probe_cases(self, transport, METRICS, placement=placement, payload_bytes=size,
                             round_trips=params.round_trips)
                 for transport in params.transports for placement in params.placements
                 for size in params.payload_bytes]
        return triage([case for measurement in cases for case in measurement], refusal)

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        mine = self.mine(samples)
        if mine.empty:
            return pd.DataFrame()
        rows = []
        for (transport, placement, size, round_trips), sub in mine.groupby(KEYS):
            merged = merged_histogram(sub)
            if merged is None:
                continue
            medians = {m: float(select(sub, metric=m).value.median()) for m in METRICS}
            worst = select(sub, metric="max_ns")
            at = worst.loc[worst.value.idxmax()] if len(worst) else None
            context = select(sub, worker=at.worker) if at is not None else sub.iloc[:0]

            def of(metric: str, rows: pd.DataFrame = context) -> float:
                found = select(rows, metric=metric).value
                return float(found.iloc[0]) if len(found) else math.nan

            rows.append({
                "transport": transport, "placement": placement, "payload_bytes": int(size),
                "round_trips_per_batch": int(round_trips),
                "round_trips": int(merged.get_total_count()),
                **{name: float(merged.get_value_at_percentile(p))
                   for name, p in PERCENTILES.items()},
                "max_ns": float(worst.value.max()) if len(worst) else math.nan,
                "clock_ns": medians["clock_ns"],
                "worst_batch_other_switches": of("worst_batch_other_switches"),
                "worst_batch_foreign_share": of("worst_batch_foreign_share"),
                "worst_batch_steal_ns": of("worst_batch_steal_ns"),
                "workers": int(sub.worker.nunique()),
            })
        return pd.DataFrame(rows)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = []
        for r in self.table(samples).itertuples():
            where: dict[str, Any] = dict(placement=r.placement, payload_bytes=r.payload_bytes)
            method = (f"merged HDR histogram of {r.workers} workers' {r.round_trips} round "
                      "trips (3 digits); the clock's cost is in every value")
            for name in (*PERCENTILES, "max_ns"):
                rows.append(ModelRow(f"tail_{name}", r.transport, getattr(r, name), "ns",
                                     np.nan, np.nan, method, **where))
            rows.append(ModelRow("clock_ns", r.transport, r.clock_ns, "ns", np.nan, np.nan,
                                 "median of two back-to-back perf_counter_ns reads", **where))
        return rows

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        mine = self.mine(samples)
        several = mine.round_trips.nunique() > 1
        curves = {} if mine.empty else {
            f"{t} {p} {s} B" + (f" ({n:g} a batch)" if several else ""): h
            for (t, p, s, n), sub in mine.groupby(KEYS)
            if (h := merged_histogram(sub)) is not None}
        if not curves:
            return []
        fig, ax = self.figure()
        for label, merged in curves.items():
            xs, ys = percentile_curve(merged)
            ax.plot(xs, np.array(ys) / 1e3, "-", lw=1.2, label=label)
        ax.set_xticks([-math.log10(1 - q) for q in NINES], [f"{q * 100:g}%" for q in NINES])
        finish_axes(ax, "Round trip by percentile (every round trip timed)",
                    "percentile", "round trip, us", yscale="log", legend=8)
        return [save(fig, folder / self.plot_file)]

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        table = tables.get(self.name)
        if table is None or table.empty:
            return []
        header = ["transport", "placement", "bytes", "round trips", *SHOWN.values(), "max",
                  "clock", "worst batch: other switches, foreign, steal"]
        rows = [[r.transport, r.placement, str(r.payload_bytes), f"{r.round_trips:,}",
                 *(_us(getattr(r, name)) for name in SHOWN), _us(r.max_ns),
                 f"{r.clock_ns:.0f} ns",
                 f"{r.worst_batch_other_switches:.0f}, {r.worst_batch_foreign_share:.1%}, "
                 f"{r.worst_batch_steal_ns / 1e3:.0f} us"]
                for r in table.itertuples()]
        note = ("Each round trip timed alone on the client (two perf_counter_ns reads "
                "around a send and its reply), recorded in an HDR histogram per worker "
                "(samples.csv keeps them; the table's percentiles are those of all workers' "
                "histograms added). clock: the median cost of the two reads, included in "
                "every value, not subtracted. The worst batch: what the interference "
                "counters saw on the case's CPUs during the batch that held the max: "
                "switches into other tasks (the idle task too, so across CPUs about two per "
                "round trip), the share of CPU time other work took, and steal (in the "
                "kernel's 10 ms ticks), to tell another task's turn or a host's burst from "
                "the transport's own tail.")
        return [Section("Tail: every round trip (us)", header, rows, note,
                        self.own_plots(plots))]


def _us(ns: float) -> str:
    return "-" if math.isnan(ns) else f"{ns / 1e3:.2f}"


def merged_histogram(rows: pd.DataFrame) -> HdrHistogram | None:
    """Every worker's histogram of these rows, added; None when they hold none."""
    encoded = [h for h in rows.get("histogram", pd.Series(dtype=object)) if isinstance(h, str)
               and h]
    if not encoded:
        return None
    merged = HdrHistogram(LOWEST_NS, HIGHEST_NS, DIGITS)
    for text in encoded:
        merged.add(HdrHistogram.decode(text.encode("ascii")))
    return merged


def percentile_curve(histogram: HdrHistogram, points: int = 200) -> tuple[list[float],
                                                                           list[float]]:
    """x = -log10(1 - q) (0.3 is p50, 2 is p99, 4 is p99.99) and the value at q, up to the
    last percentile the count can show."""
    top = math.log10(max(histogram.get_total_count(), 10))
    xs = list(np.linspace(-math.log10(0.5), top, points))
    wanted = [100 * (1 - 10 ** -x) for x in xs]
    # one pass over the buckets for all of them (a pass each took 1.3 s for a curve)
    found = histogram.get_percentile_to_value_dict(wanted)
    return xs, [float(found.get(q, 0)) for q in wanted]


EXPERIMENT = Tail()
