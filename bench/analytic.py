"""Closed-form models of the seed, as calculators, each with a Monte Carlo simulator to check it.

**Attack-surface reduction.** The kernel's attack surface is taken to be proportional to its
code size. A monolithic kernel of ``S_m`` lines becomes a microkernel when a fraction ``f`` of
that code moves out to ``n_s`` user-space servers, each of which costs ``delta`` lines of glue
(IPC stubs, capabilities) that stay in the kernel::

    S_uk = (1 - f) S_m + n_s delta          R = 1 - S_uk / S_m = f - n_s delta / S_m

``R`` is negative when the glue outweighs the code moved out; it is zero at
``n_s = f S_m / delta`` servers (the break-even count). The simulation puts bugs on lines as a
Bernoulli process (each line holds a bug with probability ``bug_density``); each monolithic
line moves out with probability ``f``; the glue lines are new lines with the same density.
Then the kernel's expected bug count falls by exactly the fraction ``R``.

**Interface drift.** Incompatible interface changes arrive as a Poisson process of rate
``lambda_d``; the module is updated as an independent Poisson process of rate ``mu``; an update
that comes after a change, within the compatibility window ``delta`` of that change, makes the
module compatible with it (the window is the time the old interface is kept). A change breaks
the module when no update comes within its window. Updates are memoryless, so the wait from a
change to the next update is Exp(mu) whatever happened before::

    P(miss)                     = exp(-mu delta)
    breakage rate               = lambda_d exp(-mu delta)
    E[breakages over T]         = lambda_d T exp(-mu delta)
    P(>= 1 breakage over T)     = 1 - exp(-lambda_d T exp(-mu delta))    (independent fixes)

The mean needs nothing but linearity, so it holds exactly whatever the update process does
across changes. The last line treats breakages as a thinned Poisson process, which is exact
only when every change is fixed by its own, independent update (per-change fixes). With one
module release stream (the usual reading of "updates at rate mu") one release fixes every
pending change, so breakages cluster and the chance of at least one is *lower*: the Poisson
formula is then an upper bound (Jensen). For that case :func:`drift_breakage_probability_shared`
computes the exact value by solving the renewal (delay) equation of the idle/pending process
numerically. Times are in any unit, the same for the rates, the window and the horizon; a
change at time ``t <= T`` whose window ends after ``T`` still counts.

Pure functions: numpy only, no I/O. ``ipcbench model`` prints them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Rows = tuple[list[str], list[list[str]]]
UpdateModel = Literal["shared", "independent"]

MAX_SIMULATED_EVENTS = 20_000_000  # keeps one simulation under ~1 GB of float64 arrays
MAX_SOLVER_STEPS = 4_000_000  # about 2 s of the pure-Python delay-equation solver


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value:g}")
    return value


def _trials(trials: int) -> int:
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 2:
        raise ValueError(f"trials must be a whole number >= 2, got {trials!r}")
    return int(trials)


# --- attack surface -------------------------------------------------------------------------


def _check_attack_surface(f: float, n_s: float, delta: float, s_m: float) -> None:
    f = _finite("f (fraction moved out)", f)
    if not 0 <= f <= 1:
        raise ValueError(f"f (fraction moved out) must be between 0 and 1, got {f:g}")
    _non_negative("n_s (servers)", n_s)
    _non_negative("delta (glue lines per server)", delta)
    if _finite("S_m (monolithic size)", s_m) <= 0:
        raise ValueError(f"S_m (monolithic size) must be > 0 lines, got {s_m:g}")


def microkernel_size(f: float, n_s: float, delta: float, s_m: float) -> float:
    """Kernel code left after the split: ``S_uk = (1 - f) S_m + n_s delta`` (lines)."""
    _check_attack_surface(f, n_s, delta, s_m)
    return (1 - f) * s_m + n_s * delta


def attack_surface_reduction(f: float, n_s: float, delta: float, s_m: float) -> float:
    """Fractional attack-surface reduction ``R = 1 - S_uk/S_m = f - n_s delta / S_m``.

    ``f`` in [0, 1] is the fraction of the monolithic code moved to servers, ``n_s >= 0`` the
    number of servers, ``delta >= 0`` the kernel glue per server and ``s_m > 0`` the monolithic
    kernel's size, both in lines. Negative when the glue outweighs what moved out.
    """
    _check_attack_surface(f, n_s, delta, s_m)
    return f - n_s * delta / s_m


def break_even_servers(f: float, delta: float, s_m: float) -> float:
    """Servers at which ``R = 0`` (``f S_m / delta``); infinite when there is no glue."""
    _check_attack_surface(f, 0, delta, s_m)
    return math.inf if delta == 0 else f * s_m / delta


@dataclass(frozen=True)
class AttackSurfacePoint:
    servers: int
    microkernel_size: float
    reduction: float


def attack_surface_sweep(f: float, delta: float, s_m: float,
                         servers: Iterable[int]) -> list[AttackSurfacePoint]:
    """``R`` and ``S_uk`` for each server count (a table row each)."""
    return [AttackSurfacePoint(n, microkernel_size(f, n, delta, s_m),
                               attack_surface_reduction(f, n, delta, s_m)) for n in servers]


@dataclass(frozen=True)
class AttackSurfaceSimulation:
    reduction: float  # 1 - mean(kernel bugs after) / mean(kernel bugs before)
    reduction_se: float  # delta-method standard error of that ratio
    monolithic_bugs: float  # mean bugs in the monolithic kernel
    microkernel_bugs: float  # mean bugs left in the microkernel
    trials: int


def simulate_attack_surface(f: float, n_s: int, delta: int, s_m: int, bug_density: float,
                            rng: np.random.Generator, trials: int = 2000,
                            ) -> AttackSurfaceSimulation:
    """Monte Carlo of ``R`` with bugs on lines.

    Each of the ``s_m`` monolithic lines holds a bug with probability ``bug_density`` and moves
    out of the kernel with probability ``f``, independently (one multinomial draw per trial over
    moved-with-bug / kept-with-bug / clean); the ``n_s * delta`` glue lines are added with the
    same density. Line counts must be whole numbers. The estimate is the ratio of the mean bug
    counts, so nothing of the formula goes into it.
    """
    _check_attack_surface(f, n_s, delta, s_m)
    density = _finite("bug density", bug_density)
    if not 0 < density <= 1:
        raise ValueError(f"bug density must be in (0, 1] bugs per line, got {density:g}")
    trials = _trials(trials)
    if 4 * trials > MAX_SIMULATED_EVENTS:
        raise ValueError(f"{trials} trials is more than the limit of "
                         f"{MAX_SIMULATED_EVENTS // 4}")
    glue = n_s * delta
    if s_m != int(s_m) or glue != int(glue):
        raise ValueError("the simulation needs whole numbers of lines (S_m and n_s * delta)")
    moved_buggy, kept_buggy, _clean = rng.multinomial(
        int(s_m), [density * f, density * (1 - f), 1 - density], size=trials).T
    glue_buggy = rng.binomial(int(glue), density, size=trials)
    before = (moved_buggy + kept_buggy).astype(float)
    after = (kept_buggy + glue_buggy).astype(float)
    mean_before, mean_after = before.mean(), after.mean()
    if mean_before == 0:
        raise ValueError("no bugs were drawn: raise the bug density or the trials")
    ratio = mean_after / mean_before
    se = float(np.std(after - ratio * before, ddof=1) / math.sqrt(trials) / mean_before)
    return AttackSurfaceSimulation(1 - ratio, se, float(mean_before), float(mean_after), trials)


# --- interface drift ------------------------------------------------------------------------


def _check_drift(lambda_d: float, mu: float, delta: float, horizon: float | None = None) -> None:
    _non_negative("lambda_d (incompatible change rate)", lambda_d)
    _non_negative("mu (module update rate)", mu)
    _non_negative("delta (compatibility window)", delta)
    if horizon is not None:
        _non_negative("T (horizon)", horizon)


def drift_miss_probability(mu: float, delta: float) -> float:
    """P(no module update within the window after one change) = ``exp(-mu delta)``."""
    _check_drift(0, mu, delta)
    return math.exp(-mu * delta)


def drift_breakage_rate(lambda_d: float, mu: float, delta: float) -> float:
    """Breakages per unit time, ``lambda_d exp(-mu delta)`` (the thinned change process)."""
    _check_drift(lambda_d, mu, delta)
    return lambda_d * math.exp(-mu * delta)


def drift_expected_breakages(lambda_d: float, mu: float, delta: float, horizon: float) -> float:
    """Mean breakages among the changes of ``[0, T]``: ``lambda_d T exp(-mu delta)``.

    Exact for per-change fixes and for one shared update stream alike.
    """
    _check_drift(lambda_d, mu, delta, horizon)
    return drift_breakage_rate(lambda_d, mu, delta) * horizon


def drift_breakage_probability(lambda_d: float, mu: float, delta: float,
                               horizon: float) -> float:
    """P(at least one breakage over ``T``) = ``1 - exp(-lambda_d T exp(-mu delta))``.

    Exact when each change is fixed by its own independent update (breakages then form a
    Poisson process); an upper bound when one release stream fixes all pending changes
    (see :func:`drift_breakage_probability_shared`).
    """
    return -math.expm1(-drift_expected_breakages(lambda_d, mu, delta, horizon))


def drift_window_for_risk(lambda_d: float, mu: float, horizon: float, risk: float) -> float:
    """Shortest window with ``drift_breakage_probability <= risk``.

    ``delta = ln(lambda_d T / -ln(1 - risk)) / mu`` (0 when no window is needed). Since the
    Poisson formula bounds the shared-stream risk from above, this window suffices for both.
    Infinite when ``mu = 0`` and a window is needed.
    """
    _check_drift(lambda_d, mu, 0, horizon)
    risk = _finite("risk", risk)
    if not 0 < risk < 1:
        raise ValueError(f"risk must be between 0 and 1 (exclusive), got {risk:g}")
    needed = lambda_d * horizon / -math.log1p(-risk)
    if needed <= 1:
        return 0.0
    return math.inf if mu == 0 else math.log(needed) / mu


def drift_breakage_probability_shared(lambda_d: float, mu: float, delta: float,
                                      horizon: float, resolution: int = 20) -> float:
    """P(at least one breakage over ``T``) with one module update stream (exact, numerical).

    The module is *idle* (all changes fixed) or *pending* since its oldest unfixed change.
    An update fixes every pending change; the episode fails when the oldest one reaches age
    ``delta``. With ``p(t)`` = P(idle at t, no failing episode started yet) and
    ``K(t) = int_0^min(t, delta) p(t-a) mu e^{-mu a} da``::

        p' = -lambda p + lambda K
        K' =  mu p - mu K - mu e^{-mu delta} p(t - delta)   (the last term for t >= delta)
        P  =  lambda e^{-mu delta} int_0^T p(s) ds

    solved on a grid that divides the window: an exponential integrator, exact for the
    linear part, with the delayed term linear within a step of at most
    ``1 / (resolution (lambda + mu))`` and ``T / resolution`` (or one window, if shorter).
    """
    _check_drift(lambda_d, mu, delta, horizon)
    if lambda_d == 0 or horizon == 0:
        return 0.0
    if delta == 0 or mu == 0:  # every change breaks: the first one does
        return -math.expm1(-lambda_d * horizon)
    q = math.exp(-mu * delta)
    c = lambda_d + mu
    per_window = max(1, math.ceil(delta * resolution / min(1 / c, horizon)))
    h = delta / per_window
    steps = math.ceil(horizon / h)
    if steps > MAX_SOLVER_STEPS:
        raise ValueError(f"the shared-stream solver would need {steps} steps (limit "
                         f"{MAX_SOLVER_STEPS}): (lambda_d + mu) T or T / delta is too large")
    x = c * h
    decay = math.exp(-x)
    phi1 = -math.expm1(-x) / c  # int_0^h e^{-c(h-s)} ds
    # int_0^h e^{-c(h-s)} s/h ds, with a series where the closed form cancels
    phi2 = phi1 - (h * (0.5 - x / 3) if x < 1e-4 else (1 - decay * (1 + x)) / (c * x))
    lam_c, mu_c = lambda_d / c, mu / c
    p = [0.0] * (steps + 1)  # a list: scalar indexing is what this loop does
    p[0], k = 1.0, 0.0
    for j in range(steps):
        if j >= per_window:
            f0, f1 = -mu * q * p[j - per_window], -mu * q * p[j + 1 - per_window]
        else:
            f0 = f1 = 0.0
        slow = mu_c * p[j] + lam_c * k  # the component along eigenvalue 0
        mean_part = h * (f0 + f1) / 2
        fast_part = f0 * phi1 + (f1 - f0) * phi2
        p[j + 1] = slow + decay * (p[j] - slow) + lam_c * (mean_part - fast_part)
        k = slow + decay * (k - slow) + lam_c * mean_part + mu_c * fast_part
    # trapezoid to the grid point before T, then the part of the last step up to T
    whole = steps - 1
    integral = h * (math.fsum(p[:whole + 1]) - (p[0] + p[whole]) / 2) if whole else 0.0
    frac = (horizon - whole * h) / h
    integral += h * frac * (p[whole] + p[whole] + frac * (p[steps] - p[whole])) / 2
    return min(1.0, lambda_d * q * integral)


@dataclass(frozen=True)
class DriftPoint:
    window: float
    miss_probability: float
    expected_breakages: float
    probability: float  # independent fixes (Poisson)
    probability_shared: float  # one update stream; nan when the solver's limit is exceeded


def drift_sweep(lambda_d: float, mu: float, horizon: float,
                windows: Iterable[float]) -> list[DriftPoint]:
    """Risk over the compatibility window (a table row per window)."""
    rows = []
    for w in windows:
        _check_drift(lambda_d, mu, w, horizon)
        try:
            shared = drift_breakage_probability_shared(lambda_d, mu, w, horizon)
        except ValueError:  # only the solver's step limit is left
            shared = math.nan
        rows.append(DriftPoint(w, drift_miss_probability(mu, w),
                               drift_expected_breakages(lambda_d, mu, w, horizon),
                               drift_breakage_probability(lambda_d, mu, w, horizon), shared))
    return rows


@dataclass(frozen=True)
class DriftSimulation:
    probability: float  # fraction of trials with >= 1 breakage
    probability_se: float
    mean_breakages: float  # breakages per trial
    mean_se: float
    miss_fraction: float  # breakages / changes over all trials (nan without changes)
    trials: int


def simulate_drift(lambda_d: float, mu: float, delta: float, horizon: float,
                   rng: np.random.Generator, trials: int = 20_000,
                   updates: UpdateModel = "shared") -> DriftSimulation:
    """Event-level Monte Carlo of interface drift over ``trials`` horizons.

    Change times are a Poisson process on ``[0, T]``. With ``updates="shared"`` the module's
    updates are one Poisson process on ``[0, T + delta]`` and a change breaks the module when
    the next update after it comes later than ``delta`` (found with one ``searchsorted`` over
    all trials, laid end to end with gaps longer than a window). With ``"independent"`` each
    change waits for its own Exp(mu) fix.
    """
    _check_drift(lambda_d, mu, delta, horizon)
    trials = _trials(trials)
    if updates not in ("shared", "independent"):
        raise ValueError(f"updates must be 'shared' or 'independent', got {updates!r}")
    events = trials * (lambda_d * horizon + (mu * (horizon + delta) if updates == "shared" else 0))
    if events > MAX_SIMULATED_EVENTS:
        raise ValueError(f"about {events:.3g} simulated events (limit {MAX_SIMULATED_EVENTS:.0e}):"
                         " use fewer trials or a shorter horizon")
    n_changes = rng.poisson(lambda_d * horizon, size=trials)
    owner = np.repeat(np.arange(trials), n_changes)
    if updates == "independent":
        fix_delay = rng.exponential(1 / mu, size=owner.size) if mu > 0 else np.full(owner.size,
                                                                                     np.inf)
        broken = fix_delay > delta
    else:
        span = 2 * (horizon + delta) + 1  # > T + delta: a window never reaches the next trial
        n_updates = rng.poisson(mu * (horizon + delta), size=trials)
        changes = rng.uniform(0, horizon, owner.size) + owner * span
        update_times = np.sort(rng.uniform(0, horizon + delta, n_updates.sum())
                               + np.repeat(np.arange(trials) * span, n_updates))
        nxt = np.searchsorted(update_times, changes, side="right")
        next_update = np.append(update_times, np.inf)[nxt]
        broken = next_update - changes > delta
    counts = np.bincount(owner, weights=broken, minlength=trials)
    hit = counts > 0
    p = float(hit.mean())
    return DriftSimulation(
        probability=p, probability_se=math.sqrt(p * (1 - p) / trials),
        mean_breakages=float(counts.mean()),
        mean_se=float(counts.std(ddof=1) / math.sqrt(trials)),
        miss_fraction=float(broken.mean()) if broken.size else math.nan, trials=trials)


# --- tables for the command line (plain rows; the CLI renders them with rich) ---------------


def _g(x: float, digits: int = 4) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e7) else f"{x:,.{digits}f}"


def _lines(x: float) -> str:
    return f"{x:,.0f}"


def _pm(value: float, se: float) -> str:
    return f"{_g(value)} ± {_g(se)}"


def default_servers(n_s: int) -> list[int]:
    base = n_s if n_s > 0 else 10
    return sorted({0, max(1, base // 2), base, 2 * base, 5 * base, 10 * base, n_s})


def default_windows(mu: float, delta: float) -> list[float]:
    if delta > 0:
        return [delta * m for m in (0, 0.25, 0.5, 1, 2, 4)]
    return [0.0] if mu == 0 else [m / mu for m in (0, 0.5, 1, 2, 4)]


def attack_surface_tables(f: float, n_s: int, delta: float, s_m: float,
                          simulation: AttackSurfaceSimulation | None = None,
                          density: float | None = None) -> list[tuple[str, Rows]]:
    """Result and sweep tables of ``ipcbench model attack-surface``."""
    r = attack_surface_reduction(f, n_s, delta, s_m)
    header = ["quantity", "formula", "value"]
    body = [
        ["monolithic kernel", "S_m", f"{_lines(s_m)} lines"],
        ["microkernel", "S_uk = (1-f) S_m + n_s delta",
         f"{_lines(microkernel_size(f, n_s, delta, s_m))} lines"],
        ["attack-surface reduction", "R = f - n_s delta / S_m", f"{_g(r)} ({r:.1%})"],
        ["break-even servers (R = 0)", "f S_m / delta", _g(break_even_servers(f, delta, s_m), 1)],
    ]
    if simulation is not None:
        header.append(f"Monte Carlo ({simulation.trials} trials, {density:g} bugs/line)")
        for row in body:
            row.append("")
        body[0][-1] = f"{simulation.monolithic_bugs:,.1f} bugs"
        body[1][-1] = f"{simulation.microkernel_bugs:,.1f} bugs"
        body[2][-1] = _pm(simulation.reduction, simulation.reduction_se)
    sweep = [[str(pt.servers), _lines(pt.microkernel_size), _g(pt.reduction),
              f"{pt.reduction:.1%}"]
             for pt in attack_surface_sweep(f, delta, s_m, default_servers(n_s))]
    return [
        (f"Attack surface ∝ kernel size: f = {f:g}, n_s = {n_s}, delta = {_lines(delta)} "
         f"lines/server", (header, body)),
        ("R over the number of servers", (["servers", "S_uk lines", "R", "R %"], sweep)),
    ]


def drift_tables(lambda_d: float, mu: float, delta: float, horizon: float, risk: float,
                 shared: DriftSimulation | None = None,
                 independent: DriftSimulation | None = None) -> list[tuple[str, Rows]]:
    """Result and sweep tables of ``ipcbench model drift``."""
    try:
        exact = _g(drift_breakage_probability_shared(lambda_d, mu, delta, horizon))
    except ValueError:
        exact = "- (beyond the solver's step limit)"
    header = ["quantity", "formula", "value"]
    body = [
        ["P(miss the window) per change", "exp(-mu delta)", _g(drift_miss_probability(mu, delta))],
        ["breakage rate (per unit time)", "lambda_d exp(-mu delta)",
         _g(drift_breakage_rate(lambda_d, mu, delta))],
        ["expected breakages over T", "lambda_d T exp(-mu delta)",
         _g(drift_expected_breakages(lambda_d, mu, delta, horizon))],
        ["P(>= 1 breakage), per-change fixes", "1 - exp(-lambda_d T exp(-mu delta))",
         _g(drift_breakage_probability(lambda_d, mu, delta, horizon))],
        ["P(>= 1 breakage), one update stream", "renewal equation (numerical)", exact],
        [f"window for P(>= 1) <= {risk:g}", "ln(lambda_d T / -ln(1-risk)) / mu",
         _g(drift_window_for_risk(lambda_d, mu, horizon, risk))],
    ]
    if shared is not None and independent is not None:
        header.append(f"Monte Carlo ({shared.trials} trials)")
        mc = [_g(shared.miss_fraction), "", _pm(shared.mean_breakages, shared.mean_se),
              _pm(independent.probability, independent.probability_se),
              _pm(shared.probability, shared.probability_se), ""]
        for row, cell in zip(body, mc, strict=True):
            row.append(cell)
    sweep = [[_g(pt.window), _g(pt.miss_probability), _g(pt.expected_breakages),
              _g(pt.probability), _g(pt.probability_shared)]
             for pt in drift_sweep(lambda_d, mu, horizon, default_windows(mu, delta))]
    return [
        (f"Interface drift: lambda_d = {lambda_d:g}, mu = {mu:g} per unit time, "
         f"delta = {delta:g}, T = {horizon:g}", (header, body)),
        ("Risk over the compatibility window",
         (["window", "P(miss)", "expected breakages", "P(>=1) per-change",
           "P(>=1) one stream"],
          sweep)),
    ]
