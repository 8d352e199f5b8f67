"""Experiment 1: the same request through ``call`` and each transport; the ratio T_mu/T_m.

The seed expects T_mu/T_m >= 1.3 for one system call's worth of IPC.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.params import EchoParams
from bench.timed import echo_plan
from harness.experiment import (
    Experiment,
    ModelRow,
    Plan,
    Section,
    check_row,
)
from harness.plots import save
from harness.stats import ratio_of_medians
from harness.units import number, us

BASELINE = "call"
SEED_RATIO = 1.3  # the source text: IPC makes a call at least 1.3 times slower


class Latency(Experiment):
    name = "latency"
    description = "round trip per transport and placement against the in-process call"

    params_type = EchoParams

    def plan(self, params: EchoParams) -> Plan:
        if BASELINE not in params.transports:
            raise ValueError(f"experiments.latency.transports must include {BASELINE!r}")
        return echo_plan(self.name, params)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = self.mine(samples, metric="round_trip")
        rows_out = []
        for payload, at_size in rows.groupby("payload_bytes"):
            base = at_size[at_size.transport == BASELINE]
            if base.empty:
                continue
            for (transport, placement), case in at_size.groupby(["transport", "placement"]):
                if transport == BASELINE:
                    continue
                value, low, high = ratio_of_medians(
                    case.value.to_numpy(), case.worker.to_numpy(),
                    base.value.to_numpy(), base.worker.to_numpy(),
                    f"latency_ratio/{transport}/{placement}/{payload}",
                )
                rows_out.append(check_row(
                    "latency_ratio", transport, (value, low, high), "ratio",
                    (SEED_RATIO, math.inf), min(case.worker.nunique(), base.worker.nunique()),
                    f"T_mu/T_m, ratio of medians, cluster bootstrap; the seed expects at "
                    f"least {SEED_RATIO:g}", placement=placement, payload_bytes=int(payload),
                ))
        return rows_out

    def plots(self, samples: pd.DataFrame, model: list[ModelRow],
              tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
        rows = self.mine(samples, metric="round_trip")
        if rows.empty:
            return []
        size = int(rows.payload_bytes.min())
        rows = rows[rows.payload_bytes == size]
        medians = rows.groupby(["transport", "placement"]).value.median().unstack()
        fig, ax = self.figure(size=(7, 3.8))
        (medians / 1000).plot.bar(ax=ax, logy=True, rot=0)
        ax.set(ylabel="round trip (us, log)", xlabel="",
               title=f"Round trip by transport and placement ({size} B)")
        ax.grid(axis="y", alpha=0.3)
        by_placement = save(fig, folder / "latency.png")

        fig, ax = self.figure(size=(7, 3.8))
        labels, data = [], []
        for (transport, placement), case in rows.groupby(["transport", "placement"]):
            labels.append(f"{transport}\n{placement}")
            data.append(case.value.to_numpy() / 1000)
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set(yscale="log", ylabel="per-batch round trip (us, log)",
               title="Distribution of batch values (every worker)")
        ax.grid(axis="y", alpha=0.3)
        return [by_placement, save(fig, folder / "latency_distribution.png")]

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        rows = results[(results.experiment == self.name) & (results.status == "ok")]
        ratios = {(m.transport, m.placement, m.payload_bytes): m for m in model
                  if m.parameter == "latency_ratio"}
        header = ["transport", "placement", "bytes", "median us", "95% CI us", "p95 us",
                  "switches/op", "CPU us/op", "T_mu/T_m"]
        body = []
        for r in rows.itertuples():
            ratio = ratios.get((r.transport, r.placement, r.payload_bytes))
            body.append([
                r.transport, r.placement, str(r.payload_bytes), us(r.median),
                f"{us(r.ci_low)}-{us(r.ci_high)}", us(r.p95), number(r.ctx_switches_per_op),
                us(r.cpu_ns_per_op), _ratio_cell(str(r.transport), ratio),
            ])
        return [Section("Round trip (latency) and T_mu/T_m, microseconds", header, body,
                        plots=[p for p in plots if p.startswith("latency")])]


def _ratio_cell(transport: str, ratio: ModelRow | None) -> str:
    if ratio is not None:
        return f"{ratio.value:.1f} ({ratio.ci_low:.1f}-{ratio.ci_high:.1f})"
    return "1 (baseline)" if transport == BASELINE else "-"


EXPERIMENT = Latency()
