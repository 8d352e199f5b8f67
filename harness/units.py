"""Every unit a case or a model row may carry: what it means, whether more is worse, and
how to show a value of it.

``compare`` judges only costs (more is worse) and the report formats values through
:func:`show`, so a new unit is one line here instead of strings matched in several
places. An experiment that names a unit not listed here is refused when it plans.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def _plain(value: float, name: str) -> str:
    return f"{value:.4g} {name}"


def _time(value: float, _name: str) -> str:
    return f"{value / 1000:.3f} us" if value < 100_000 else f"{value / 1000:.1f} us"


def _kib(value: float, _name: str) -> str:
    return f"{value / 1024:.0f} KiB"


def _bare(value: float, _name: str) -> str:
    return f"{value:.4g}"


def _points(value: float, _name: str) -> str:
    return f"{value:+.2f} pp"


@dataclass(frozen=True)
class Unit:
    name: str
    cost: bool  # more is worse: a cost is what ``compare`` judges
    meaning: str
    format: Callable[[float, str], str] = _plain


UNITS: dict[str, Unit] = {u.name: u for u in (
    Unit("ns", True, "nanoseconds per operation", _time),
    Unit("us", True, "microseconds", _plain),
    Unit("ns/MiB", True, "nanoseconds per MiB carried"),
    Unit("ns/B", True, "nanoseconds per byte carried"),
    Unit("bytes", True, "bytes of memory", _kib),
    # PSS divides shared pages among every process that maps them, other programs on the
    # machine included: it moves between runs of the same code, so it is shown, not judged.
    Unit("bytes-shared", False, "bytes of memory, shared pages divided among their users",
         _kib),
    Unit("count", False, "events counted"),
    Unit("ratio", False, "dimensionless: a ratio, a share or a fit's R^2", _bare),
    Unit("pp", False, "percentage points", _points),
    Unit("s", False, "seconds"),
    Unit("Hz", False, "events per second"),
    Unit("1/s", False, "a rate per second"),
)}


def us(ns: float | None) -> str:
    """A time in ns as microseconds, the number alone (a table's header names the unit)."""
    if ns is None or math.isnan(ns):
        return "-"
    return f"{ns / 1000:.3f}" if ns < 100_000 else f"{ns / 1000:.1f}"


def number(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def size(n: int) -> str:
    """A byte count as a size: 64 B, 16 KiB, 1 MiB."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def lookup(name: str) -> Unit:
    """The registered unit; ValueError naming the known ones otherwise."""
    try:
        return UNITS[name]
    except KeyError:
        raise ValueError(f"unknown unit {name!r} (known: {', '.join(UNITS)})") from None


def is_cost(name: str) -> bool:
    """True for a unit where more is worse; an empty unit is an old run's ns."""
    unit = UNITS.get(name or "ns")
    return unit is not None and unit.cost


def show(value: float | None, name: str) -> str:
    """``value`` in its unit's format; ``-`` for a missing value."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    unit = UNITS.get(name or "ns")
    return unit.format(value, unit.name) if unit else _plain(value, name)
