"""Experiment 2: round trip over payload size, within each transport's limits.

``copy_ns_per_byte`` is the slope of the round trip over 64 B..64 KiB: above
that a default pipe would chunk, and below it fixed costs dominate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.params import EchoParams
from bench.timed import echo_plan
from harness.experiment import Experiment, ModelRow, Plan, Section
from harness.fit import ols
from harness.plots import save
from harness.units import size, us

SLOPE_RANGE = (64, 64 << 10)


class Payload(Experiment):
    name = "payload"
    description = "round trip over payload size: copy cost per byte"

    params_type = EchoParams

    def plan(self, params: EchoParams) -> Plan:
        return echo_plan(self.name, params)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = self.mine(samples, metric="round_trip")
        low, high = SLOPE_RANGE
        rows = rows[rows.payload_bytes.between(low, high)]
        out = []
        for key, case in rows.groupby(self.keys()):
            transport, placement, *own = key
            # One point per worker and size: workers are the independent units.
            points = case.groupby(["payload_bytes", "worker"]).value.median().reset_index()
            if points.payload_bytes.nunique() < 3:
                continue
            sizes = points.payload_bytes.to_numpy(float)
            label = "/".join(map(str, key))
            fit = ols(np.column_stack([np.ones_like(sizes), sizes]), points.value,
                      ("fixed", "per_byte"), sizes, f"copy/{label}")
            slope, ci_low, ci_high = fit["per_byte"]
            out.append(ModelRow(
                "copy_ns_per_byte", transport, slope, "ns/B", ci_low, ci_high,
                f"OLS slope of worker medians over {low}-{high} B, cluster bootstrap",
                placement=placement, config=self.config(own),
            ))
        return out

    def keys(self) -> list[str]:
        """What one curve is: transport and placement, and any case parameter."""
        return ["transport", "placement", *self.case_columns()]

    def config(self, own: list[Any]) -> str:
        return ", ".join(f"{c}={v}" for c, v in zip(self.case_columns(), own, strict=True))

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        rows = self.mine(samples, metric="round_trip")
        if rows.empty:
            return []
        slopes = {(m.transport, m.placement, m.config): m.value for m in model
                  if m.parameter == "copy_ns_per_byte"}
        fig, ax = self.figure(size=(7, 4))
        for (transport, placement, *own), case in rows.groupby(self.keys()):
            medians = case.groupby("payload_bytes").value.median()
            sizes = medians.index.to_numpy()
            config = self.config(own)
            slope = slopes.get((transport, placement, config))
            label = " ".join(x for x in (transport, placement, config) if x) + (
                f" ({slope:.3f} ns/B)" if slope else "")
            ax.plot(np.maximum(sizes, 1), medians / 1000, "o-", ms=3, label=label)
        ax.axvspan(*SLOPE_RANGE, color="grey", alpha=0.1, label="slope fitted here")
        ax.set(xscale="log", yscale="log", xlabel="payload (bytes; 0 B drawn at 1)",
               ylabel="round trip (us)", title="Payload sweep")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return [save(fig, folder / self.plot_file)]

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        rows = results[(results.experiment == self.name) & (results.status == "ok")]
        if rows.empty:
            return []
        keys = self.keys()
        table = rows.pivot_table(index=keys, columns="payload_bytes", values="median",
                                 aggfunc="first")
        slopes = {(m.transport, m.placement, m.config): m for m in model
                  if m.parameter == "copy_ns_per_byte"}
        header = [*keys, *[size(c) for c in table.columns], "ns/B"]
        body = []
        for key, values in table.iterrows():
            transport, placement, *own = key if isinstance(key, tuple) else (key,)
            slope = slopes.get((transport, placement, self.config(own)))
            body.append([*map(str, (transport, placement, *own)), *[us(v) for v in values],
                         f"{slope.value:.3f}" if slope else "-"])
        return [Section(self.title, header, body,
                        plots=[p for p in plots if p == self.plot_file])]

    title = "Payload sweep: median round trip, microseconds"


EXPERIMENT = Payload()
