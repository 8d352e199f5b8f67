"""Matplotlib, headless, for the experiments' plots."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


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


def finish_axes(ax: Any, title: str, xlabel: str, ylabel: str, *, xscale: str = "",
          yscale: str = "", legend: float = 7) -> None:
    """Title, axis labels and scales, and a small legend: how every plot here ends.
    ``xscale="log2"``: a log scale of base 2 (server counts), in plain numbers."""
    if xscale == "log2":
        from matplotlib.ticker import ScalarFormatter  # after pyplot() chose the backend

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    elif xscale:
        ax.set_xscale(xscale)
    if yscale:
        ax.set_yscale(yscale)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if legend:
        ax.legend(fontsize=legend)


def reference_plot(samples: pd.DataFrame, folder: Path) -> Path | None:
    """The machine reference over the run's time, disturbed batches marked: the host's
    spells, as every case saw them."""
    timed = samples[samples.ref_ns.notna()]
    if timed.empty:
        return None
    plt = pyplot()
    start = timed.at_s.min()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    quiet = timed[~timed.disturbed.astype(bool)]
    hit = timed[timed.disturbed.astype(bool)]
    ax.plot(quiet.at_s - start, quiet.ref_ns, ".", ms=2, color="tab:blue",
            label="reference before a batch")
    if not hit.empty:
        ax.plot(hit.at_s - start, hit.ref_ns, "x", ms=4, color="tab:red",
                label="before a disturbed batch")
    ax.set(xlabel="seconds into the run", ylabel="pipe loopback (ns per write+read)",
           title="Machine reference over the run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, folder / "reference.png")
