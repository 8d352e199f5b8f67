"""A run and its folder: save and load ``results.csv``, ``samples.csv``,
``model.csv``, ``metadata.json`` and ``pyperf.json``.

``samples.csv`` holds every timed batch, so a run can be summarised, refitted
and compared again without re-running it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyperf

from harness.errors import UsageError
from harness.experiment import ModelRow
from harness.records import COUNTER_COLUMNS, KEY_COLUMNS, Case, CaseResult, WorkerResult
from harness.stats import Summary, summarize

CASE_COLUMNS = [*KEY_COLUMNS, "metric", "unit", "topology", "working_set", "sched_batch",
                "workload", "iterations", "variant", "level", "seed", "duration_s"]
TEXT_COLUMNS = ["unit", "variant"]
STAT_COLUMNS = [f.name for f in fields(Summary)]
RESULT_COLUMNS = [*KEY_COLUMNS, "metric", "unit", *STAT_COLUMNS, *COUNTER_COLUMNS,
                  *CASE_COLUMNS[len(KEY_COLUMNS) + 2 :], "status", "note"]
SAMPLE_COLUMNS = [*CASE_COLUMNS, "worker", "batch", "loops", "value", *COUNTER_COLUMNS]
MODEL_COLUMNS = [f.name for f in fields(ModelRow)]


@dataclass
class RunData:
    metadata: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    model: list[ModelRow] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def measured(self) -> list[CaseResult]:
        return [c for c in self.cases if c.status == "ok" and c.workers]

    def samples_frame(self) -> pd.DataFrame:
        rows = []
        for result in self.measured():
            case = asdict(result.case)
            for w, worker in enumerate(result.workers):
                for b, value in enumerate(worker.values):
                    rows.append({**case, "worker": w, "batch": b, "loops": worker.loops,
                                 "value": value, **dict.fromkeys(COUNTER_COLUMNS, np.nan),
                                 **worker.counters})
        return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)

    def results_frame(self) -> pd.DataFrame:
        rows = []
        for result in self.cases:
            row: dict[str, Any] = {**asdict(result.case), "status": result.status,
                                   "note": result.note}
            if result.status == "ok" and result.workers:
                values = np.concatenate([w.values for w in result.workers])
                groups = np.concatenate([[i] * len(w.values) for i, w in enumerate(result.workers)])
                row.update(asdict(summarize(values, groups, result.case.name)))
                for column in COUNTER_COLUMNS:
                    row[column] = float(np.mean([w.counters.get(column, np.nan)
                                                 for w in result.workers]))
            rows.append(row)
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def model_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([asdict(m) for m in self.model], columns=MODEL_COLUMNS)
        frame = frame.astype({"payload_bytes": "Int64", "k": "Int64"})
        mhz = self.metadata.get("machine_extra", {}).get("cpu_mhz_nominal")
        if mhz:  # cycles at the nominal clock: a VM does not show the real one
            is_ns = frame.unit.str.startswith("ns")
            frame["value_cycles"] = (frame.value * mhz / 1000).where(is_ns)
        return frame

    def pyperf_suite(self) -> pyperf.BenchmarkSuite | None:
        benchmarks = []
        for result in self.measured():
            if result.case.unit != "ns":
                continue  # pyperf's compare would read bytes or ratios as times
            if any(v <= 0 for w in result.workers for v in w.values):
                continue  # a difference (C0 less an empty loop) can dip to 0; pyperf refuses it
            runs = [
                pyperf.Run(
                    [v * 1e-9 for v in worker.values],
                    warmups=[(worker.loops, v * 1e-9) for v in worker.warmups],
                    metadata={"name": result.case.name, "loops": worker.loops, "unit": "second",
                              "description": f"{result.case.metric} per operation",
                              **self._machine_tags()},
                    collect_metadata=False,
                )
                for worker in result.workers
            ]
            benchmarks.append(pyperf.Benchmark(runs))
        return pyperf.BenchmarkSuite(benchmarks) if benchmarks else None

    def _machine_tags(self) -> dict[str, str]:
        """The fingerprint as pyperf metadata, so ``compare`` can check pyperf.json too."""
        return {f"ipcbench_{k}": str(v) for k, v in self.metadata.get("machine", {}).items()}

    def save(self, folder: Path) -> None:
        self.results_frame().to_csv(folder / "results.csv", index=False)
        self.samples_frame().to_csv(folder / "samples.csv", index=False)
        self.save_model(folder)
        (folder / "metadata.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        suite = self.pyperf_suite()
        if suite is not None:
            suite.dump(str(folder / "pyperf.json"), replace=True)

    def save_model(self, folder: Path) -> None:
        """``model.csv`` and one CSV per derived table (``ipcbench fit`` rewrites these)."""
        self.model_frame().to_csv(folder / "model.csv", index=False)
        for name, table in self.tables.items():
            table.to_csv(folder / f"{name}.csv", index=False)

    @classmethod
    def load(cls, folder: Path) -> RunData:
        """Rebuild a run from its folder; UsageError when the folder is not a run."""
        if not folder.is_dir():
            raise UsageError(f"{folder}: no such run folder")
        needed = ["metadata.json", "results.csv", "samples.csv"]
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise UsageError(f"{folder}: not a run folder (missing {', '.join(missing)})")
        try:
            metadata = json.loads((folder / "metadata.json").read_text())
            results = pd.read_csv(folder / "results.csv", keep_default_na=False, na_values=[""])
            samples = pd.read_csv(folder / "samples.csv")
        except (ValueError, OSError) as exc:
            raise UsageError(f"{folder}: unreadable run files: {exc}") from None
        results, samples = _with_defaults(results), _with_defaults(samples)
        absent = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
        absent += [c for c in ("status", "note", *CASE_COLUMNS) if c not in results.columns]
        if absent:
            raise UsageError(f"{folder}: run files lack column {absent[0]!r}")
        return cls(metadata, _cases_from(results, samples))


def _with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns newer than the run that wrote the file get the Case defaults."""
    frame = frame.copy()
    for column in ("unit", "variant", "level", "seed", "duration_s"):
        default = Case.__dataclass_fields__[column].default
        if column not in frame.columns:
            frame[column] = default
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].astype(object).fillna("").astype(str)
    frame.loc[frame.unit == "", "unit"] = "ns"
    return frame


def _cases_from(results: pd.DataFrame, samples: pd.DataFrame) -> list[CaseResult]:
    by_case = {key: rows for key, rows in samples.groupby(CASE_COLUMNS, sort=False,
                                                          dropna=False)}
    cases = []
    for row in results.to_dict("records"):
        case = Case.from_dict({c: row[c] for c in CASE_COLUMNS})
        key = tuple(row[c] for c in CASE_COLUMNS)
        workers = []
        if row["status"] == "ok" and key in by_case:
            for _, rows in by_case[key].groupby("worker"):
                workers.append(WorkerResult(
                    loops=int(rows.loops.iloc[0]),
                    values=rows.sort_values("batch").value.tolist(),
                    warmups=[],
                    counters={c: float(rows[c].iloc[0]) for c in COUNTER_COLUMNS
                              if not np.isnan(rows[c].iloc[0])},
                ))
        note = row["note"] if isinstance(row["note"], str) else ""
        cases.append(CaseResult(case, row["status"], note, workers))
    return cases
