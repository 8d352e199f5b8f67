"""``ipcbench model``: the seed's closed-form models (``bench.analytic``) as calculators.

Registered through the ``ipcbench.commands`` entry-point group, so the harness's
command line names no model of bench.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np
from rich.table import Table

from bench import analytic
from harness.console import summary_console
from harness.errors import UsageError


def _whole(text: str) -> int:
    """A count such as 20000000, 2e7 or 20_000_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole, non-negative number: {text!r}")
    return int(value)


# Bounds of the model calculators' inputs: far beyond any real kernel or release process,
# and small enough that no product, exp() or grid size in bench.analytic overflows.
MAX_LINES = 10**12  # S_m and delta: a thousand times Linux
MAX_SERVERS = 10**6  # n_s: n_s * delta stays below 2**63 for numpy's binomial
MIN_AMOUNT, MAX_AMOUNT = 1e-9, 1e9  # rates, windows, horizons (or exactly 0)
MAX_SEED = 2**64 - 1


def _at_most(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text!r} is more than the limit of {limit:.3g}")
        return value
    return parse


def _amount(text: str) -> float:
    """A rate or a time of the drift model: 0, or between 1e-9 and 1e9."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value == 0 or MIN_AMOUNT <= value <= MAX_AMOUNT):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or a number between "
                                         f"{MIN_AMOUNT:g} and {MAX_AMOUNT:g}")
    return value


def _trials(text: str) -> int:
    value = _whole(text)
    if value > analytic.MAX_SIMULATED_EVENTS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than the limit of {analytic.MAX_SIMULATED_EVENTS:.0e} trials")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser(
        "model", help="analytic calculators of the seed's formulas, with Monte Carlo checks",
        description="Closed-form models from the seed; --simulate N prints a Monte Carlo "
                    "estimate (value ± standard error) beside each formula.")
    kinds = model.add_subparsers(dest="model", required=True, parser_class=type(model))
    surface = kinds.add_parser(
        "attack-surface", help="R = f - n_s delta / S_m: attack surface taken as kernel size",
        description="Attack-surface reduction of moving a fraction f of a monolithic kernel "
                    "(S_m lines) into n_s user-space servers that each leave delta lines of "
                    "glue in the kernel: S_uk = (1-f) S_m + n_s delta, R = f - n_s delta / S_m.")
    surface.add_argument("--fraction", "--f", dest="fraction", type=float, required=True,
                         metavar="F", help="fraction of the monolithic code moved out, 0..1")
    surface.add_argument("--servers", type=_at_most(MAX_SERVERS), required=True, metavar="N_S",
                         help="number of user-space servers n_s")
    surface.add_argument("--delta", "--glue", dest="delta", type=_at_most(MAX_LINES),
                         required=True,
                         metavar="LINES", help="kernel glue (IPC, stubs) per server, lines")
    surface.add_argument("--size", type=_at_most(MAX_LINES), required=True, metavar="LINES",
                         help="monolithic kernel size S_m, lines (2e7 and 20_000_000 work)")
    surface.add_argument("--bug-density", type=float, default=1e-3, metavar="P",
                         help="bugs per line for --simulate (default: 0.001)")
    drift = kinds.add_parser(
        "drift", help="interface drift: risk that a module misses a compatibility window",
        description="Incompatible changes arrive at rate lambda_d, module updates at rate mu "
                    "(Poisson, independent); a change breaks the module when no update comes "
                    "within the window. P(>= 1 breakage) is given for per-change fixes (the "
                    "Poisson formula, an upper bound) and for one release stream that fixes "
                    "every pending change (exact, numerical). Rates are per unit time and the "
                    "window and horizon are in that same unit (e.g. per year and years).")
    drift.add_argument("--change-rate", type=_amount, required=True, metavar="LAMBDA_D",
                       help="incompatible interface changes per unit time")
    drift.add_argument("--update-rate", type=_amount, required=True, metavar="MU",
                       help="module updates (releases) per unit time")
    drift.add_argument("--window", type=_amount, required=True, metavar="DELTA",
                       help="compatibility window after each change, in time units")
    drift.add_argument("--horizon", type=_amount, default=1.0, metavar="T",
                       help="period the risk is counted over, in time units (default: 1)")
    drift.add_argument("--risk", type=float, default=0.05,
                       help="target P(>= 1 breakage) for the window it needs (default: 0.05)")
    for sub in (surface, drift):
        sub.add_argument("--simulate", type=_trials, metavar="N", default=0,
                         help="also run N Monte Carlo trials and print them beside the formula")
        sub.add_argument("--seed", type=_at_most(MAX_SEED), default=0,
                         help="Monte Carlo seed, 0 to 2**64-1 (default: 0)")
    model.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    if args.simulate < 0 or args.simulate == 1:
        raise UsageError(f"--simulate {args.simulate}: give at least 2 trials (or 0 for none)")
    rng = np.random.default_rng(args.seed)
    try:
        if args.model == "attack-surface":
            surface = None
            if args.simulate:
                surface = analytic.simulate_attack_surface(
                    args.fraction, args.servers, args.delta, args.size, args.bug_density, rng,
                    args.simulate)
            tables = analytic.attack_surface_tables(args.fraction, args.servers, args.delta,
                                                    args.size, surface, args.bug_density)
        else:
            shared = independent = None
            params = (args.change_rate, args.update_rate, args.window, args.horizon)
            if args.simulate:
                shared = analytic.simulate_drift(*params, rng, args.simulate, "shared")
                independent = analytic.simulate_drift(*params, rng, args.simulate, "independent")
            tables = analytic.drift_tables(*params, args.risk, shared, independent)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    console = summary_console()
    for title, (header, body) in tables:
        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, justify="left" if name in ("quantity", "formula") else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
    return 0
