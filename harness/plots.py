"""Matplotlib, headless, for the experiments' plots."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType


def pyplot() -> ModuleType:
    """pyplot on the Agg backend: no display, PNG files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: object, path: Path) -> Path:
    plt = pyplot()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)
    return path
