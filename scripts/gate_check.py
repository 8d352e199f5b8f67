"""How the gate behaves on this machine: A/A pairs, and the same pairs with one
transport's samples made slower by a known factor.

Give it independent runs of one suite (``ipcbench run --suite quick --out qN``, one
after another). For every pair it runs ``compare`` as the command line does, plain and
with ``--normalize``: the runs as they are (A/A: any case or transport called slower
is a false alarm), and with the second run's samples of ``--transport`` multiplied by
each ``--factor`` (caught when that transport's gate row says slower). The copies are
made in a temporary folder and removed.

Usage: python scripts/gate_check.py RUN RUN [RUN ...] [--transport pipe]
           [--factor 1.10 --factor 1.25]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from harness.compare import Comparison, compare, load_samples


def slowed(run: Path, transport: str, factor: float, scratch: Path) -> Path:
    copy = scratch / f"{run.name}-{transport}-x{factor:g}"
    if not copy.exists():
        shutil.copytree(run, copy)
        samples = pd.read_csv(copy / "samples.csv")
        samples.loc[samples.transport == transport, "value"] *= factor
        samples.to_csv(copy / "samples.csv", index=False)
    return copy


def alarms(result: Comparison) -> list[str]:
    return [v.case for v in [*result.families, *result.verdicts] if v.verdict == "slower"]


def caught(result: Comparison, transport: str) -> bool:
    return any(v.case.startswith(f"{transport}:") and v.verdict == "slower"
               for v in result.families)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--transport", default="pipe")
    parser.add_argument("--factor", type=float, action="append")
    args = parser.parse_args()
    factors = args.factor or [1.10, 1.25]
    if len(args.runs) < 2:
        parser.error("needs at least two runs")
    pairs = list(itertools.combinations(args.runs, 2))
    with tempfile.TemporaryDirectory() as scratch:
        for normalize in (False, True):
            mode = "--normalize" if normalize else "plain"
            false_alarms = []
            hits = dict.fromkeys(factors, 0)
            for base, new in pairs:
                a = load_samples(base)
                found = alarms(compare(a, load_samples(new), normalize=normalize))
                if found:
                    false_alarms.append(f"{base.name} {new.name}: {', '.join(found)}")
                for factor in factors:
                    copy = slowed(new, args.transport, factor, Path(scratch))
                    hits[factor] += caught(compare(a, load_samples(copy), normalize=normalize),
                                           args.transport)
            print(f"{mode}: A/A pairs with anything slower: {len(false_alarms)} of {len(pairs)}")
            for line in false_alarms:
                print(f"    {line}")
            for factor, hit in hits.items():
                print(f"{mode}: {args.transport} x{factor:g} caught (its gate row slower): "
                      f"{hit} of {len(pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
