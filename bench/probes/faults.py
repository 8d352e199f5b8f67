"""Crash servers under a steady request load; restart them; let a client measure availability.

One process (the worker) is the client, the supervisor and the injector of S stateful
servers (``servers.faults``). It is a single-threaded event loop (no threads: it forks):
``select`` over the servers' reply channels, one pidfd per server, and the next probe's and
next crash's deadlines. Every request carries an id and a CRC; every reply is checked (id,
CRC, payload echoed, the server's whole state).

- Load: each live server always has one APPLY outstanding (closed loop), so a crash
  usually finds a request in flight.
- Probes: a Poisson schedule of its own (``PROBE_RATE``, absolute times, drawn independently
  of crashes). A probe is one APPLY to every server (a system-level request needs every
  service); each waits only behind the one request its server already has. The probe is
  *available* when every reply is correct, arrives within ``DEADLINE_NS`` of the probe's
  scheduled time, and comes from a server process that was already up at that time (the
  reply's ``since``). Without the last rule a probe scheduled in the last D of an outage
  would count as up: the observable would be (1 + lambda D)/(1 + lambda d), not the
  formula's A. ``availability_measured`` = available probes / probes; Poisson probes see
  time averages (PASTA). The deadline-only figure is kept beside it.
- Crashes: Poisson with rate lambda (``crash_rate``) per second of up time: the next
  failure clock starts when the system is whole again (renewal model, one crash at a
  time). ``kill`` sends SIGKILL; ``raise`` plants a bug (SIGUSR1) that makes the server's
  next APPLY raise after the state is committed and before the reply.
- Recovery, all on one clock: the supervisor sees the death on the victim's pidfd
  (detect), takes any reply the dead server wrote, reaps it, forks a replacement into the
  same slot of shared state (restart), and sends it a health check (QUERY) whose good reply
  ends the outage. d = injection -> that reply. The request in flight is then retried: if
  the dead server had applied it the new one answers from the stored state
  (``deduplicated_retries``), otherwise it applies it.
- Exactly once: after each window the loop drains, and each slot's log of applied ids (in
  its shared state) is compared with the ids the client was answered (``exactly_once``):
  ``lost_requests`` and ``duplicate_requests`` must be 0.
- The monolithic reboot (``t_r``), timed after each window: SIGKILL every server, reap them,
  lose every state, fork the whole set again, re-send every server's state from the client
  and get a good reply from each.

The predicted availability (``bench.faults``) is 1/(1 + lambda*d) from the configured
lambda and the d's of the restarts; the measured one comes only from the probes' replies.
"""

from __future__ import annotations

import os
import random
import select
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from time import monotonic_ns

import posix_ipc

from harness.names import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor
from servers.faults import (
    APPLY,
    EXIT_FAULT,
    OK,
    QUERY,
    REPLAYED,
    RESTORE,
    Codec,
    StateArea,
    advance,
    body,
    faulty_role,
    frame_size,
    unpack,
)
from servers.transports import Channel, get_transport
from servers.transports.base import Kind, PeerGone, PeerTimeout, create_new

MODES = ("kill", "raise")
PROBE_RATE = 250.0  # probes per second: sparse enough that an outage queues about one
DEADLINE_NS = 1_000_000  # a probe's replies must be in within 1 ms of its scheduled time
LOG_PER_S, LOG_SPARE = 50_000, 16_384  # state log entries per slot: per window second, spare
TIMES = ("restart_d", "restart_detect", "restart_spawn", "restart_reply")
RATIOS = ("availability_measured", "availability_predicted", "availability_deadline_only")
COUNTS = ("crashes_injected", "window_crashes", "restarts", "retried_requests",
          "deduplicated_retries", "requests_answered", "lost_requests", "duplicate_requests",
          "corrupt_replies", "probes", "probes_available")
WINDOW = ("window_s", "downtime_ns")  # the window actually run, and its time down


def exactly_once(answered: Iterable[int], applied: Iterable[int]) -> tuple[int, int]:
    """(lost, duplicated) of a server's requests: ids the client was answered that its
    state chain lacks, and applications beyond one per answered id (twice, or unasked)."""
    times = Counter(applied)
    expected = set(answered)
    lost = sum(1 for ident in expected if times[ident] == 0)
    duplicated = sum(n - 1 if ident in expected else n for ident, n in times.items())
    return lost, duplicated


@dataclass
class Crash:
    victim: int
    t_crash: int
    t_detect: int = 0
    t_ready: int = 0
    t_good: int = 0


@dataclass
class Probe:
    due: int
    waiting: int
    late: bool = False  # a reply after the deadline
    stale: bool = False  # a reply from a process that came up after the probe was due
    bad: bool = False  # a reply that failed a check


@dataclass
class Request:
    ident: int
    frame: bytes
    expected: tuple[int, int]  # (acc, count) once applied
    probe: Probe | None = None
    retried: bool = False


@dataclass
class Slot:
    """One service: its state area (kept across restarts) and its current process."""

    area: StateArea
    pid: int = 0
    pidfd: int = -1
    channel: Channel | None = None
    rfd: int = -1
    live: bool = False  # no EOF or EPIPE seen on the channel
    acc: int = 0  # the state the client has seen answered
    count: int = 0
    outstanding: Request | None = None
    queue: deque[Request] = field(default_factory=deque)
    answered: list[int] = field(default_factory=list)  # ids answered since the last audit
    audited: int = 0  # requests of the state log already audited


class FaultLoad:
    """The client, its supervisor and its injector for one worker."""

    def __init__(self, sup: Supervisor, case: Case, timeout_s: float) -> None:
        mode = case.param("mode")
        if mode not in MODES:
            raise ValueError(f"faults: unknown mode {mode!r} (known: kill, raise)")
        self.sup = sup
        self.transport = get_transport(case.transport)
        self.n = case.k
        self.payload = case.payload_bytes
        self.frame = frame_size(self.payload)
        self.kind = str(mode)
        self.rate = float(case.param("crash_rate"))
        self.log_capacity = int(case.duration_s * LOG_PER_S) + LOG_SPARE
        self.timeout_s = timeout_s
        self.codec = Codec(self.payload)
        self.message = os.urandom(self.payload)
        self.rng = random.Random()
        self.slots: list[Slot] = []
        self.next_id = 0
        self.crash: Crash | None = None
        self.crash_due = 0
        self.probe_due = 0
        self.watchdog = 0
        self.done: list[Crash] = []
        self.counts = dict.fromkeys(COUNTS, 0)
        self.deadline_only = 0  # probes whose replies were correct and in time

    # ---- servers -------------------------------------------------------------------
    def boot(self) -> None:
        for _ in range(self.n):
            area = create_new(self.sup.names, Kind.SHM, "faults-state",
                              partial(StateArea, log_capacity=self.log_capacity),
                              posix_ipc.ExistentialError)
            self.slots.append(Slot(area))
        for slot in self.slots:
            self.spawn(slot)

    def spawn(self, slot: Slot) -> None:
        """Fork a server into ``slot``: it resumes from the slot's state area."""
        link = self.sup.open(self.transport, self.frame)
        others = [s for s in self.slots if s is not slot]

        def role() -> Callable[[], None]:
            for other in others:  # a server can reach its own state only
                other.area.close()
                if other.pidfd >= 0:
                    os.close(other.pidfd)
            return faulty_role(link.server(), self.payload, slot.area)

        slot.pid = self.sup.spawn(role, keep_links=(link,))
        self.sup.forget([link])
        slot.pidfd = os.pidfd_open(slot.pid)
        slot.channel = self.sup.take(link.client())
        slot.rfd = slot.channel.fileno()  # type: ignore[attr-defined]  # pipe or uds: a stream
        slot.live = True

    def reap(self, slot: Slot, kind: str) -> None:
        """Reap the slot's dead server (it must have died of ``kind``) and drop its ends."""
        ready, _, _ = select.select([slot.pidfd], [], [], self.timeout_s)
        if not ready:
            raise PeerTimeout(f"faults: server {slot.pid} still alive {self.timeout_s:g} s on")
        _, status = os.waitpid(slot.pid, 0)
        os.close(slot.pidfd)
        slot.pidfd = -1
        assert slot.channel is not None
        self.sup.discard(slot.pid, slot.channel)
        slot.channel, slot.rfd, slot.live = None, -1, False
        expected = (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                    if kind == "kill" else
                    os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_FAULT)
        if not expected:
            raise RuntimeError(f"faults: server {slot.pid} ended with status {status:#x}, "
                               f"not by the injected {kind}")

    def ask(self, slot: Slot, op: int, acc: int = 0, count: int = 0) -> tuple[int, ...]:
        """A control request (QUERY, RESTORE), answered within the timeout, checked."""
        assert slot.channel is not None
        ident = self.new_id()
        slot.channel.send(self.codec.pack(ident, op, acc, count))
        ready, _, _ = select.select([slot.rfd], [], [], self.timeout_s)
        if not ready:
            raise PeerTimeout(f"faults: server {slot.pid} did not answer within "
                              f"{self.timeout_s:g} s")
        head = unpack(slot.channel.recv())
        if head is None or head[:2] != (ident, OK):
            raise RuntimeError(f"faults: server {slot.pid} gave a bad answer to op {op}")
        return head

    # ---- the injector and the recovery -----------------------------------------------
    def inject(self, now: int) -> None:
        victim = self.rng.randrange(self.n)
        self.crash = Crash(victim, now)
        self.counts["crashes_injected"] += 1
        os.kill(self.slots[victim].pid,
                signal.SIGKILL if self.kind == "kill" else signal.SIGUSR1)

    def up_time(self) -> int:
        """An exponential up time, ns (no crashes at all when lambda is 0)."""
        return int(self.rng.expovariate(self.rate) * 1e9) if self.rate > 0 else 1 << 62

    def recover(self, i: int) -> None:
        slot, crash = self.slots[i], self.crash
        if crash is None or crash.victim != i:
            raise RuntimeError(f"faults: server {slot.pid} died with no crash injected")
        crash.t_detect = monotonic_ns()
        if slot.live and select.select([slot.rfd], [], [], 0)[0]:
            self.receive(slot)  # a reply the server wrote before it died
        self.reap(slot, self.kind)
        self.spawn(slot)
        crash.t_ready = monotonic_ns()
        _, _, acc, count, _ = self.ask(slot, QUERY)  # the health check
        pending = slot.outstanding
        if (acc, count) != (slot.acc, slot.count) and (
                pending is None or (acc, count) != pending.expected):
            raise RuntimeError(f"faults: the server restarted in slot {i} did not resume its "
                               f"state ({count} requests, the client saw {slot.count})")
        crash.t_good = now = monotonic_ns()
        self.counts["restarts"] += 1
        self.done.append(crash)
        self.crash = None
        self.crash_due = now + self.up_time()  # up again: the next failure clock starts
        self.watchdog = now + int(self.timeout_s * 1e9)
        if pending is not None:
            pending.retried = True
            self.counts["retried_requests"] += 1
            self.send(slot, pending)

    # ---- requests --------------------------------------------------------------------
    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def request(self, slot: Slot, probe: Probe | None = None) -> Request:
        ident = self.new_id()
        frame = bytes(self.codec.pack(ident, APPLY, 0, 0, self.message))
        return Request(ident, frame, (0, 0), probe)

    def send(self, slot: Slot, request: Request) -> None:
        if not request.retried:
            request.expected = (advance(slot.acc, request.frame), slot.count + 1)
        slot.outstanding = request
        assert slot.channel is not None
        try:
            slot.channel.send(request.frame)
        except PeerGone:
            slot.live = False  # kept outstanding: retried once the slot is restarted

    def pump(self, loading: bool) -> None:
        for slot in self.slots:
            if slot.live and slot.outstanding is None:
                if slot.queue:
                    self.send(slot, slot.queue.popleft())
                elif loading:
                    self.send(slot, self.request(slot))

    def schedule_probe(self) -> None:
        probe = Probe(self.probe_due, self.n)
        for slot in self.slots:
            slot.queue.append(self.request(slot, probe))
        self.counts["probes"] += 1
        self.probe_due += int(self.rng.expovariate(PROBE_RATE) * 1e9)

    def receive(self, slot: Slot) -> None:
        assert slot.channel is not None
        try:
            reply = slot.channel.recv()
        except PeerGone:
            slot.live = False  # dead or dying: its pidfd will say so
            return
        now = monotonic_ns()
        request = slot.outstanding
        if request is None:
            raise RuntimeError(f"faults: server {slot.pid} answered nothing asked")
        slot.outstanding = None
        head = unpack(reply)
        if head is None:
            raise RuntimeError(f"faults: reply to request {request.ident} failed its checksum")
        ident, status, acc, count, since = head
        good = (ident == request.ident and (acc, count) == request.expected
                and (status == OK or (status == REPLAYED and request.retried))
                and body(reply) == self.message)
        if good:
            self.counts["requests_answered"] += 1
            self.counts["deduplicated_retries"] += status == REPLAYED
            self.watchdog = now + int(self.timeout_s * 1e9)
        else:
            self.counts["corrupt_replies"] += 1
        slot.acc, slot.count = acc, count  # re-synchronized: the audit counts the damage
        if ident == request.ident:
            slot.answered.append(ident)
        probe = request.probe
        if probe is not None:
            probe.waiting -= 1
            probe.late |= now - probe.due > DEADLINE_NS
            probe.stale |= since > probe.due
            probe.bad |= not good
            if probe.waiting == 0:
                in_time = not (probe.late or probe.bad)
                self.deadline_only += in_time
                self.counts["probes_available"] += in_time and not probe.stale

    # ---- the loop ----------------------------------------------------------------------
    def idle(self) -> bool:
        return all(s.outstanding is None and not s.queue for s in self.slots)

    def run(self, end: int, probing: bool = False, injecting: bool = False,
            loading: bool = True) -> None:
        """Serve until ``end`` with no crash outstanding (and, unloaded, nothing pending)."""
        self.watchdog = monotonic_ns() + int(self.timeout_s * 1e9)
        while True:
            now = monotonic_ns()
            if now >= end and self.crash is None and (loading or self.idle()):
                return
            if now > self.watchdog:
                raise PeerTimeout(f"faults: no good reply for {self.timeout_s:g} s")
            if injecting and self.crash is None and self.crash_due <= now < end:
                self.inject(now)
            while probing and self.probe_due <= now and self.probe_due < end:
                self.schedule_probe()
            self.pump(loading)
            due = [end, self.watchdog]
            if injecting and self.crash is None:
                due.append(self.crash_due)
            if probing:
                due.append(self.probe_due)
            replies = [s.rfd for s in self.slots if s.live and s.outstanding is not None]
            deaths = [s.pidfd for s in self.slots]
            ready, _, _ = select.select(replies + deaths, [], [],
                                        max(min(due) - monotonic_ns(), 0) / 1e9)
            for slot in self.slots:  # replies first: a dying server's last one
                if slot.rfd in ready:
                    self.receive(slot)
            for i, slot in enumerate(self.slots):
                if slot.pidfd in ready:
                    self.recover(i)

    def window(self, duration_s: float) -> tuple[int, int]:
        """Load, probes and Poisson crashes for ``duration_s``, then drain; returns the
        window's (start, end), ns."""
        start = monotonic_ns()
        self.crash_due = start + self.up_time()
        self.probe_due = start + int(self.rng.expovariate(PROBE_RATE) * 1e9)
        end = start + int(duration_s * 1e9)
        self.run(end, probing=True, injecting=True)
        self.run(end, loading=False)
        return start, end

    def controlled_crash(self) -> None:
        """A crash outside the window, so that a batch without one still times d."""
        self.inject(monotonic_ns())
        self.run(0)
        self.run(0, loading=False)

    def audit(self) -> None:
        """Each slot's state chain (log of applied ids) against what the client was answered."""
        for slot in self.slots:
            _, acc, count = slot.area.load()
            lost, duplicated = exactly_once(slot.answered, slot.area.applied(slot.audited, count))
            self.counts["lost_requests"] += lost
            self.counts["duplicate_requests"] += duplicated
            if (acc, count) != (slot.acc, slot.count) and not (lost or duplicated):
                self.counts["corrupt_replies"] += 1
            slot.audited = count
            slot.answered.clear()

    def reboot(self) -> int:
        """The monolithic recovery: everything dies at once, its state with it; the client
        re-sends every server's state. Needs an idle, audited system."""
        start = monotonic_ns()
        for slot in self.slots:
            os.kill(slot.pid, signal.SIGKILL)
        for slot in self.slots:
            self.reap(slot, "kill")
        for slot in self.slots:
            slot.area.wipe()
            self.spawn(slot)
        for slot in self.slots:
            self.ask(slot, RESTORE, slot.acc, slot.count)
        return monotonic_ns() - start

    def close(self) -> None:
        for slot in self.slots:
            if slot.pidfd >= 0:
                os.close(slot.pidfd)
                slot.pidfd = -1
            slot.area.close()


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    out: dict[str, list[float]] = {m: [] for m in (*TIMES, *RATIOS, *COUNTS, *WINDOW,
                                                   "reboot_t_r")}
    with Supervisor(names, "same-cpu", timeout=settings.timeout_s) as sup:
        sup.pin_client()
        load = FaultLoad(sup, case, settings.timeout_s)
        try:
            load.boot()
            for _ in range(settings.batches):
                load.counts = dict.fromkeys(COUNTS, 0)
                load.deadline_only = 0
                first = len(load.done)
                start, end = load.window(case.duration_s)
                in_window = load.counts["window_crashes"] = load.counts["crashes_injected"]
                probes = load.counts["probes"]
                if probes:
                    out["availability_measured"].append(load.counts["probes_available"] / probes)
                    out["availability_deadline_only"].append(load.deadline_only / probes)
                if len(load.done) == first:
                    load.controlled_crash()
                load.audit()
                crashes = load.done[first:]
                for crash in crashes:
                    out["restart_d"].append(crash.t_good - crash.t_crash)
                    out["restart_detect"].append(crash.t_detect - crash.t_crash)
                    out["restart_spawn"].append(crash.t_ready - crash.t_detect)
                    out["restart_reply"].append(crash.t_good - crash.t_ready)
                # The renewal model with the crashes this window really had: lambda is
                # those crashes over the time up, d their mean restart; 1/(1 + lambda d)
                # is then the share of the window not spent restarting.
                down = sum(min(c.t_good, end) - c.t_crash for c in crashes[:in_window])
                out["window_s"].append((end - start) / 1e9)
                out["downtime_ns"].append(down)
                out["availability_predicted"].append(1 - down / (end - start))
                out["reboot_t_r"].append(load.reboot())
                load.audit()
                for name in COUNTS:
                    out[name].append(load.counts[name])
        finally:
            sup.stop()  # servers first, while their state areas are still mapped here
            load.close()
    return out
