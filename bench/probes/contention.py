"""Lock contention probe: P sources with Poisson arrivals queue for one lock.

Transport ``shm``: P forked processes share a POSIX semaphore (value 1, a
futex in shared memory; unlinked right after creation). Transport ``call``:
P threads of this process share a ``threading.Lock``. Variant ``busy`` holds
the lock spinning on the clock (the holder occupies a CPU, and in threads the
GIL), ``sleep`` holds it in ``time.sleep`` (no CPU, GIL released), ``kill``
is ``busy`` with holders SIGKILLed mid-section (``shm`` only).

Each source follows an absolute schedule fixed in advance (Poisson arrivals
at rate lambda/P, exponential holds of mean ``service_us``), so sleep
overshoot never shifts the rate. A source still busy with its own earlier
request when the next one is due arrives on time in the books (it queues
behind itself, as in one M/M/1 queue); one that slept arrives when it wakes.
Every request's times land in an anonymous shared mapping, so a killed
source's books survive it. Sources set their timer slack to 1 ns, so a sleep
ends on time; requests due in the first relaxation time of the queue are a
warm-up, served but not counted.

The GIL: in threads a spinning holder keeps the interpreter (it would yield
only after the 5 ms switch interval), so a thread due to arrive cannot even
run until the holder releases and sleeps. The queue forms at the GIL (the
lag) instead of at the lock (time in acquire about 0); ``sleep`` holds
release the GIL and the threads queue at the lock as processes do.

A holder is killed only while stopped and seen HOLDING by its own live
process (the pid cell is written by the source itself); the probe reaps it,
clears its cells to IDLE, releases the semaphore on its behalf and starts a
fresh source at its next arrival. Waiters acquire with a timeout, so a lost
lock fails the measurement instead of hanging it; holds that overlap in the
books (two holders at once) fail it too. Times are recorded in ns.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import select
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from time import perf_counter_ns
from typing import Protocol

import posix_ipc

from bench.queueing import lindley
from harness.names import NameSource
from harness.records import Case, Settings
from servers.process import EXIT_ERROR, die_with_parent
from servers.transports.base import Kind, create_new

# Per source: state, pid, index of the request in hand. Per request: the times below.
HEADER = 3
FIELDS = ("sched", "arrival", "call", "acquired", "released")
IDLE, ACQUIRING, HOLDING, RELEASING, DONE = range(5)
EXIT_TIMEOUT = 4
KILL_EVERY_S = 0.1  # variant kill: one holder killed per 100 ms of arrivals (at least one)
KILL_SEARCH_NS = 250_000_000  # how long a kill waits for some source to hold the lock
START_DELAY_NS = 5_000_000  # t0 after every source is forked and waiting
PR_SET_TIMERSLACK = 29
_libc = ctypes.CDLL(None, use_errno=True)

VARIANTS = ("busy", "sleep", "kill")
# Times in ns (the unit ``ipcbench compare`` and pyperf judge); the report prints us.
METRICS = {"wait_ns": "ns", "delay_ns": "ns", "lock_wait_ns": "ns", "lag_ns": "ns",
           "hold_ns": "ns", "hold_cv2": "ratio", "handoff_ns": "ns", "handoffs": "count",
           "rate_hz": "Hz", "replay_ns": "ns", "acquisitions": "count", "scheduled": "count"}
KILL_METRICS = {"kills": "count", "recovered_locks": "count", "recovery_ns": "ns"}
CLOCK_NS = 1  # perf_counter_ns resolution: a grant may share the previous release's tick


class LockTimeout(RuntimeError):
    """A waiter gave up: the lock was lost (a holder died and nobody released it)."""


class ExclusionViolated(RuntimeError):
    """Two holds overlapped: the lock let two holders in, so no number of the run is valid."""


def schedule(rate_hz: float, service_ns: float, duration_ns: int,
             rng: random.Random) -> list[tuple[int, int]]:
    """One source's requests: (arrival offset from t0, hold), ns; Poisson, exponential."""
    plan: list[tuple[int, int]] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate_hz) * 1e9
        if t >= duration_ns:
            return plan
        plan.append((int(t), max(1, round(rng.expovariate(1.0) * service_ns))))


# --- the books: one int64 array in memory every source shares --------------------------

@dataclass
class Books:
    cells: memoryview
    plans: list[list[tuple[int, int]]]
    bases: list[int]

    @classmethod
    def create(cls, plans: list[list[tuple[int, int]]]) -> Books:
        bases = [0]
        for plan in plans:
            bases.append(bases[-1] + HEADER + len(FIELDS) * len(plan))
        area = mmap.mmap(-1, 8 * max(bases[-1], 1))  # MAP_SHARED|MAP_ANONYMOUS: forks share it
        return cls(memoryview(area).cast("q"), plans, bases[:-1])

    def base(self, source: int) -> int:
        return self.bases[source]

    def state(self, source: int) -> int:
        return self.cells[self.base(source)]

    def in_hand(self, source: int) -> int:
        return self.cells[self.base(source) + 2]

    def record(self, source: int, request: int) -> int:
        return self.base(source) + HEADER + len(FIELDS) * request

    def rows(self) -> list[tuple[int, ...]]:
        """Every finished request (released > 0), as (sched, arrival, call, acquired,
        released)."""
        out = []
        for source, plan in enumerate(self.plans):
            for request in range(len(plan)):
                at = self.record(source, request)
                row = tuple(self.cells[at:at + len(FIELDS)])
                if row[-1] > 0:
                    out.append(row)
        return out


class SemLock:
    """A POSIX semaphore used as a mutex, with threading.Lock's acquire/release."""

    def __init__(self, sem: posix_ipc.Semaphore) -> None:
        self.sem = sem

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        wait = (None if timeout < 0 else timeout) if blocking else 0  # -1: for ever
        try:
            self.sem.acquire(wait)
        except posix_ipc.BusyError:
            return False
        return True

    def release(self) -> None:
        self.sem.release()


class Lock(Protocol):  # threading.Lock's, which SemLock shares
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


def run_source(lock: Lock, books: Books, source: int, start: int, t0: int, busy: bool,
               timeout_s: float) -> None:
    """Serve one source's requests from ``start``: sleep to each arrival, queue, hold."""
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # wake on time, not up to 50 us late
    cells, head = books.cells, books.base(source)
    cells[head + 1] = threading.get_native_id()  # only the source writes it: "I am running"
    for request in range(start, len(books.plans[source])):
        offset, hold = books.plans[source][request]
        sched = t0 + offset
        now = perf_counter_ns()
        if now < sched:
            time.sleep((sched - now) / 1e9)
            arrival = perf_counter_ns()
        else:
            arrival = sched  # behind its own previous request: it was queued since sched
        cells[head + 2] = request
        cells[head] = ACQUIRING
        call = perf_counter_ns()
        if not lock.acquire(timeout=timeout_s):
            raise LockTimeout(f"source {source} waited {timeout_s:g} s for the lock")
        acquired = perf_counter_ns()
        cells[head] = HOLDING
        if busy:
            end = acquired + hold
            while perf_counter_ns() < end:
                pass
        else:
            time.sleep(hold / 1e9)
        released = perf_counter_ns()
        at = books.record(source, request)
        for i, value in enumerate((sched, arrival, call, acquired)):
            cells[at + i] = value
        cells[at + 4] = released  # last: a record with released > 0 is complete
        cells[head] = RELEASING
        lock.release()
        cells[head] = IDLE
    cells[head] = DONE


# --- summary of one measurement ----------------------------------------------------------

def check_exclusive(rows: Sequence[tuple[int, ...]]) -> None:
    """Raise ExclusionViolated unless the holds, in grant order, never overlap.

    Each holder reads ``acquired`` after its acquire returns and ``released``
    before it releases, so under a working lock each grant comes at or after
    the previous release (up to the clock's resolution).
    """
    by_grant = sorted(rows, key=lambda r: r[3])
    overlaps = [(a, b) for a, b in pairwise(by_grant) if b[3] + CLOCK_NS < a[4]]
    if overlaps:
        a, b = overlaps[0]
        raise ExclusionViolated(
            f"contention: mutual exclusion violated: {len(overlaps)} of {len(rows)} holds "
            f"overlap (e.g. granted at {b[3]} ns while the hold granted at {a[3]} ns ran "
            f"until {a[4]} ns); the run's numbers are void")


def summarize(rows: Sequence[tuple[int, ...]], since: int, window_ns: int,
              scheduled: int) -> dict[str, float]:
    """Metrics of one run from its requests (sched, arrival, call, acquired, released, ns).

    Requests scheduled before ``since`` are the warm-up: served (and replayed) so
    that the window starts with a queue in steady state, but not counted. Holds
    that overlap (the lock failed) raise ExclusionViolated instead of giving numbers.
    """
    check_exclusive(rows)
    counted = [r for r in rows if r[0] >= since]
    if not counted:
        raise RuntimeError("contention: no request finished (raise duration_s or rho)")
    n = len(counted)
    holds = [r[4] - r[3] for r in counted]
    hold = sum(holds) / n
    cv2 = sum((h - hold) ** 2 for h in holds) / n / hold ** 2
    slept = [r[1] - r[0] for r in counted if r[1] != r[0]]
    # A hand-off: the lock passes from one holder to a waiter that was blocked in acquire.
    by_grant = sorted(rows, key=lambda r: r[3])
    gaps = [b[3] - a[4] for a, b in pairwise(by_grant) if b[2] < a[4] and b[0] >= since]
    handoff = sum(gaps) / len(gaps) if gaps else 0.0
    by_arrival = sorted(rows, key=lambda r: r[1])
    replay = lindley([r[1] for r in by_arrival], [r[4] - r[3] for r in by_arrival], handoff)
    replayed = [w for w, r in zip(replay, by_arrival, strict=True) if r[0] >= since]
    return {
        "wait_ns": sum(r[3] - r[1] for r in counted) / n,
        "delay_ns": sum(r[3] - r[0] for r in counted) / n,
        "lock_wait_ns": sum(r[3] - r[2] for r in counted) / n,
        "lag_ns": sum(slept) / len(slept) if slept else 0.0,
        "hold_ns": hold,
        "hold_cv2": cv2,
        "handoff_ns": handoff,
        "handoffs": float(len(gaps)),
        "rate_hz": scheduled / (window_ns / 1e9),
        "replay_ns": sum(replayed) / n,
        "acquisitions": float(n),
        "scheduled": float(scheduled),
    }


def warm_up_ns(rho: float, service_us: float, duration_s: float) -> int:
    """About one relaxation time of M/M/1, s / (1 - sqrt(rho))^2, at most half the window."""
    relax = service_us * 1e3 / (1 - rho ** 0.5) ** 2
    return int(min(relax, duration_s * 1e9 / 2))


# --- the two ways to run the sources -----------------------------------------------------

def run_threads(books: Books, busy: bool, t0: int, deadline: int,
                timeout_s: float) -> None:
    lock = threading.Lock()
    errors: list[BaseException] = []

    def body(source: int) -> None:
        try:
            run_source(lock, books, source, 0, t0, busy, timeout_s)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True)
               for i in range(len(books.plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, (deadline - perf_counter_ns()) / 1e9))
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("contention: threads did not finish in time")


@dataclass
class Fleet:
    """The source processes of a ``shm`` run: forks them, watches them, recovers the lock."""

    lock: SemLock
    books: Books
    busy: bool
    timeout_s: float
    live: dict[int, tuple[int, int]]  # pid -> (source, pidfd)
    kills: int = 0  # holders this fleet SIGKILLed
    recovered: int = 0
    recovery_ns: int = 0
    released_at: int = 0  # when the last recovery released the lock

    def fork(self, source: int, start: int, t0: int | None, go_fd: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = EXIT_ERROR
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                die_with_parent(parent)
                if t0 is None:  # the first sources wait for the common start
                    t0 = int.from_bytes(os.read(go_fd, 8), "little")
                run_source(self.lock, self.books, source, start, t0, self.busy,
                           self.timeout_s)
                code = 0
            except LockTimeout:
                code = EXIT_TIMEOUT
            except BaseException as exc:  # the exit code says it; stderr says what
                os.write(2, f"contention source {source}: {type(exc).__name__}: {exc}\n".encode())
            finally:
                os._exit(code)
        self.live[pid] = (source, os.pidfd_open(pid))

    def reap(self, pid: int, status: int, t0: int, go_fd: int) -> None:
        """A source ended: done, or died holding the lock (recover it), or failed."""
        source, pidfd = self.live.pop(pid)
        os.close(pidfd)
        state = self.books.state(source)
        if os.waitstatus_to_exitcode(status) == 0 and state == DONE:
            return
        if state != HOLDING:
            code = os.waitstatus_to_exitcode(status)
            why = "lost the lock" if code == EXIT_TIMEOUT else f"exited {code}"
            raise RuntimeError(f"contention: source {source} {why} (state {state})")
        # It held the lock when it died: its request is void, the lock is released for it.
        request = self.books.in_hand(source)
        cells, head = self.books.cells, self.books.base(source)
        cells[self.books.record(source, request) + 4] = 0
        # Clear the dead source's cells first: a restarted source sleeps to its next
        # arrival before it writes them, and a stale HOLDING would get it killed and
        # "released" for although it holds nothing (two holders at once).
        cells[head], cells[head + 1], cells[head + 2] = IDLE, 0, -1
        self.lock.release()
        self.released_at = perf_counter_ns()
        self.recovered += 1
        if request + 1 < len(self.books.plans[source]):
            self.fork(source, request + 1, t0, go_fd)

    def holds(self, source: int, pid: int) -> bool:
        """The source's cells say HOLDING, written by ``pid`` (its live process) itself."""
        head = self.books.base(source)
        return self.books.cells[head] == HOLDING and self.books.cells[head + 1] == pid

    def kill_a_holder(self, t0: int, go_fd: int, give_up: int) -> None:
        """Stop a source seen HOLDING; if it still is, SIGKILL it and recover the lock."""
        while perf_counter_ns() < give_up:
            holders = [pid for pid, (s, _) in self.live.items() if self.holds(s, pid)]
            if not holders:
                if all(self.books.state(s) == DONE for s, _ in self.live.values()):
                    return
                time.sleep(0.0002)
                continue
            pid = holders[0]
            os.kill(pid, signal.SIGSTOP)
            _, status = os.waitpid(pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):  # it ended first
                self.reap(pid, status, t0, go_fd)
                continue
            if not self.holds(self.live[pid][0], pid):
                os.kill(pid, signal.SIGCONT)
                continue
            killed = perf_counter_ns()
            os.kill(pid, signal.SIGKILL)
            self.kills += 1
            _, status = os.waitpid(pid, 0)
            self.reap(pid, status, t0, go_fd)
            self.recovery_ns += self.released_at - killed  # kill, reap, release (no respawn)
            return

    def watch(self, t0: int, go_fd: int, deadline: int, kills: list[int]) -> None:
        while self.live:
            now = perf_counter_ns()
            if now > deadline:
                raise RuntimeError("contention: sources did not finish in time")
            if kills and now >= kills[0]:
                kills.pop(0)
                # No holder within the search time (all done, or rho tiny): skip this kill.
                self.kill_a_holder(t0, go_fd, min(deadline, now + KILL_SEARCH_NS))
                continue
            wake = min([deadline, *kills[:1]])
            fds = {fd: pid for pid, (_, fd) in self.live.items()}
            ready, _, _ = select.select(list(fds), [], [], max(0.0, (wake - now) / 1e9))
            for fd in ready:
                pid, status = os.waitpid(fds[fd], 0)
                self.reap(pid, status, t0, go_fd)

    def stop(self) -> None:
        for pid, (_, pidfd) in list(self.live.items()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(pidfd)
        self.live.clear()


def run_processes(books: Books, names: NameSource, busy: bool, kill: bool, duration_ns: int,
                  timeout_s: float) -> tuple[int, Fleet]:
    """Run the sources as processes; t0 and the fleet (its kills and recoveries)."""
    sem = create_new(names, Kind.SEM, "lock", partial(posix_ipc.Semaphore, flags=posix_ipc.O_CREX,
                                            initial_value=1), posix_ipc.ExistentialError)
    sem.unlink()  # the forks keep it mapped; nothing is left in /dev/shm
    go_r, go_w = os.pipe()
    fleet = Fleet(SemLock(sem), books, busy, timeout_s, {})
    try:
        for source in range(len(books.plans)):
            fleet.fork(source, 0, None, go_r)
        t0 = perf_counter_ns() + START_DELAY_NS
        os.write(go_w, t0.to_bytes(8, "little") * len(books.plans))
        count = max(1, round(duration_ns / 1e9 / KILL_EVERY_S)) if kill else 0
        kills = [t0 + duration_ns * (i + 1) // (count + 1) for i in range(count)]
        deadline = t0 + duration_ns + int(2 * timeout_s * 1e9)
        fleet.watch(t0, go_r, deadline, kills)
    finally:
        fleet.stop()
        os.close(go_r)
        os.close(go_w)
        sem.close()
    return t0, fleet


def measure(transport: str, variant: str, sources: int, rho: float, service_us: float,
            duration_s: float, timeout_s: float, names: NameSource,
            rng: random.Random) -> dict[str, float]:
    """One run: a warm-up, then ``duration_s`` of counted arrivals; the metrics."""
    if variant not in VARIANTS:
        raise ValueError(f"contention: unknown variant {variant!r}")
    if not 0 < rho < 1:
        raise ValueError(f"contention: rho must be in (0, 1), not {rho}")
    window, warm = int(duration_s * 1e9), warm_up_ns(rho, service_us, duration_s)
    rate = rho / (service_us * 1e-6)  # lambda = rho * mu, split over the sources
    plans = [schedule(rate / sources, service_us * 1e3, warm + window, rng)
             for _ in range(sources)]
    books = Books.create(plans)
    busy = variant != "sleep"
    values: dict[str, float] = {}
    if transport == "call":
        if variant == "kill":
            raise ValueError("contention: a thread cannot be killed; variant kill is shm only")
        t0 = perf_counter_ns() + START_DELAY_NS
        run_threads(books, busy, t0, t0 + warm + window + int(2 * timeout_s * 1e9), timeout_s)
    elif transport == "shm":
        t0, fleet = run_processes(books, names, busy, variant == "kill", warm + window,
                                  timeout_s)
        if variant == "kill":
            values = {"kills": float(fleet.kills), "recovered_locks": float(fleet.recovered),
                      "recovery_ns": fleet.recovery_ns / max(fleet.recovered, 1)}
    else:
        raise ValueError(f"contention: transport {transport!r} (known: call, shm)")
    scheduled = sum(1 for plan in plans for offset, _ in plan if offset >= warm)
    return {**summarize(books.rows(), t0 + warm, window, scheduled), **values}


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    rng = random.Random(os.urandom(16))  # every worker draws its own arrivals
    values = measure(case.transport, str(case.param("hold")), case.k,
                     float(case.param("rho")), float(case.param("service_us")),
                     case.duration_s, settings.timeout_s, names, rng)
    return {metric: [value] for metric, value in values.items()}

