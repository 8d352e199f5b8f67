"""The typed shapes every part of the harness passes around: cases, settings, results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

# Every worker imports this module: ``typing`` alone costs each of them milliseconds.
TYPE_CHECKING = False  # True for the type checker (pyproject: always_true)
if TYPE_CHECKING:
    from typing import Any, Literal

    Status = Literal["ok", "skipped", "error"]

PROBE = "probe"  # a case an experiment measures itself (footprint, boot, faults, ...)

if TYPE_CHECKING:
    Value = str | int | float
    # An experiment's own parameters of a case, in its declared order: (column, value).
    CaseParams = tuple[tuple[str, Value], ...]


@dataclass(frozen=True)
class Case:
    """One measured configuration: the unit a worker process runs.

    ``topology`` says how the processes are wired: ``echo`` (one server),
    ``chain`` and ``fanout`` (k servers), ``ring`` (a token around k processes,
    ``working_set`` bytes touched per hop), ``self`` (one process sends and
    receives: alpha) and ``compute`` (the handler in process, empty loop
    subtracted: C0). ``k`` counts servers, or processes for a ring.

    ``probe`` cases are measured by their experiment's own probe (entry-point
    group ``ipcbench.probes``), not by a timed loop: ``metric`` and ``unit`` say
    what a value is, ``duration_s`` how long one probe measures for, and
    ``params`` the experiment's own parameters of the case (a crash mode, a load
    rho, a graph's seed), each a column its experiment declares
    (``harness.experiment.param(..., column=...)``): no field of Case carries a
    meaning that differs between experiments.
    """

    experiment: str
    transport: str
    placement: str
    payload_bytes: int
    k: int = 1
    metric: str = "round_trip"
    workload: str = "echo"
    iterations: int = 0
    topology: str = "echo"
    working_set: int = 0
    sched_batch: bool = False
    unit: str = "ns"
    duration_s: float = 0.0
    params: CaseParams = ()
    workers: int = 0  # worker processes; 0: the suite's setting (not saved: how, not what)

    @property
    def name(self) -> str:
        if self.topology == PROBE:
            own = [f"{key}={_show(value)}" for key, value in self.params]
            # A probe's placement is named where it is not the usual same-cpu.
            where = [] if self.placement == "same-cpu" else [self.placement]
            return "/".join((
                self.experiment, self.transport, *where, f"k{self.k}", *own,
                *([f"{self.duration_s:g}s"] if self.duration_s else []),
                *([f"{self.payload_bytes}B"] if self.payload_bytes else []), self.metric))
        work = "" if self.workload == "echo" else f"/{self.workload}{self.iterations}"
        shape = "" if self.topology == "echo" else f"/{self.topology}"
        touch = f"/W{self.working_set}" if self.working_set else ""
        mine = "".join(f"/{key}={_show(value)}" for key, value in self.params)
        return (
            f"{self.experiment}/{self.transport}/{self.placement}/"
            f"{self.payload_bytes}B/k{self.k}{shape}{touch}{work}{mine}"
        )

    def param(self, column: str) -> Value:
        """One of its experiment's parameters; KeyError names the ones it has."""
        for key, value in self.params:
            if key == column:
                return value
        raise KeyError(f"{self.name}: no parameter {column!r} (it has: "
                       f"{', '.join(k for k, _ in self.params) or 'none'})")

    def row(self) -> dict[str, Any]:
        """The case as one row of results.csv and samples.csv: a column per field, and
        one per parameter of its experiment."""
        row = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("params", "workers")}
        return {**row, **dict(self.params)}

    @property
    def measurement(self) -> Case:
        """The case without its metric: probe cases that share it share one measurement."""
        return replace(self, metric="", unit="")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """A case from the worker protocol (``asdict``: params as a list of pairs)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["params"] = tuple((str(k), v) for k, v in values.get("params", ()))
        return cls(**values)


def _show(value: Value) -> str:
    """A parameter in a name: floats as repr writes them (no two share a name), a whole
    float without its ".0" (rho=0.5, service_us=200)."""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


@dataclass(frozen=True)
class Settings:
    """How hard to measure: the suite's ``[settings]`` table."""

    workers: int = 3
    batches: int = 5
    warmups: int = 1
    batch_ms: float = 20.0
    timeout_s: float = 10.0

    def check(self) -> None:
        # Upper bounds too: the runner's wait for a worker grows with their product, and
        # past about 24 days it no longer fits the millisecond int that poll() takes.
        for name, low in (("workers", 1), ("batches", 1), ("warmups", 0)):
            high = MAX_WORKERS if name == "workers" else MAX_BATCHES
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"settings.{name} must be between {low} and {high}")
        if not 0.1 <= self.batch_ms <= 10_000:
            raise ValueError("settings.batch_ms must be between 0.1 and 10000")
        if not 0.1 <= self.timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"settings.timeout_s must be between 0.1 and {MAX_TIMEOUT_S}")


MAX_WORKERS = 1024  # worker processes per case
MAX_BATCHES = 10_000  # timed batches (and warmup batches) per worker
MAX_TIMEOUT_S = 600  # one batch's wait; a whole worker's is bounded in harness.suite


@dataclass(frozen=True)
class BatchRecord:
    """What surrounded one timed batch: the machine reference and what disturbed it.

    ``foreign_ns`` is CPU time on the case's ``cpus`` that went to neither its
    processes nor idle (other tasks, interrupts, steal); ``other_switches`` are
    switches on those CPUs into any other task; ``run_delay_ns`` is the time the
    case's processes were runnable but not running; ``switches`` are the case's
    own; ``ref_ns`` is the reference (``harness.reference``): the mean of the ones
    timed just before and just after the batch; ``at_s`` is the monotonic clock at
    its start. ``disturbed`` is set once the run is measured.
    """

    at_s: float
    window_ns: float
    ref_ns: float
    switches: float
    steal_ns: float
    other_switches: float
    run_delay_ns: float
    foreign_ns: float
    cpus: int
    disturbed: bool = False

    @property
    def foreign_share(self) -> float:
        """Foreign (or stolen) CPU time over the CPU time the window offered."""
        offered = self.window_ns * self.cpus
        return max(self.foreign_ns, self.steal_ns, 0.0) / offered if offered > 0 else 0.0


BATCH_COLUMNS = [f.name for f in fields(BatchRecord)]


@dataclass
class WorkerResult:
    """What one fresh worker process measured: ns per op per batch, counters per op, and
    per batch its reference and disturbance (none for probe cases)."""

    loops: int
    values: list[float]
    warmups: list[float]
    counters: dict[str, float]
    batches: list[BatchRecord] = field(default_factory=list)
    # A probe's worker has no batches: what other work took over its whole life, measured
    # by the runner, and whether that set it aside (``harness.disturbance``).
    foreign_share: float | None = None
    disturbed: bool = False
    # The CPUs its placement resolved to: the client's and its (first) server's. None for
    # a probe, which places its own processes.
    client_cpu: int | None = None
    server_cpu: int | None = None
    histogram: str = ""  # a probe's HDR histogram of what it timed (encoded), if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerResult:
        """The worker protocol's result; a worker of an older version sends no batches."""
        batches = [BatchRecord(**b) for b in data.get("batches", [])]
        return cls(int(data["loops"]), list(data["values"]), list(data.get("warmups", [])),
                   dict(data.get("counters", {})), batches, data.get("foreign_share"),
                   bool(data.get("disturbed", False)), data.get("client_cpu"),
                   data.get("server_cpu"), str(data.get("histogram", "")))

    def kept(self, keep_disturbed: bool = False) -> list[float]:
        """The batch values the statistics use: undisturbed ones unless told otherwise."""
        if keep_disturbed:
            return self.values
        if not self.batches:  # a probe's worker: kept or set aside whole
            return [] if self.disturbed else self.values
        return [v for v, b in zip(self.values, self.batches, strict=True) if not b.disturbed]


@dataclass
class CaseResult:
    case: Case
    status: Status = "ok"
    note: str = ""
    workers: list[WorkerResult] = field(default_factory=list)
