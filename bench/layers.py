"""Experiment: a layered storage stack, and what the order of its layers costs.

Page cache (write-back, 16 KiB pages) -> file system (log-structured, a header
record per file) -> compression (zlib level 6; a record that does not shrink is
stored raw) and encryption (AES-256-GCM, a random nonce per record, the key made
per run), in either order -> driver (pwrite/pread on a real file). The stack
runs in process (``call``: each layer calls the next) and as one forked server
per layer (``pipe``: each request goes server to server). The input is the
standard library's ``*.py`` files (``file_bytes`` of them, 0: all): every file
is written and synced, the cache dropped, every file read back and compared.

The seed's expected overhead of an ordering is the sum over layers of each
layer's cost per byte times the bytes that enter it:

    T(order) = sum_L c_L * B_L(order)

B_L is counted in the stack (compress-then-encrypt encrypts the compressed
bytes; encrypt-then-compress compresses ciphertext, which does not shrink, so
the device gets the input plus 29 bytes a record). c_L for zlib, AEAD and
the driver is measured on each layer alone, on the data it sees in that
ordering (1 MiB of the input); cache and file system see the same bytes in
either order, so their own in-stack time is used. Measured minus predicted
is what the structure costs: dispatch in process, plus IPC as servers; pipe
minus call is the IPC alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.params import known_transports
from harness.experiment import (
    ModelRow,
    Params,
    Plan,
    ProbeExperiment,
    Section,
    check_row,
    param,
    probe_cases,
)
from harness.plots import finish_axes
from harness.samples import median_draws, select
from harness.stats import interval
from servers.layers import LAYERS, ORDERS, stack_layers

NAME = "layers"
TRANSPORTS = ("call", "pipe")
BLOCK_BYTES = 16384  # page, and unit of compression and encryption
DEFAULT_ORDERS = ("c-then-e", "e-then-c")
MIN_FILE_BYTES = 64 << 10
MIB = float(1 << 20)
MS = 1e6

BASE_METRICS = {
    "write_ns_per_mib": "ns/MiB", "read_ns_per_mib": "ns/MiB", "total_ns_per_mib": "ns/MiB",
    "pred_write_ns_per_mib": "ns/MiB", "pred_read_ns_per_mib": "ns/MiB",
    "pred_ns_per_mib": "ns/MiB",
    "bytes_ratio": "ratio", "intact": "ratio", "requests_per_mib": "count",
}


def metrics(order: str) -> dict[str, str]:
    """Every metric one measurement of ``order`` gives: totals, each layer, each isolated."""
    out = dict(BASE_METRICS)
    for layer in stack_layers(order):
        out |= {f"{layer}_write_ns_per_mib": "ns/MiB", f"{layer}_read_ns_per_mib": "ns/MiB",
                f"{layer}_bytes_ratio": "ratio"}
    for layer in (*ORDERS[order], "driver"):
        out |= {f"iso_{layer}_write_ns_per_byte": "ns/B",
                f"iso_{layer}_read_ns_per_byte": "ns/B"}
    return out


TOLERANCE = 0.20  # the sum of the layers' own costs within 20% of the stack's time


def prediction_checks(mine: pd.DataFrame) -> list[ModelRow]:
    """Predicted (the layers' own costs times the bytes entering each) against the
    measured time per MiB of the stack in process, per ordering, as checks. As servers
    the gap is the IPC the prediction leaves out by design: not a check."""
    rows = []
    for (transport, order), sub in select(mine, transport="call").groupby(["transport",
                                                                           "order"]):
        measured, predicted = (select(sub, metric=m) for m in ("total_ns_per_mib",
                                                                 "pred_ns_per_mib"))
        if measured.empty or predicted.empty:
            continue
        label = f"layers/{transport}/{order}"
        point = float(np.median(predicted.value) / np.median(measured.value) - 1)
        low, high = interval(median_draws(predicted, label + "/pred_ns_per_mib")
                             / median_draws(measured, label + "/total_ns_per_mib") - 1)
        rows.append(check_row(
            "layers_pred_rel_error", transport, (point, low, high), "ratio",
            (-TOLERANCE, TOLERANCE), measured.worker.nunique(),
            f"sum of c_L B_L over the measured time per MiB, - 1; workers bootstrapped; "
            f"holds within {TOLERANCE:.0%}", placement="same-cpu", variant=order,
            payload_bytes=BLOCK_BYTES, k=int(sub.k.iloc[0])))
    return rows


@dataclass(frozen=True)
class LayersParams(Params):
    """Its table in a suite file."""

    transports: tuple[str, ...] = param(TRANSPORTS, "how layers talk: call (one process), "
                                        "pipe (a server per layer)",
                                        choices=known_transports,
                                        applies=lambda: TRANSPORTS)
    modes: tuple[str, ...] = param(DEFAULT_ORDERS, "the stack's layer orders",
                                   column="order")
    file_bytes: int = param(0, "input size (0: every stdlib file the probe finds)", "bytes",
                            low=0, column="file_bytes")


class Layers(ProbeExperiment):
    name = NAME
    description = "storage stack: compress-then-encrypt against encrypt-then-compress, call/pipe"
    params_type = LayersParams
    format1 = (("variant", "order", str),
               ("level", "file_bytes", lambda mib: round(mib * MIB)))  # level was MiB

    def plan(self, params: LayersParams) -> Plan:
        where = self.where
        transports = params.transports
        bad = sorted(set(transports) - set(TRANSPORTS))
        if bad:
            raise ValueError(f"{where}.transports: the stack runs over call and pipe, "
                             f"not {bad[0]!r}")
        orders = params.modes
        bad = sorted(set(orders) - set(ORDERS))
        if bad:
            raise ValueError(f"{where}.modes: unknown ordering {bad[0]!r} "
                             f"(known: {', '.join(ORDERS)})")
        if 0 < params.file_bytes < MIN_FILE_BYTES:
            raise ValueError(f"{where}.file_bytes: use 0 (every file) or at least "
                             f"{MIN_FILE_BYTES} bytes")
        plan = Plan()
        for transport in transports:
            for order in orders:
                # k: layers (servers, as pipe)
                plan.runnable += probe_cases(
                    self, transport, metrics(order), k=len(stack_layers(order)),
                    order=order, file_bytes=params.file_bytes, payload_bytes=BLOCK_BYTES)
        return plan

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        return self.wide(samples, ["transport", "order"]).rename(
            columns={"order": "ordering"})

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        mine = self.mine(samples)
        rows: list[ModelRow] = []
        method = "median over workers, cluster bootstrap"
        named = {"total_ns_per_mib": ("layers_meas_ns_per_mib", "ns/MiB"),
                 "pred_ns_per_mib": ("layers_pred_ns_per_mib", "ns/MiB"),
                 "write_ns_per_mib": ("layers_write_ns_per_mib", "ns/MiB"),
                 "read_ns_per_mib": ("layers_read_ns_per_mib", "ns/MiB"),
                 "bytes_ratio": ("layers_bytes_ratio", "ratio")}
        draws: dict[tuple[str, str], np.ndarray] = {}
        for (transport, order), sub in mine.groupby(["transport", "order"]):
            common = dict(placement="same-cpu", variant=order, payload_bytes=BLOCK_BYTES,
                          k=int(sub.k.iloc[0]))
            for metric, (parameter, unit) in named.items():
                rows_m = select(sub, metric=metric)
                if rows_m.empty:
                    continue
                label = f"{self.name}/{transport}/{order}/{metric}"
                found = median_draws(rows_m, label)
                if metric == "total_ns_per_mib":
                    draws[transport, order] = found
                low, high = interval(found)
                rows.append(ModelRow(parameter, transport, float(np.median(rows_m.value)),
                                     unit, low, high, method, **common))
            intact = select(sub, metric="intact")
            if not intact.empty:  # every worker must have read back every byte
                rows.append(ModelRow("layers_intact", transport, float(intact.value.min()),
                                     "ratio", np.nan, np.nan, "min over workers", **common))
        rows += prediction_checks(mine)
        for (transport, order), pipe in draws.items():
            call = draws.get(("call", order))
            if transport == "call" or call is None:
                continue
            sub = select(mine, transport=transport, order=order)
            gap = float(np.median(select(sub, metric="total_ns_per_mib").value)
                        - np.median(select(select(mine, transport="call", order=order),
                                           metric="total_ns_per_mib").value))
            low, high = interval(pipe - call)
            common = dict(placement="same-cpu", variant=order, payload_bytes=BLOCK_BYTES,
                          k=int(sub.k.iloc[0]))
            rows.append(ModelRow("layers_ipc_ns_per_mib", transport, gap, "ns/MiB", low, high,
                                 f"{transport} minus call, medians; bootstrap difference",
                                 **common))
            requests = float(np.median(select(sub, metric="requests_per_mib").value))
            if requests > 0:
                rows.append(ModelRow("layers_ipc_ns_per_request", transport, gap / requests,
                                     "ns", low / requests, high / requests,
                                     "IPC per MiB over requests per MiB (one request: "
                                     "a round trip between two layers)", **common))
        return rows

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any:
        fig, (ax, bx) = self.figure(2, (10, 4.4), gridspec_kw={"width_ratios": [3, 1]})
        table = table.sort_values(["ordering", "transport"])
        x = np.arange(len(table))
        bottom = np.zeros(len(table))
        colors = dict(zip(LAYERS, ("#8fbcd4", "#5b8db8", "#e39b4c", "#c0504d", "#7f7f7f"),
                          strict=True))
        for layer in LAYERS:
            cost = np.zeros(len(table))
            for path in ("write", "read"):
                column = f"{layer}_{path}_ns_per_mib"
                if column in table:
                    cost += table[column].fillna(0).to_numpy()
            if cost.any():
                ax.bar(x, cost / MS, bottom=bottom / MS, color=colors[layer], label=layer)
                bottom += cost
        rest = np.clip(table.total_ns_per_mib.to_numpy() - bottom, 0, None)
        ax.bar(x, rest / MS, bottom=bottom / MS, color="white", edgecolor="black",
               hatch="//", label="dispatch / IPC")
        ax.plot(x, table.pred_ns_per_mib / MS, "kD", ms=6, label="predicted sum c_L B_L")
        ax.set_xticks(x, [f"{o}\n{t}" for o, t in zip(table.ordering, table.transport,
                                                      strict=True)], fontsize=8)
        finish_axes(ax, "Time per MiB by layer (bars: measured, diamond: predicted)", "",
                    "ms per MiB of input (write + read back)")
        ratios = table.drop_duplicates("ordering")
        bx.bar(np.arange(len(ratios)), ratios.bytes_ratio, color="#5b8db8")
        bx.axhline(1.0, color="grey", ls=":")
        bx.set_xticks(np.arange(len(ratios)), list(ratios.ordering), fontsize=8)
        finish_axes(bx, "Bytes written", "", "bytes written to the device per input byte",
                    legend=0)
        return fig

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        found = {(m.transport, m.variant, m.parameter): m for m in model
                 if m.parameter.startswith("layers_")}
        if not found:
            return []

        def ms(m: ModelRow | None, ci: bool = False) -> str:
            if m is None:
                return "-"
            text = f"{m.value / MS:.2f}"
            return f"{text} ({m.ci_low / MS:.2f} to {m.ci_high / MS:.2f})" if ci else text

        rows = []
        for transport, order in sorted({(t, v) for t, v, _ in found}):
            def get(name: str) -> ModelRow | None:
                return found.get((transport, order, name))  # noqa: B023
            meas, pred = get("layers_meas_ns_per_mib"), get("layers_pred_ns_per_mib")
            ratio, intact = get("layers_bytes_ratio"), get("layers_intact")
            ipc = get("layers_ipc_ns_per_request")
            rows.append([
                transport, order, ms(get("layers_write_ns_per_mib")),
                ms(get("layers_read_ns_per_mib")), ms(meas, ci=True), ms(pred),
                f"{(meas.value - pred.value) / MS:.2f}" if meas and pred else "-",
                ms(get("layers_ipc_ns_per_mib")), f"{ipc.value / 1000:.1f}" if ipc else "-",
                f"{ratio.value:.3f}" if ratio else "-",
                "yes" if intact and intact.value == 1 else "NO",
            ])
        note = ("ms per MiB of input. Predicted: sum over layers of cost per byte times the bytes "
                "entering the layer (zlib, AEAD, driver timed alone on the data they see in "
                "that ordering; cache and fs their own time in the stack). Measured minus "
                "predicted is the structure: calls in process, and IPC as servers. IPC is "
                "pipe minus call; per request: one round trip between two adjacent layers. "
                "Bytes: device bytes per input byte. The device is a file in the OS page "
                "cache (no fsync): the stack's CPU cost, not the disk's.")
        return [Section("Layers: T(order) = sum_L c_L B_L, measured and predicted",
                        ["transport", "ordering", "write", "read", "measured (95% CI)",
                         "predicted", "meas - pred", "IPC", "IPC us/request", "bytes ratio",
                         "intact"],
                        rows, note, self.own_plots(plots))]


EXPERIMENT = Layers()
