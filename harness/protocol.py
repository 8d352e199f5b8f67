"""The worker protocol: one task in on stdin, one reply out on stdout, both JSON.

The runner (and the tests, which run real workers) build the task here and read the
reply here, so the two ends cannot drift apart. Every worker imports this module:
like ``harness.records`` it keeps to the standard library's light modules.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from harness.records import Case, Settings, WorkerResult

# A probe may return, beside its metrics' values, one HDR histogram (the encoded V2
# "histoblob" text) of everything it timed: kept with its worker, in samples.csv.
HISTOGRAM = "hdr_histogram"


@dataclass(frozen=True)
class Task:
    """What one worker measures: one timed case, or the cases of one probe measurement."""

    cases: list[Case]
    settings: Settings
    prefix: str  # the run's IPC name prefix; the worker adds its pid
    journal: str  # where the worker records the IPC objects it creates (for cleanup)
    runner_pid: int  # the worker dies with it
    cpus: list[int]  # the CPUs the worker may use
    builder: str = ""  # a timed case's topology, ``module:function`` (harness.topology)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Task:
        data = json.loads(text)
        return cls([Case.from_dict(c) for c in data["cases"]], Settings(**data["settings"]),
                   str(data["prefix"]), str(data["journal"]), int(data["runner_pid"]),
                   [int(cpu) for cpu in data["cpus"]], str(data.get("builder", "")))


@dataclass(frozen=True)
class Reply:
    """A worker's answer: a result per case of its task, or why it could not measure."""

    results: list[WorkerResult]
    error: str = ""

    def to_json(self) -> str:
        if self.error:
            return json.dumps({"error": self.error})
        return json.dumps({"results": [r.to_dict() for r in self.results]})

    @classmethod
    def from_json(cls, text: str) -> Reply:
        """ValueError when ``text`` is not a reply (a worker that died mid-write)."""
        data = json.loads(text)
        if not isinstance(data, dict) or not ("error" in data or "results" in data):
            raise ValueError("not a worker reply")
        if "error" in data:
            return cls([], str(data["error"]))
        return cls([WorkerResult.from_dict(r) for r in data["results"]])
