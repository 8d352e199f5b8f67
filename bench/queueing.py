"""Queueing formulas the contention experiment predicts with, and its probe replays.

Kept light (the standard library only): the contention probe imports this in every
worker, and its sources fork from that image.
"""

from __future__ import annotations

from collections.abc import Sequence


def mm1_wait(rho: float, service: float) -> float:
    """M/M/1 mean wait in queue, rho/(mu - lambda), in the unit of ``service`` (1/mu)."""
    if not 0 <= rho < 1:
        raise ValueError(f"M/M/1 needs 0 <= rho < 1, not {rho}")
    mu = 1.0 / service
    return rho / (mu - rho * mu)


def pk_wait(rate: float, mean: float, cv2: float) -> float:
    """M/G/1 mean wait (Pollaczek-Khinchine): lambda E[S^2] / (2 (1 - rho)).

    ``mean`` and ``1/rate`` share a unit; cv2 = Var S / E[S]^2 (1: exponential, 0: fixed).
    """
    rho = rate * mean
    if not 0 <= rho < 1:
        return float("inf")
    return rate * mean * mean * (1 + cv2) / (2 * (1 - rho))


def lindley(arrivals: Sequence[float], services: Sequence[float],
            handoff: float = 0.0) -> list[float]:
    """Waits at a FIFO lock fed these arrivals (sorted) and holds (Lindley's recursion).

    A request that finds the lock held also waits ``handoff`` after the release
    (the waiter's wake-up); one that finds it free takes it at once.
    """
    waits, wait = [], 0.0
    for i, arrival in enumerate(arrivals):
        if i:
            wait = wait + services[i - 1] - (arrival - arrivals[i - 1])
            wait = wait + handoff if wait > 0 else 0.0
        waits.append(wait)
    return waits
