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

from harness import columns as col
from harness import runfolder
from harness.experiment import ModelRow
from harness.records import BatchRecord, CaseResult, WorkerResult
from harness.stats import summarize

MODEL_COLUMNS = [f.name for f in fields(ModelRow)]
NATIVE_FILE = runfolder.NATIVE_FILE


@dataclass
class RunData:
    metadata: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    model: list[ModelRow] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    keep_disturbed: bool = False  # statistics over every batch, disturbed ones too
    raw_model: bool = False  # fit the model on raw values, not scaled to the reference
    notes: list[str] = field(default_factory=list)  # parts of the analysis that failed
    # ``--native-reference``: each round's suite and C round trip (native.csv)
    native: pd.DataFrame | None = None
    # A run's cases do not change once it is built: its frames are made once.
    _frames: dict[object, pd.DataFrame] = field(default_factory=dict, repr=False)

    def measured(self) -> list[CaseResult]:
        return [c for c in self.cases if c.status == "ok" and c.workers]

    def samples_frame(self) -> pd.DataFrame:
        """Every timed batch, disturbed ones included (``disturbed`` says which)."""
        if "samples" not in self._frames:
            self._frames["samples"] = self._samples()
        return self._frames["samples"]

    def _samples(self) -> pd.DataFrame:
        rows = []
        for result in self.measured():
            case = result.case.row()
            for w, worker in enumerate(result.workers):
                batches: list[BatchRecord | None] = [*worker.batches] or \
                    [None] * len(worker.values)
                for b, (value, batch) in enumerate(zip(worker.values, batches, strict=True)):
                    rows.append({**case, "worker": w, "batch": b, "loops": worker.loops,
                                 "value": value, "client_cpu": worker.client_cpu,
                                 "server_cpu": worker.server_cpu,
                                 "histogram": worker.histogram if b == 0 else "",
                                 **dict.fromkeys(col.COUNTER_COLUMNS, np.nan),
                                 **worker.counters, **_batch_fields(batch, worker)})
        return pd.DataFrame(rows, columns=col.sample_columns(self.parameter_columns()))

    def case_parameters(self) -> runfolder.Parameters:
        """Per experiment, its cases' own parameters and their kinds (metadata.json)."""
        found: runfolder.Parameters = {}
        for result in self.cases:
            own = found.setdefault(result.case.experiment, {})
            for name, value in result.case.params:
                own.setdefault(name, col.KIND_OF_TYPE[type(value)])
        return {name: own for name, own in found.items() if own}

    def parameter_columns(self) -> list[str]:
        return list(dict.fromkeys(c for own in self.case_parameters().values() for c in own))

    def kept_samples(self) -> pd.DataFrame:
        """The batches the statistics and the model use."""
        samples = self.samples_frame()
        if self.keep_disturbed:
            return samples
        return samples[~samples.disturbed.astype(bool)]

    def results_frame(self) -> pd.DataFrame:
        """One row per case: statistics over the kept batches, counters, status."""
        key = ("results", self.keep_disturbed)
        if key not in self._frames:
            self._frames[key] = self._results()
        return self._frames[key]

    def _results(self) -> pd.DataFrame:
        rows = []
        for result in self.cases:
            row: dict[str, Any] = {**result.case.row(), "status": result.status,
                                   "note": result.note}
            workers = [w for w in result.workers if w.kept(self.keep_disturbed)]
            if result.status == "ok" and workers:
                kept = [w.kept(self.keep_disturbed) for w in workers]
                values = np.concatenate(kept)
                groups = np.concatenate([[i] * len(k) for i, k in enumerate(kept)])
                row.update(asdict(summarize(values, groups, result.case.name)))
                for column in col.COUNTER_COLUMNS:
                    row[column] = float(np.mean([w.counters.get(column, np.nan)
                                                 for w in workers]))
                row.update(_disturbance(result.workers, self.keep_disturbed))
                row.update(client_cpu=workers[0].client_cpu, server_cpu=workers[0].server_cpu)
            rows.append(row)
        return pd.DataFrame(rows, columns=col.result_columns(self.parameter_columns()))

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
            workers = [w for w in result.workers if w.kept(self.keep_disturbed)]
            if result.case.unit != "ns" or not workers:
                continue  # pyperf's compare would read bytes or ratios as times
            if any(v <= 0 for w in workers for v in w.values):
                continue  # a difference (C0 less an empty loop) can dip to 0; pyperf refuses it
            runs = [
                pyperf.Run(
                    [v * 1e-9 for v in worker.kept(self.keep_disturbed)],
                    warmups=[(worker.loops, v * 1e-9) for v in worker.warmups],
                    metadata={"name": result.case.name, "loops": worker.loops, "unit": "second",
                              "description": f"{result.case.metric} per operation",
                              **self._machine_tags()},
                    collect_metadata=False,
                )
                for worker in workers
            ]
            benchmarks.append(pyperf.Benchmark(runs))
        return pyperf.BenchmarkSuite(benchmarks) if benchmarks else None

    def _machine_tags(self) -> dict[str, str]:
        """The fingerprint as pyperf metadata, so ``compare`` can check pyperf.json too."""
        return {f"ipcbench_{k}": str(v) for k, v in self.metadata.get("machine", {}).items()}

    def save(self, folder: Path) -> None:
        # Saved as today's format, whatever format the run was loaded from.
        self.metadata = {**self.metadata, "format_version": runfolder.FORMAT_VERSION,
                         "case_parameters": self.case_parameters()}
        self.results_frame().to_csv(folder / "results.csv", index=False)
        self.samples_frame().to_csv(folder / "samples.csv", index=False)
        self.save_model(folder)
        (folder / "metadata.json").write_text(json.dumps(self.metadata, indent=2, default=str))
        if self.native is not None:
            self.native.to_csv(folder / NATIVE_FILE, index=False)
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
        files = runfolder.read(folder)  # every file checked: UsageError names the bad cell
        return cls(files.metadata, _cases_from(files), native=runfolder.read_native(folder))


def _batch_fields(batch: BatchRecord | None, worker: WorkerResult) -> dict[str, Any]:
    if batch is None:  # a probe's value: no reference; disturbed as its worker was
        return {**dict.fromkeys(col.BATCH_COLUMNS, np.nan), "disturbed": worker.disturbed}
    return asdict(batch)


def _disturbance(workers: list[WorkerResult], keep_disturbed: bool) -> dict[str, float]:
    batches = [b for w in workers for b in w.batches]
    if not batches:  # a probe: its set-aside workers' values
        return {"batches_disturbed": sum(len(w.values) for w in workers if w.disturbed)}
    refs = [b.ref_ns for b in batches if keep_disturbed or not b.disturbed]
    return {"batches_disturbed": sum(b.disturbed for b in batches),
            "foreign_share": float(np.median([b.foreign_share for b in batches])),
            "ref_ns": float(np.median(refs)) if refs else np.nan}


def _batches_from(rows: pd.DataFrame) -> list[BatchRecord]:
    """A worker's batch records; none for probes and for runs older than them."""
    if not set(col.BATCH_COLUMNS) <= set(rows.columns) or rows.ref_ns.isna().all():
        return []
    return [BatchRecord(**{**{c: row[c] for c in col.BATCH_COLUMNS}, "cpus": int(row["cpus"]),
                           "disturbed": bool(row["disturbed"])})
            for row in rows[col.BATCH_COLUMNS].to_dict("records")]


def _cpu(value: float) -> int | None:
    return None if pd.isna(value) else int(value)


def _cases_from(files: runfolder.RunFiles) -> list[CaseResult]:
    results, samples = files.results, files.samples
    names = runfolder.case_names(samples, files.parameters) if len(samples) else None
    by_case = dict(iter(samples.groupby(names, sort=False))) if names is not None else {}
    cases = []
    for row in results.to_dict("records"):
        case = runfolder.case_of(row, files.parameters)
        workers = []
        if row["status"] == "ok" and case.name in by_case:
            for _, rows in by_case[case.name].groupby("worker"):
                rows = rows.sort_values("batch")
                batches = _batches_from(rows)
                workers.append(WorkerResult(
                    loops=int(rows.loops.iloc[0]),
                    values=rows.value.tolist(),
                    warmups=[],
                    counters={c: float(rows[c].iloc[0]) for c in col.COUNTER_COLUMNS
                              if not np.isnan(rows[c].iloc[0])},
                    batches=batches,
                    # a probe's worker is set aside whole: its rows all say so
                    disturbed=not batches and bool(rows.disturbed.any()),
                    client_cpu=_cpu(rows.client_cpu.iloc[0]),
                    server_cpu=_cpu(rows.server_cpu.iloc[0]),
                    histogram=rows.histogram.iloc[0],
                ))
        cases.append(CaseResult(case, row["status"], row["note"], workers))
    return cases
