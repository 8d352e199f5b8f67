"""Experiment 1: the same request through ``call`` and each transport; the ratio T_mu/T_m.

The seed expects T_mu/T_m >= 1.3 for one system call's worth of IPC.
"""

from __future__ import annotations

import pandas as pd

from harness.experiment import Experiment, ExperimentParams, ModelRow, Plan, echo_plan
from harness.stats import ratio_of_medians

BASELINE = "call"


class Latency(Experiment):
    name = "latency"
    description = "round trip per transport and placement against the in-process call"

    def plan(self, params: ExperimentParams) -> Plan:
        if BASELINE not in params.transports:
            raise ValueError(f"experiments.latency.transports must include {BASELINE!r}")
        return echo_plan(self.name, params)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = samples[(samples.experiment == self.name) & (samples.metric == "round_trip")]
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
                rows_out.append(ModelRow(
                    "latency_ratio", transport, value, "ratio", low, high,
                    "T_mu/T_m, ratio of medians, cluster bootstrap",
                    placement=placement, payload_bytes=int(payload),
                ))
        return rows_out


EXPERIMENT = Latency()
