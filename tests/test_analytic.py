"""The seed's analytic models give known numbers and agree with event-level Monte Carlo.

Every simulation is seeded, so the tests are deterministic; the tolerance is four standard
errors of the simulation (floored by the binomial or Poisson error the formula itself
predicts, so a run that draws no event at all is judged fairly).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bench import analytic as an
from harness.cli import main

from .helpers import ipcbench

# --- attack surface: formulas -----------------------------------------------------------------


def test_seed_example_reduces_the_attack_surface_by_over_60_percent():
    # 70% of a 20 Mline kernel moved into 20 servers of 5,000 lines of glue each
    assert an.microkernel_size(0.7, 20, 5000, 20_000_000) == pytest.approx(6_100_000)
    r = an.attack_surface_reduction(0.7, 20, 5000, 20_000_000)
    assert r == pytest.approx(0.695)
    assert r > 0.6
    assert an.break_even_servers(0.7, 5000, 20_000_000) == pytest.approx(2800)


def test_reduction_limits():
    assert an.attack_surface_reduction(1, 0, 5000, 1e6) == 1  # everything out, no glue
    assert an.attack_surface_reduction(0, 10, 1000, 1e6) == pytest.approx(-0.01)  # glue only
    assert an.attack_surface_reduction(0.3, 0, 0, 1e6) == pytest.approx(0.3)
    # at the break-even count the kernel is as large as before
    n = an.break_even_servers(0.5, 2000, 1e6)
    assert an.attack_surface_reduction(0.5, n, 2000, 1e6) == pytest.approx(0, abs=1e-12)
    assert an.break_even_servers(0.5, 0, 1e6) == math.inf


def test_sweep_is_linear_in_servers():
    points = an.attack_surface_sweep(0.7, 5000, 2e7, [0, 10, 20])
    assert [p.servers for p in points] == [0, 10, 20]
    assert [p.reduction for p in points] == pytest.approx([0.7, 0.6975, 0.695])
    assert [p.microkernel_size for p in points] == pytest.approx([6e6, 6.05e6, 6.1e6])


@pytest.mark.parametrize(("args", "message"), [
    ((1.2, 20, 5000, 2e7), "between 0 and 1"),
    ((-0.1, 20, 5000, 2e7), "between 0 and 1"),
    ((math.nan, 20, 5000, 2e7), "finite"),
    ((0.7, -1, 5000, 2e7), "n_s (servers) must be >= 0"),
    ((0.7, 20, -5, 2e7), "delta (glue lines per server) must be >= 0"),
    ((0.7, 20, 5000, 0), "S_m (monolithic size) must be > 0"),
    ((0.7, 20, 5000, "big"), "must be a number"),
])
def test_bad_attack_surface_input_is_a_clear_value_error(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        an.attack_surface_reduction(*args)


# --- attack surface: Monte Carlo ---------------------------------------------------------------


@pytest.mark.parametrize(("f", "n_s", "delta", "s_m", "density"), [
    (0.7, 20, 5000, 20_000_000, 1e-3),  # the seed's example
    (0.0, 10, 1000, 100_000, 5e-3),  # nothing moved: glue only, R < 0
    (0.5, 200, 4000, 1_000_000, 1e-2),  # glue outweighs the code moved out
    (0.33, 3, 777, 50_000, 2e-2),
])
def test_bug_counts_fall_by_r(f, n_s, delta, s_m, density):
    sim = an.simulate_attack_surface(f, n_s, delta, s_m, density, np.random.default_rng(7),
                                     trials=4000)
    formula = an.attack_surface_reduction(f, n_s, delta, s_m)
    assert sim.reduction_se > 0
    assert abs(sim.reduction - formula) < 4 * sim.reduction_se
    # the bug counts themselves scale with the code sizes
    assert sim.monolithic_bugs == pytest.approx(density * s_m, rel=0.02)
    assert sim.microkernel_bugs == pytest.approx(
        density * an.microkernel_size(f, n_s, delta, s_m), rel=0.02)


def test_everything_moved_out_leaves_no_bug_in_the_kernel():
    sim = an.simulate_attack_surface(1.0, 0, 100, 10_000, 0.01, np.random.default_rng(1), 100)
    assert sim.microkernel_bugs == 0 and sim.reduction == 1 and sim.reduction_se == 0


def test_attack_surface_simulation_is_deterministic_and_checks_its_input():
    a, b = (an.simulate_attack_surface(0.6, 5, 100, 10_000, 0.01, np.random.default_rng(3), 50)
            for _ in range(2))
    assert a == b
    with pytest.raises(ValueError, match="bug density"):
        an.simulate_attack_surface(0.6, 5, 100, 10_000, 0, np.random.default_rng(3), 50)
    with pytest.raises(ValueError, match="whole numbers of lines"):
        an.simulate_attack_surface(0.6, 5, 100, 10_000.5, 0.01, np.random.default_rng(3), 50)
    with pytest.raises(ValueError, match="trials"):
        an.simulate_attack_surface(0.6, 5, 100, 10_000, 0.01, np.random.default_rng(3), 1)


# --- interface drift: formulas ----------------------------------------------------------------


def test_drift_formulas_for_the_example():
    q = math.exp(-1.2)  # mu delta = 12 * 0.1
    assert an.drift_miss_probability(12, 0.1) == pytest.approx(q)
    assert an.drift_breakage_rate(2, 12, 0.1) == pytest.approx(2 * q)
    assert an.drift_expected_breakages(2, 12, 0.1, 3) == pytest.approx(6 * q)
    assert an.drift_breakage_probability(2, 12, 0.1, 1) == pytest.approx(1 - math.exp(-2 * q))
    assert an.drift_breakage_probability(2, 12, 0.1, 1) == pytest.approx(0.4524976, abs=1e-6)


def test_drift_limits():
    assert an.drift_miss_probability(0, 5) == 1  # never updated: every change breaks
    assert an.drift_miss_probability(5, 0) == 1  # no window: every change breaks
    assert an.drift_breakage_probability(0, 12, 0.1, 10) == 0
    assert an.drift_breakage_probability(2, 100, 1, 1) == pytest.approx(2 * math.exp(-100))
    for shared in (an.drift_breakage_probability_shared(3, 0, 0.5, 2),
                   an.drift_breakage_probability_shared(3, 7, 0, 2)):
        assert shared == pytest.approx(1 - math.exp(-6))
    assert an.drift_breakage_probability_shared(0, 7, 0.5, 2) == 0


def test_window_for_risk_meets_the_risk():
    window = an.drift_window_for_risk(2, 12, 1, 0.05)
    assert an.drift_breakage_probability(2, 12, window, 1) == pytest.approx(0.05)
    assert an.drift_breakage_probability_shared(2, 12, window, 1) <= 0.05
    assert an.drift_window_for_risk(0.01, 12, 1, 0.05) == 0  # already below the risk
    assert an.drift_window_for_risk(2, 0, 1, 0.05) == math.inf


def test_shared_stream_solver_matches_its_closed_form_before_the_first_deadline():
    # For T <= delta no window has closed yet: p(s) = mu/c + (lambda/c) e^{-cs}, c = lambda + mu
    lam, mu, delta, horizon = 3.0, 5.0, 0.4, 0.3
    c, q = lam + mu, math.exp(-mu * delta)
    exact = lam * q * (mu * horizon / c + lam * (1 - math.exp(-c * horizon)) / c**2)
    assert an.drift_breakage_probability_shared(lam, mu, delta, horizon) == pytest.approx(
        exact, rel=1e-4)


@pytest.mark.parametrize("params", [(2, 12, 0.1, 1), (5, 5, 0.5, 2), (0.5, 50, 0.02, 3)])
def test_shared_stream_solver_converges_and_is_bounded_by_poisson(params):
    coarse = an.drift_breakage_probability_shared(*params, resolution=10)
    fine = an.drift_breakage_probability_shared(*params, resolution=60)
    assert coarse == pytest.approx(fine, rel=1e-3)
    assert an.drift_breakage_probability_shared(*params) <= an.drift_breakage_probability(*params)


def test_drift_sweep_rows():
    rows = an.drift_sweep(2, 12, 1, [0, 0.1, 0.4])
    assert [r.window for r in rows] == [0, 0.1, 0.4]
    assert rows[0].miss_probability == 1 and rows[0].probability == rows[0].probability_shared
    assert [r.expected_breakages for r in rows] == pytest.approx(
        [2 * math.exp(-12 * w) for w in (0, 0.1, 0.4)])
    assert rows[1].probability > rows[2].probability  # a longer window, less risk


@pytest.mark.parametrize(("function", "args", "message"), [
    (an.drift_miss_probability, (-1, 0.1), "mu (module update rate) must be >= 0"),
    (an.drift_breakage_rate, (-2, 12, 0.1), "lambda_d (incompatible change rate) must be >= 0"),
    (an.drift_breakage_probability, (2, 12, -0.1, 1), "delta (compatibility window) must be"),
    (an.drift_breakage_probability, (2, 12, 0.1, -1), "T (horizon) must be >= 0"),
    (an.drift_breakage_probability_shared, (2, math.inf, 0.1, 1), "must be finite"),
    (an.drift_window_for_risk, (2, 12, 1, 1.0), "risk must be between 0 and 1"),
])
def test_bad_drift_input_is_a_clear_value_error(function, args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        function(*args)


# --- interface drift: Monte Carlo --------------------------------------------------------------

DRIFT_CASES = [
    (2, 12, 0.1, 1),  # the example: windows overlap a little
    (5, 5, 0.5, 2),  # windows overlap a lot: one stream is far from Poisson
    (0.5, 50, 0.02, 3),  # short windows
    (3, 40, 1.0, 1),  # mu delta = 40: breakages essentially never happen
    (3, 7, 0.0, 1),  # no window: every change breaks
    (1.5, 0.0, 0.3, 2),  # never updated
]


def _close(value: float, se: float, expected: float, null_se: float) -> bool:
    return abs(value - expected) <= 4 * max(se, null_se) + 1e-12


@pytest.mark.parametrize("params", DRIFT_CASES)
def test_per_change_fixes_match_the_poisson_formulas(params):
    trials = 20_000
    sim = an.simulate_drift(*params, np.random.default_rng(11), trials, "independent")
    mean = an.drift_expected_breakages(*params)
    p = an.drift_breakage_probability(*params)
    assert _close(sim.mean_breakages, sim.mean_se, mean, math.sqrt(mean / trials))
    assert _close(sim.probability, sim.probability_se, p, math.sqrt(p * (1 - p) / trials))


@pytest.mark.parametrize("params", DRIFT_CASES)
def test_one_update_stream_matches_the_mean_and_the_renewal_solution(params):
    trials = 20_000
    sim = an.simulate_drift(*params, np.random.default_rng(12), trials, "shared")
    mean = an.drift_expected_breakages(*params)
    p = an.drift_breakage_probability_shared(*params)
    assert _close(sim.mean_breakages, sim.mean_se, mean, math.sqrt(mean / trials))
    assert _close(sim.probability, sim.probability_se, p, math.sqrt(p * (1 - p) / trials))
    if params[0] * params[3] > 0:
        q = an.drift_miss_probability(params[1], params[2])
        assert _close(sim.miss_fraction, 0, q, math.sqrt(q * (1 - q) / (mean / q * trials)))


def test_one_update_stream_breaks_less_often_than_poisson_says():
    # one release fixes every pending change, so breakages cluster
    sim = an.simulate_drift(5, 5, 0.5, 2, np.random.default_rng(5), 20_000, "shared")
    poisson = an.drift_breakage_probability(5, 5, 0.5, 2)
    assert poisson - sim.probability > 20 * sim.probability_se


def test_drift_simulation_is_deterministic_and_checks_its_input():
    a, b = (an.simulate_drift(2, 12, 0.1, 1, np.random.default_rng(4), 500) for _ in range(2))
    assert a == b
    assert an.simulate_drift(0, 12, 0.1, 1, np.random.default_rng(4), 10).probability == 0
    with pytest.raises(ValueError, match="'shared' or 'independent'"):
        an.simulate_drift(2, 12, 0.1, 1, np.random.default_rng(4), 10, "both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="simulated events"):
        an.simulate_drift(2e6, 12, 0.1, 1, np.random.default_rng(4), 1000)


# --- the command line ---------------------------------------------------------------------------

SURFACE = ("model", "attack-surface", "--f", "0.7", "--servers", "20", "--delta", "5000",
           "--size", "20000000", "--simulate", "2000")
DRIFT = ("model", "drift", "--change-rate", "2", "--update-rate", "12", "--window", "0.1",
         "--horizon", "1", "--simulate", "20000")
BAD = ("model", "attack-surface", "--f", "1.2", "--servers", "20", "--delta", "5000",
       "--size", "2e7")


@pytest.fixture(scope="module")
def cli_runs() -> dict[str, object]:
    # each interpreter start costs over a second: run the three at once
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(ipcbench, *args)
                   for name, args in (("surface", SURFACE), ("drift", DRIFT), ("bad", BAD))}
        return {name: future.result() for name, future in futures.items()}


def test_cli_attack_surface_prints_formula_and_simulation(cli_runs):
    done = cli_runs["surface"]
    assert done.returncode == 0, done.stderr
    for text in ("6,100,000 lines", "0.6950 (69.5%)", "2,800", "Monte Carlo (2000 trials",
                 "R over the number of servers"):
        assert text in done.stdout
    mc = next(line for line in done.stdout.splitlines() if "R = f" in line).split("│")[-2]
    value, se = (float(x) for x in mc.split("±"))
    assert abs(value - 0.695) < 4 * se


def test_cli_drift_prints_formula_and_simulation(cli_runs):
    done = cli_runs["drift"]
    assert done.returncode == 0, done.stderr
    for text in ("0.3012", "0.6024", "0.4525", "0.4349", "0.3053", "Monte Carlo (20000 trials)",
                 "Risk over the compatibility window"):
        assert text in done.stdout


def test_cli_bad_input_is_one_line_and_exit_2(cli_runs):
    done = cli_runs["bad"]
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "ipcbench: error: f (fraction moved out) must be between 0 and 1, got 1.2"]


@pytest.mark.parametrize(("args", "message"), [
    (["drift", "--change-rate", "-2", "--update-rate", "12", "--window", "0.1"],
     "--change-rate: '-2': give 0 or a number between"),
    (["drift", "--change-rate", "2", "--update-rate", "-1", "--window", "0.1"],
     "--update-rate: '-1': give 0 or"),
    (["drift", "--change-rate", "2", "--update-rate", "12", "--window", "nan"],
     "--window: 'nan': give 0 or"),
    (["drift", "--change-rate", "2", "--update-rate", "12"], "required: --window"),
    (["drift", "--change-rate", "2", "--update-rate", "12", "--window", "0.1", "--simulate",
      "1"], "at least 2 trials"),
    (["attack-surface", "--f", "0.7", "--servers", "2.5", "--delta", "1", "--size", "9"],
     "--servers: not a whole"),
    (["attack-surface", "--f", "0.7", "--servers", "2", "--delta", "1", "--size", "0"],
     "must be > 0 lines"),
    (["attack-surface", "--f", "0.7", "--servers", "2", "--delta", "1", "--size", "9",
      "--bug-density", "2", "--simulate", "10"], "bug density"),
])
def test_cli_rejects_bad_input(capsys, args, message):
    assert main(["model", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("ipcbench: error: ")
    assert message in err
