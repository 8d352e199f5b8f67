"""Experiment 2: round trip over payload size, within each transport's limits.

``copy_ns_per_byte`` is the slope of the round trip over 64 B..64 KiB: above
that a default pipe would chunk, and below it fixed costs dominate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.experiment import Experiment, ExperimentParams, ModelRow, Plan, echo_plan

SLOPE_RANGE = (64, 64 << 10)
Z95 = 1.959964


class Payload(Experiment):
    name = "payload"
    description = "round trip over payload size: copy cost per byte"

    def plan(self, params: ExperimentParams) -> Plan:
        return echo_plan(self.name, params)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows = samples[(samples.experiment == self.name) & (samples.metric == "round_trip")]
        low, high = SLOPE_RANGE
        rows = rows[rows.payload_bytes.between(low, high)]
        out = []
        for (transport, placement), case in rows.groupby(["transport", "placement"]):
            # One point per worker and size: workers are the independent units.
            points = case.groupby(["payload_bytes", "worker"]).value.median().reset_index()
            if points.payload_bytes.nunique() < 3:
                continue
            (slope, _), cov = np.polyfit(points.payload_bytes, points.value, 1, cov=True)
            half = Z95 * float(np.sqrt(cov[0, 0]))
            out.append(ModelRow(
                "copy_ns_per_byte", transport, float(slope), "ns/byte",
                float(slope) - half, float(slope) + half,
                f"OLS slope of worker medians over {low}-{high} B",
                placement=placement,
            ))
        return out


EXPERIMENT = Payload()
