"""Experiment: fault isolation and availability, ``A = 1/(1 + lambda*d)`` (renewal model).

S stateful servers (``servers.faults``) answer a steady closed-loop load of requests, each
carrying an id and a CRC32; every reply carries the server's whole state and is checked.
Each server's state lives in shared memory that outlives its process (double-buffered,
committed before the reply), so a replacement resumes it. Crashes come as a Poisson
process of rate lambda (``crash_rate``) per second of up time, one at a time (the renewal
model's assumption): ``kill`` sends SIGKILL; ``raise`` plants a bug that raises after the
next request is applied and before it is answered. The supervisor (the client's event
loop, ``bench.probes.faults``) sees the death on the server's pidfd, reaps it, forks a
replacement and sends it a health check: d = injection -> that good reply is the text's
t_s (detect, restart and reply are kept apart). The request in flight is retried; a
retry of a request the dead server had applied is answered from the stored state, not
applied again (``deduplicated_retries``). After each window every server's log of applied
ids is audited against what the client was answered: ``lost_requests`` and
``duplicate_requests`` must be 0. Stopping every server at once, losing all state and
restarting the whole set with the state re-sent by the client is the monolithic reboot t_r.

Two independent observations meet in the availability rows:

- measured: the client's own Poisson probes (``PROBE_RATE`` a second, scheduled
  independently of crashes). A probe is one request to every server; it counts as
  available when all its replies are correct, arrive within ``DEADLINE_NS`` of its
  scheduled time and come from a server process already up at that time. Measured A =
  available probes / probes (Poisson arrivals see time averages). No crash timestamp
  enters it.
- predicted: ``1/(1 + lambda*d)`` with the lambda the run really had (the crashes
  injected in the windows over the time the servers were up: with few crashes it can
  be far from the configured rate) and the mean d of the restarts, timed by the
  supervisor. ``availability_gap_pp`` is the check: with its interval, the number of
  crashes and probes behind it, and whether the run could tell (``check``).

If the restart took longer than timed, the injector fired late or early, crashes
overlapped, or a restarted server answered wrongly or slowly, the two would part.
``availability_deadline_only`` (replies correct and in time, whichever process sent them)
is kept beside: it should sit near (1 + lambda*D)/(1 + lambda*d). The improvement of
restarting one server over rebooting everything is ``I = (1 + lambda*t_r)/(1 + lambda*t_s)``;
``faults_availability.csv`` has A and I over lambda.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.params import known_transports
from bench.probes.faults import COUNTS, DEADLINE_NS, PROBE_RATE, WINDOW
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
from harness.samples import Estimate, select
from harness.stats import BOOTSTRAP_RESAMPLES, interval, seeded_rng
from servers.faults import MAX_PAYLOAD

MODES = ("kill", "raise")
TRANSPORTS = ("pipe", "uds")  # a dead server must show as EOF on its channel
TIMES = ("restart_d", "restart_detect", "restart_spawn", "restart_reply", "reboot_t_r")
RATIOS = ("availability_measured", "availability_predicted", "availability_deadline_only")
METRICS = {**dict.fromkeys(TIMES, "ns"), **dict.fromkeys(RATIOS, "ratio"),
           **dict.fromkeys(COUNTS, "count"), "window_s": "s", "downtime_ns": "ns"}
assert set(WINDOW) <= set(METRICS)
# Far below 1/d (d is milliseconds): crashes must not overlap for the model to hold.
MAX_CRASH_RATE = 100.0
LAMBDAS = np.logspace(-3, 2, 16)  # per second, for the A and I table
TEXT_T_S, TEXT_T_R = 1.2, 60.0  # the seed's example, seconds
KEYS = ["transport", "mode", "k", "crash_rate"]


def availability(rate: float, d: float) -> float:
    """Renewal theory: up ~ Exp(rate), down d (same time unit as 1/rate)."""
    return 1.0 / (1.0 + rate * d)


def improvement(rate: float, t_r: float, t_s: float) -> float:
    """How many times less downtime-weighted unavailability restarting one server gives."""
    return (1.0 + rate * t_r) / (1.0 + rate * t_s)


def mean_estimate(rows: pd.DataFrame, label: str) -> Estimate:
    """Mean of the values, with a cluster-bootstrap interval that resamples workers."""
    values = rows.value.to_numpy(float)
    if values.size == 0:
        raise ValueError(f"{label}: no samples")
    groups = [values[rows.worker.to_numpy() == w] for w in np.unique(rows.worker)]
    sums = np.array([g.sum() for g in groups])
    sizes = np.array([g.size for g in groups], float)
    pick = seeded_rng(label).integers(len(groups), size=(BOOTSTRAP_RESAMPLES, len(groups)))
    low, high = interval(sums[pick].sum(axis=1) / sizes[pick].sum(axis=1))
    return Estimate(float(values.mean()), low, high)


def _rows(transport: str, variant: str,
          k: int) -> Callable[[str, Estimate, str, str], ModelRow]:
    """A ModelRow maker for one case: name, (value, low, high), unit, method."""

    def row(name: str, value: Estimate, unit: str, method: str) -> ModelRow:
        return ModelRow(name, transport, value.value, unit, value.low, value.high, method,
                        placement="same-cpu", k=k, variant=variant)

    return row


GAP_BOUNDS_PP = (-2.0, 2.0)  # measured availability within 2 points of the renewal model


@dataclass(frozen=True)
class Realized:
    """What the windows really held: crashes, time up, probes; A measured and predicted."""

    crashes: float
    probes: float
    rate: float  # crashes per second of up time
    measured: Estimate
    predicted: Estimate
    gap: Estimate  # measured - predicted, percentage points


def realized(sub: pd.DataFrame, label: str) -> Realized:
    """Availability measured by the probes against 1/(1 + lambda d) with the realized
    lambda; intervals from resampling workers (their sums, so the pooling is kept)."""
    names = ("window_crashes", "window_s", "downtime_ns", "probes", "probes_available")
    sums = {m: select(sub, metric=m).groupby("worker").value.sum() for m in names}
    d = select(sub, metric="restart_d").groupby("worker").value
    sums["d_total"], sums["d_count"] = d.sum(), d.count()
    table = pd.DataFrame(sums).fillna(0.0)

    columns = list(table.columns)

    def of(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(measured, predicted, rate) of resamples: values is (resamples, workers, sums)."""
        total = dict(zip(columns, values.sum(axis=1).T, strict=True))
        rate = total["window_crashes"] / (total["window_s"] - total["downtime_ns"] / 1e9)
        mean_d = total["d_total"] / total["d_count"] / 1e9
        return total["probes_available"] / total["probes"], 1 / (1 + rate * mean_d), rate

    values = table.to_numpy(float)
    (measured,), (predicted,), (rate,) = of(values[None])
    picks = seeded_rng(label).integers(len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    m_draws, p_draws, _ = of(values[picks])
    low_high = [interval(x) for x in (m_draws, p_draws, 100 * (m_draws - p_draws))]
    return Realized(
        float(table.window_crashes.sum()), float(table.probes.sum()), float(rate),
        Estimate(float(measured), *low_high[0]), Estimate(float(predicted), *low_high[1]),
        Estimate(float(100 * (measured - predicted)), *low_high[2]))


@dataclass(frozen=True)
class FaultsParams(Params):
    """Its table in a suite file."""

    transports: tuple[str, ...] = param(("pipe",), "what the servers speak (a crash must "
                                        "show as EOF: pipe or uds)",
                                        choices=known_transports,
                                        applies=lambda: TRANSPORTS)
    servers: tuple[int, ...] = param((1,), "servers S sharing the crashes", low=1)
    modes: tuple[str, ...] = param(MODES, "how a server crashes: kill (SIGKILL), raise "
                                   "(an exception)", column="mode")
    duration_s: float = param(1.0, "the window a batch injects crashes over", "s",
                              positive=True)
    crash_rate: float = param(1.0, "injected crashes per second (lambda)", "1/s",
                              positive=True, column="crash_rate")
    payload_bytes: tuple[int, ...] = param((64,), "request size", "bytes", low=0)


class Faults(ProbeExperiment):
    name = "faults"
    description = "crash, detect, restart: availability 1/(1 + lambda d) against a full reboot"
    params_type = FaultsParams
    format1 = (("variant", "mode", str), ("level", "crash_rate", float))

    def plan(self, params: FaultsParams) -> Plan:
        where = self.where
        transports = params.transports
        bad = sorted(set(transports) - set(TRANSPORTS))
        if bad:
            raise ValueError(f"{where}.transports: {bad[0]!r} cannot carry this experiment "
                             "(a crash must show as EOF: pipe or uds)")
        modes = params.modes
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            raise ValueError(f"{where}.modes: unknown mode {unknown[0]!r} (known: kill, raise)")
        if params.crash_rate > MAX_CRASH_RATE:
            raise ValueError(f"{where}.crash_rate: at most {MAX_CRASH_RATE:g} per second (a "
                             "restart takes milliseconds; crashes must be far apart)")
        too_big = [p for p in params.payload_bytes if p > MAX_PAYLOAD]
        if too_big:
            raise ValueError(f"{where}.payload_bytes: {too_big[0]} B is more than one atomic "
                             f"pipe frame holds here (at most {MAX_PAYLOAD} B)")
        if params.duration_s * PROBE_RATE < 10:
            raise ValueError(f"{where}.duration_s: at least {10 / PROBE_RATE:g} s (about ten "
                             f"probes a window at {PROBE_RATE:g} probes per second)")
        plan = Plan()
        for transport in transports:
            for mode in modes:
                for n in params.servers:
                    for size in params.payload_bytes:
                        plan.runnable += probe_cases(
                            self, transport, METRICS, k=n, mode=mode,
                            crash_rate=params.crash_rate, duration_s=params.duration_s,
                            payload_bytes=size)
        return plan

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        rows: list[ModelRow] = []
        for (transport, variant, k, rate), sub in self.mine(samples).groupby(KEYS):
            label = f"{self.name}/{transport}/{variant}/k{k}"
            row = _rows(transport, variant, int(k))
            means = {m: mean_estimate(select(sub, metric=m), f"{label}/{m}") for m in TIMES}
            for metric in TIMES:
                each = "reboots" if metric == "reboot_t_r" else "crashes"
                rows.append(row(metric, means[metric], "ns",
                                f"mean over {each}, workers bootstrapped"))
            d = select(sub, metric="restart_d").value
            rows.append(row("restart_d_median", Estimate.bare(np.median(d)), "ns",
                            "median over crashes"))
            deadline_only = mean_estimate(select(sub, metric="availability_deadline_only"),
                                          f"{label}/availability_deadline_only")
            t_s = means["restart_d"]
            found = realized(sub, f"{label}/realized")
            where = dict(placement="same-cpu", k=int(k), variant=variant)
            rows += [
                row("availability_measured", found.measured, "ratio",
                    f"available probes / probes ({PROBE_RATE:g}/s Poisson, all replies good, "
                    f"within {DEADLINE_NS / 1e6:g} ms, from a server up at the probe's time); "
                    f"{found.probes:.0f} probes pooled, workers bootstrapped"),
                row("availability_predicted", found.predicted, "ratio",
                    f"1/(1 + lambda*d) with the crashes really injected: lambda = "
                    f"{found.rate:.3g}/s ({found.crashes:.0f} crashes over the time up), "
                    "d = mean restart_d"),
                row("availability_predicted_configured",
                    Estimate.bare(availability(rate, t_s.value / 1e9)), "ratio",
                    f"1/(1 + lambda*d) at the configured lambda = {rate:g}/s (for reference)"),
                row("crash_rate_realized", Estimate.bare(found.rate), "1/s",
                    "crashes injected in the windows over the time the servers were up"),
                row("availability_deadline_only", deadline_only, "ratio",
                    "probes with good replies in time, whichever process sent them: expect "
                    "about (1 + lambda*D)/(1 + lambda*d)"),
                check_row("availability_gap_pp", transport, found.gap, "pp", GAP_BOUNDS_PP,
                          found.crashes,
                          f"measured - predicted, percentage points, {found.crashes:.0f} "
                          f"crashes and {found.probes:.0f} probes, workers bootstrapped; holds "
                          f"within {GAP_BOUNDS_PP[1]:g} pp", **where),
                row("improvement_I", Estimate.bare(improvement(
                    found.rate, means["reboot_t_r"].value / 1e9, t_s.value / 1e9)), "ratio",
                    "(1 + lambda*t_r)/(1 + lambda*t_s) at the realized lambda"),
            ]
            for metric in COUNTS:
                total = float(select(sub, metric=metric).value.sum())
                rows.append(row(metric, Estimate.bare(total), "count",
                                "sum over workers and batches"))
        return rows

    def tables(self, samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
        mine = self.mine(samples)
        if mine.empty:
            return {}
        summary, curves = [], []
        for (transport, variant, k, rate), sub in mine.groupby(KEYS):
            values = {m: select(sub, metric=m).value for m in METRICS}
            t_s = float(values["restart_d"].mean()) / 1e9
            t_r = float(values["reboot_t_r"].mean()) / 1e9
            key = {"transport": transport, "mode": variant, "servers": int(k)}
            window = float(values["window_s"].sum()) - float(values["downtime_ns"].sum()) / 1e9
            summary.append({
                **key, "crash_rate": rate,
                "crash_rate_realized": float(values["window_crashes"].sum()) / window
                if window > 0 else np.nan, "t_s_ns": t_s * 1e9,
                "t_s_median_ns": float(values["restart_d"].median()), "t_r_ns": t_r * 1e9,
                **{f"{m}_ns": float(values[m].mean()) for m in TIMES[1:4]},
                **{m: float(values[m].mean()) for m in RATIOS},
                **{m: int(values[m].sum()) for m in COUNTS},
            })
            for lam in LAMBDAS:
                curves.append({
                    **key, "lambda_per_s": lam, "t_s_ns": t_s * 1e9, "t_r_ns": t_r * 1e9,
                    "A_microkernel": availability(lam, t_s),
                    "A_monolithic": availability(lam, t_r),
                    "I": improvement(lam, t_r, t_s),
                    "I_text": improvement(lam, TEXT_T_R, TEXT_T_S),
                })
        return {"faults": pd.DataFrame(summary), "faults_availability": pd.DataFrame(curves)}

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any:
        curves, summary = tables.get("faults_availability"), table
        if curves is None or curves.empty:
            return None
        fig, (left, right) = self.figure(2, (11, 4.2))
        colours = [f"C{i}" for i in range(10)]
        groups = curves.groupby(["transport", "mode", "servers"])
        for colour, ((transport, variant, k), sub) in zip(colours * 4, groups, strict=False):
            label = f"{transport} {variant} S={k}"
            left.plot(sub.lambda_per_s, sub.A_microkernel, "-", color=colour,
                      label=f"{label}: restart one (t_s)")
            left.plot(sub.lambda_per_s, sub.A_monolithic, "--", color=colour,
                      label=f"{label}: reboot all (t_r)")
            right.plot(sub.lambda_per_s, sub.I, "-", color=colour, label=label)
            point = summary[(summary.transport == transport) & (summary.mode == variant)
                            & (summary.servers == k)]
            left.plot(point.crash_rate_realized, point.availability_measured, "o", color=colour,
                      label=f"{label}: measured")
            left.plot(point.crash_rate_realized, point.availability_predicted, "x",
                      color=colour, ms=9)
        right.plot(LAMBDAS, [improvement(lam, TEXT_T_R, TEXT_T_S) for lam in LAMBDAS], ":",
                   color="grey",
                   label=f"text: t_r {TEXT_T_R:g} s, t_s {TEXT_T_S:g} s")
        rate = "crash rate lambda, per second"
        finish_axes(left, "Availability (o measured, x predicted at the measured d)", rate,
                    "availability A = 1/(1 + lambda d)", xscale="log", legend=6)
        finish_axes(right, "Improvement of restarting one server over a full reboot", rate,
                    "I = (1 + lambda t_r)/(1 + lambda t_s)", xscale="log", yscale="log")
        return fig

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        params = {(m.transport, m.variant, m.k, m.parameter): m for m in model
                  if m.parameter in (*TIMES, *RATIOS, *COUNTS, "availability_gap_pp",
                                     "crash_rate_realized",
                                     "improvement_I", "restart_d_median")}
        keys = sorted({key[:3] for key in params})
        summary = tables.get("faults", pd.DataFrame())
        rows = []
        for key in keys:
            def get(name: str) -> ModelRow:
                return params[(*key, name)]  # noqa: B023

            def ms(name: str, ci: bool = False) -> str:
                m = get(name)
                text = f"{m.value / 1e6:.2f}"
                return f"{text} ({m.ci_low / 1e6:.2f}-{m.ci_high / 1e6:.2f})" if ci else text

            match = summary[(summary.transport == key[0]) & (summary.mode == key[1])
                            & (summary.servers == key[2])] if not summary.empty else summary
            rate = float(match.crash_rate.iloc[0]) if not match.empty else float("nan")
            gap = get("availability_gap_pp")
            rows.append([
                f"{key[0]} {key[1]} S={key[2]}",
                f"{get('crash_rate_realized').value:.3g} (set {rate:g})",
                f"{get('crashes_injected').value:.0f}", f"{get('lost_requests').value:.0f}",
                f"{get('duplicate_requests').value:.0f}",
                f"{get('deduplicated_retries').value:.0f}",
                ms("restart_d", ci=True), ms("restart_d_median"),
                f"{ms('restart_detect')} / {ms('restart_spawn')} / {ms('restart_reply')}",
                ms("reboot_t_r", ci=True),
                f"{get('availability_measured').value:.4f}",
                f"{get('availability_predicted').value:.4f}",
                f"{gap.value:+.2f} ({gap.ci_low:+.2f} to {gap.ci_high:+.2f}): {gap.check}",
                f"{get('improvement_I').value:.2f}",
            ])
        note = ("t_s = d: from the injected crash to the restarted server's first good reply "
                "(mean, 95% CI over workers; the renewal formula needs the mean). detect: the "
                "supervisor sees the death on the server's pidfd; restart: reap, fork into the "
                "same shared state, ready; reply: the health check answered. t_r: SIGKILL every "
                "server, lose all state, restart the whole set with the state re-sent by the "
                "client, one good reply from each - the service set's reboot, not a machine's. "
                f"A measured: the client's Poisson probes ({PROBE_RATE:g}/s, one request to "
                "every server), available if every reply is good, within "
                f"{DEADLINE_NS / 1e6:g} ms of the probe's time and from a server up at that "
                "time; no crash timestamp enters it. A predicted: 1/(1 + lambda*mean d) with "
                "the lambda the run really had (its crashes over the time up; the set rate in "
                f"brackets). The gap holds if its 95% interval lies within "
                f"{GAP_BOUNDS_PP[1]:g} points, fails if it lies beyond, and is untestable when "
                "it straddles that: too few crashes or probes to tell. dedup: retries answered "
                "from the dead server's stored state, not re-applied. lost and dup: the "
                "servers' logs of applied ids against the client's answers; both must be 0. "
                "faults_availability.csv has A and I for lambda from 0.001 to 100 per second.")
        return [Section("Faults: A = 1/(1 + lambda d), I = (1 + lambda t_r)/(1 + lambda t_s)",
                        ["case", "lambda /s realized", "crashes", "lost", "dup", "dedup",
                         "t_s=d ms (CI)",
                         "d median", "detect/restart/reply ms", "t_r ms (CI)", "A measured",
                         "A predicted", "gap pp", "I"],
                        rows, note, self.own_plots(plots))]


EXPERIMENT = Faults()
