"""Experiment: a lock at a subsystem boundary as an M/M/1 queue (the seed's contention model).

P sources (processes sharing a POSIX semaphore, transport ``shm``; or threads
sharing a ``threading.Lock``, transport ``call``) request the lock as a
Poisson process of total rate lambda = rho * mu and hold it for exponential
times of mean s = 1/mu (``service_us``). The mean wait w (arrival to grant)
is set against the M/M/1 prediction

    Wq = rho / (mu - lambda)        and the slowdown   S = 1 + w / t_work,

with t_work = s: every unit of work an operation does here is inside the
critical section (outside it a source sleeps, which sets lambda and is not
work), so the predicted S is 1/(1 - rho). ``mm1_max_rel_error`` is the largest
|Wq - w| / w over rho <= 0.7.

What a real lock adds, and the better model: a waiter is woken when the
holder releases, and that hand-off latency h (measured: grant minus the
previous release, for requests that were blocked) is lock time nobody
works in; holds are not exactly exponential. The Pollaczek-Khinchine M/G/1
wait with the measured lambda, hold mean and variance, and h added to every
hold, ``lambda E[(s+h)^2] / (2 (1 - lambda (E[s] + h)))``, is the second
prediction (``mg1h_max_rel_error``). A replay of the very arrivals and holds
of each run through an ideal FIFO lock (Lindley's recursion; h paid by each
request that finds the lock held) separates the lock's behaviour from the
run's statistical luck, which is large: a run of T seconds averages over
only T (1 - sqrt(rho))^2 / s relaxation times of the queue
(``replay_max_rel_error``). The wake-up lag (a sleeping source runs late:
timer, a CPU the spinning holder occupies, or the GIL) is measured apart;
``delay`` = lag + wait is the time from the Poisson arrival to the grant.

Variant ``kill`` SIGKILLs holders mid-section: the probe reaps them, releases
the semaphore for them and restarts the source (``recovered_locks``); a run
whose holds overlap (two holders at once) fails instead of giving numbers.

The samples hold times in ns (``wait_ns``...: what ``ipcbench compare`` and
pyperf judge); tables and the report give us. Each (lock, variant, P,
service_us, duration_s) is its own configuration: rows and fits never pool them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.params import known_transports
from bench.probes.contention import KILL_METRICS, METRICS, VARIANTS
from bench.queueing import mm1_wait, pk_wait
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
from harness.samples import select
from harness.stats import CONFIDENCE, seeded_rng

TRANSPORTS = {"shm": "processes, POSIX semaphore", "call": "threads, threading.Lock"}
RHO_FIT_MAX = 0.7  # the goal's range: beyond it the waits' variance needs long runs
TOLERANCE = 0.25  # the goal: every rho in range within 25% of the queue's prediction
RESAMPLES = 1000
# One configuration: runs of other lengths or holds are other queues and must not pool.
GROUP = ["transport", "hold", "k", "service_us", "duration_s"]
KEY = [*GROUP, "rho"]


MEANS = ("wait_us", "delay_us", "lock_wait_us", "lag_us", "hold_us", "hold_cv2", "replay_us")


def per_worker(sub: pd.DataFrame) -> pd.DataFrame:
    """One level's runs: a row per worker (one run each), a column per metric.

    The samples hold times in ns (``*_ns``); from here on they are us (``*_us``).
    """
    wide = sub.pivot_table(index="worker", columns="metric", values="value")
    times = [m for m in wide.columns if m.endswith("_ns")]
    wide[times] = wide[times] / 1e3
    return wide.rename(columns={m: m[:-3] + "_us" for m in times})


def configuration(service: float, duration: float) -> str:
    return f"s = {service:g} us, T = {duration:g} s"


def pooled(wide: pd.DataFrame | dict[str, np.ndarray]) -> dict[str, float]:
    """One level's estimates, pooled over its runs (rows of ``per_worker``).

    Means of requests are weighted by each run's request count, the hand-off
    by its count of hand-offs. (A median of run means would be biased low: at
    high rho a run's mean wait is skewed right.)
    """
    n = np.asarray(wide["acquisitions"], float)
    out = {m: float(np.dot(np.asarray(wide[m], float), n) / n.sum()) for m in MEANS}
    handoffs = np.asarray(wide["handoffs"], float)
    out["handoff_us"] = float(np.dot(np.asarray(wide["handoff_us"], float), handoffs)
                              / handoffs.sum()) if handoffs.sum() else 0.0
    out["rate_hz"] = float(np.mean(wide["rate_hz"]))
    out["acquisitions"] = float(n.sum())
    out["workers"] = float(len(n))
    if "recovered_locks" in wide:
        out["kills"] = float(np.sum(wide["kills"]))
        out["recovered_locks"] = float(np.sum(wide["recovered_locks"]))
        out["recovery_us"] = float(np.mean(wide["recovery_us"]))
    return out


def predictions(level: float, service_us: float, est: dict[str, float]) -> dict[str, float]:
    """M/M/1 with the arrival rate and mean hold the run really had (``mm1_set_us``: with
    the set rho and s, for reference); M/G/1 with the measured lambda, holds and hand-off."""
    rate = est["rate_hz"] * 1e-6  # per us
    mean = est["hold_us"] + est["handoff_us"]
    # A constant h added to each hold leaves the variance alone: cv2 rescales to (s + h).
    cv2 = est["hold_cv2"] * est["hold_us"] ** 2 / mean ** 2
    rho = rate * est["hold_us"]
    realized = mm1_wait(rho, est["hold_us"]) if 0 <= rho < 1 else float("inf")
    return {"mm1_us": realized, "mm1_set_us": mm1_wait(level, service_us), "rho_realized": rho,
            "mg1h_us": pk_wait(rate, mean, cv2)}


def rel_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured if measured > 0 else float("inf")


Runs = dict[str, np.ndarray]  # one level: metric -> a value per worker


def errors(levels: dict[float, Runs], service_us: float) -> dict[str, float]:
    """Each model's largest relative error over the levels given."""
    found: dict[str, list[float]] = {}
    for level, wide in levels.items():
        est = pooled(wide)
        pred = predictions(level, service_us, est)
        for name, predicted, measured in (
                ("mm1_max_rel_error", pred["mm1_us"], est["wait_us"]),
                ("mg1h_max_rel_error", pred["mg1h_us"], est["wait_us"]),
                ("replay_max_rel_error", est["replay_us"], est["wait_us"]),
                ("mm1_delay_max_rel_error", pred["mm1_us"], est["delay_us"])):
            found.setdefault(name, []).append(rel_error(predicted, measured))
    return {name: max(values) for name, values in found.items()}


def ci(draws: np.ndarray) -> tuple[float, float]:
    """Percentile interval that survives infinite draws (a level resampled to rho >= 1)."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], method="nearest")
    return float(low), float(high)


def draw_errors(levels: dict[float, Runs], service_us: float,
                label: str) -> dict[str, np.ndarray]:
    """Bootstrap of the maxima: resample each level's workers, recompute every error."""
    rng = seeded_rng(label)
    draws: dict[str, list[float]] = {}
    for _ in range(RESAMPLES):
        picked = {}
        for level, wide in levels.items():
            count = len(wide["acquisitions"])
            rows = rng.integers(count, size=count)
            picked[level] = {m: values[rows] for m, values in wide.items()}
        for name, value in errors(picked, service_us).items():
            draws.setdefault(name, []).append(value)
    return {name: np.array(values) for name, values in draws.items()}


@dataclass(frozen=True)
class ContentionParams(Params):
    """Its table in a suite file."""

    transports: tuple[str, ...] = param(("shm", "call"), "the lock: shm (processes and a "
                                        "POSIX semaphore), call (threads and a "
                                        "threading.Lock)", choices=known_transports,
                                        applies=lambda: TRANSPORTS)
    modes: tuple[str, ...] = param(("busy",), "what a holder does: busy, sleep, kill",
                                   column="hold")
    servers: tuple[int, ...] = param((1,), "sources P contending for the lock", low=1)
    levels: tuple[float, ...] = param((0.5,), "offered loads rho = lambda / mu",
                                      column="rho")
    duration_s: float = param(1.0, "each load's measured window", "s", positive=True)
    service_us: float = param(200.0, "mean hold of the lock (1/mu)", "us", low=1,
                              column="service_us")


class Contention(ProbeExperiment):
    name = "contention"
    description = "a lock as an M/M/1 queue: measured wait against rho/(mu - lambda)"
    params_type = ContentionParams
    format1 = (("variant", "hold", str),
               ("level", "rho", float),
               ("iterations", "service_us", float))

    def plan(self, params: ContentionParams) -> Plan:
        where = self.where
        transports = params.transports
        modes = params.modes
        for name in transports:
            if name not in TRANSPORTS:
                raise ValueError(f"{where}.transports: {name!r} is not a lock here "
                                 "(known: shm = processes and a POSIX semaphore, "
                                 "call = threads and a threading.Lock)")
        unknown = sorted(set(modes) - set(VARIANTS))
        if unknown:
            raise ValueError(f"{where}.modes: unknown mode {unknown[0]!r} "
                             f"(known: {', '.join(VARIANTS)})")
        if "kill" in modes and "shm" not in transports:
            raise ValueError(f"{where}.modes: kill needs transport shm (a thread cannot be "
                             "killed alone)")
        bad = [rho for rho in params.levels if not 0 < rho < 1]
        if bad:
            raise ValueError(f"{where}.levels: rho must be between 0 and 1 (exclusive), "
                             f"not {bad[0]:g}")
        plan = Plan()
        for transport in transports:
            for variant in modes:
                if variant == "kill" and transport != "shm":
                    continue
                metrics = {**METRICS, **(KILL_METRICS if variant == "kill" else {})}
                for sources in params.servers:
                    for rho in params.levels:
                        plan.runnable += probe_cases(
                            self, transport, metrics, k=sources, hold=variant, rho=rho,
                            duration_s=params.duration_s, service_us=params.service_us)
        return plan

    def table(self, samples: pd.DataFrame) -> pd.DataFrame:
        mine = self.mine(samples)
        rows = []
        for key, sub in mine.groupby(KEY, sort=True):
            transport, variant, k, service, duration, level = key
            service = float(service)
            est = pooled(per_worker(sub))
            pred = predictions(level, service, est)
            rows.append({
                "transport": transport, "hold": variant, "sources": int(k), "rho": level,
                "service_us": service, "duration_s": float(duration), **est, **pred,
                "mm1_rel_error": rel_error(pred["mm1_us"], est["wait_us"]),
                "mg1h_rel_error": rel_error(pred["mg1h_us"], est["wait_us"]),
                "replay_rel_error": rel_error(est["replay_us"], est["wait_us"]),
                "mm1_delay_rel_error": rel_error(pred["mm1_us"], est["delay_us"]),
                "slowdown": 1 + est["wait_us"] / est["hold_us"],
                "slowdown_mm1": 1 / (1 - pred["rho_realized"]) if pred["rho_realized"] < 1
                else float("inf"),
            })
        return pd.DataFrame(rows)

    def model(self, samples: pd.DataFrame) -> list[ModelRow]:
        mine = self.mine(samples)
        mine = mine[mine.rho <= RHO_FIT_MAX + 1e-9]
        rows = []
        for (transport, variant, k, service, duration), group in mine.groupby(GROUP):
            service = float(service)
            where = configuration(service, duration)
            label = f"{self.name}/{transport}/{variant}/{k}/{service:g}/{duration:g}"
            levels = {level: {m: col.to_numpy(float) for m, col in per_worker(sub).items()}
                      for level, sub in group.groupby("rho")}
            point = errors(levels, service)
            draws = draw_errors(levels, service, label)
            common = dict(placement="same-cpu", k=int(k), variant=variant, config=where)
            method = (f"{where}: max over rho <= {RHO_FIT_MAX:g} of |predicted - measured| "
                      "/ measured mean wait, the predictions at the rho and holds the run "
                      f"really had; workers bootstrapped; holds within {TOLERANCE:.0%}")
            events = float(select(group, metric="acquisitions").value.sum())
            for name, value in point.items():
                rows.append(check_row(name, transport, (value, *ci(draws[name])), "ratio",
                                      (0.0, TOLERANCE), events, method, **common))
            ests = [pooled(wide) for wide in levels.values()]
            handoff = np.mean([e["handoff_us"] for e in ests])
            lag = np.mean([e["lag_us"] for e in ests])
            rows += [
                ModelRow("contention_handoff_ns", transport, float(handoff) * 1e3, "ns", np.nan,
                         np.nan, f"{where}: mean hand-off (release to a blocked waiter's "
                         f"grant), averaged over rho <= {RHO_FIT_MAX:g}", **common),
                ModelRow("contention_wake_lag_ns", transport, float(lag) * 1e3, "ns", np.nan,
                         np.nan, f"{where}: mean lateness of a sleeping source at its arrival, "
                         f"averaged over rho <= {RHO_FIT_MAX:g}", **common),
            ]
            if variant == "kill":
                done = select(group, metric="recovered_locks").value
                took = select(group, metric="recovery_ns").value
                rows += [
                    ModelRow("recovered_locks", transport, float(done.sum()), "count", np.nan,
                             np.nan, f"{where}: holders SIGKILLed mid-section whose lock the "
                             "probe released", **common),
                    ModelRow("contention_recovery_ns", transport, float(took.median()), "ns",
                             np.nan, np.nan, f"{where}: median over workers of SIGKILL to "
                             "release", **common),
                ]
        return rows

    def draw(self, table: pd.DataFrame, model: list[ModelRow],
             tables: dict[str, pd.DataFrame]) -> Any:
        fig, (waits, slows) = self.figure(2, (10, 4.2))
        rho = np.linspace(0.02, max(0.95, table.rho.max()), 200)
        for service in table.service_us.unique():
            waits.plot(rho, rho / (1 - rho) * service, "k-", lw=1,
                       label=f"M/M/1, s = {service:g} us")
        slows.plot(rho, 1 / (1 - rho), "k-", lw=1, label="M/M/1: 1/(1 - rho)")
        several = len(table.groupby(["service_us", "duration_s"])) > 1
        for (transport, variant, k, service, duration), sub in table.groupby(
                ["transport", "hold", "sources", "service_us", "duration_s"]):
            label = f"{transport} {variant} P={k}" + (
                f" ({configuration(service, duration)})" if several else "")
            line, = waits.plot(sub.rho, sub.wait_us, "o-", ms=4, label=f"{label}: wait")
            waits.plot(sub.rho, sub.delay_us, "^:", ms=3, color=line.get_color(),
                       label=f"{label}: lag + wait")
            waits.plot(sub.rho, sub.mg1h_us, "x", ms=6, color=line.get_color(),
                       label=f"{label}: M/G/1 + hand-off")
            slows.plot(sub.rho, sub.slowdown, "o-", ms=4, color=line.get_color(), label=label)
        seen = np.concatenate([table.wait_us, table.delay_us, table.mm1_us])
        seen = seen[np.isfinite(seen) & (seen > 0)]  # a queue past rho 1 predicts inf
        if seen.size:
            waits.set_ylim(seen.min() / 2, seen.max() * 3)
        finish_axes(waits, "Wait for the lock against M/M/1", "rho = lambda / mu",
                    "mean wait, us", yscale="log", legend=6)
        finish_axes(slows, "Slowdown (t_work = mean hold)", "rho",
                    "slowdown S = 1 + w / t_work", yscale="log", legend=6)
        return fig

    def report(self, results: pd.DataFrame, model: list[ModelRow],
               tables: dict[str, pd.DataFrame], plots: list[str]) -> list[Section]:
        table = tables.get("contention")
        if table is None or table.empty:
            return []
        errors = {(m.transport, m.variant, m.k, m.config, m.parameter): m
                  for m in model if m.parameter.endswith("max_rel_error")}
        several = len(table.groupby(["service_us", "duration_s"])) > 1
        rows = []
        for r in table.itertuples():
            where = f" ({configuration(r.service_us, r.duration_s)})" if several else ""
            rows.append([f"{r.transport} {r.hold} P={r.sources}{where}",
                         f"{r.rho_realized:.2f} ({r.rho:g})",
                         f"{r.wait_us:.0f}", f"{r.mm1_us:.0f}", f"{r.mg1h_us:.0f}",
                         f"{r.replay_us:.0f}", f"{r.lag_us:.0f}", f"{r.lock_wait_us:.0f}",
                         f"{r.handoff_us:.0f}", f"{r.slowdown:.2f} ({r.slowdown_mm1:.2f})",
                         f"{int(r.acquisitions)}"])
        fits = []
        for (transport, variant, k, where) in sorted({key[:4] for key in errors}):
            cells = []
            for name in ("mm1_max_rel_error", "mg1h_max_rel_error", "replay_max_rel_error",
                         "mm1_delay_max_rel_error"):
                m = errors.get((transport, variant, k, where, name))
                cells.append("-" if m is None else
                             f"{name.split('_max')[0]} {m.value:.0%} "
                             f"({m.ci_low:.0%} to {m.ci_high:.0%}, {m.check})")
            fits.append(f"{transport} {variant} P={k}{f' ({where})' if several else ''}: "
                        + ", ".join(cells))
        kills = [f"{m.transport} P={m.k}: {m.value:.0f} holders killed and recovered"
                 + (f" ({m.config})" if several else "")
                 for m in model if m.parameter == "recovered_locks"]
        note = (f"Max relative error over rho <= {RHO_FIT_MAX:g} (95% CI; holds within "
                f"{TOLERANCE:.0%}, untestable when the interval straddles that): "
                + "; ".join(fits) + ". " + " ".join(kills) + " "
                "wait: Poisson arrival at the lock to grant; lag: how late a sleeping source "
                "woke (its timer, a CPU taken by a spinning holder, or the GIL: in threads a "
                "busy holder keeps the others from even arriving, so their queue is the GIL "
                "and lock_wait is about 0); M/G/1+h: Pollaczek-Khinchine with the measured "
                "rate, holds and hand-off h; replay: the same arrivals and holds through an "
                "ideal FIFO lock. rho: the arrival rate the run really had times its mean "
                "hold (the set rho in brackets); M/M/1 predicts with the realized rho and "
                "hold. Slowdown in brackets: M/M/1's 1/(1 - rho).")
        header = ["lock", "rho real (set)", "wait us", "M/M/1 us", "M/G/1+h us", "replay us",
                  "lag us", "in acquire us", "hand-off us", "slowdown (M/M/1)", "requests"]
        return [Section("Contention: mean wait for a lock against M/M/1 rho/(mu - lambda)",
                        header, rows, note, self.own_plots(plots))]


EXPERIMENT = Contention()
