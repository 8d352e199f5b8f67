"""Crash servers under a steady request load; restart them; time the outage.

One client process (the worker) is also the supervisor of S stateful servers
(``servers.faults``) and sends them requests round robin, one at a time, each
with an id and a CRC, checking every reply (id, CRC, payload echoed, the
server's whole state). The injector is the client's interval timer: a crash
comes after an exponential up time (rate lambda = ``crash_rate``); the timer's
signal interrupts whatever the client does, so a crash often lands on a
request in flight. ``kill`` sends SIGKILL; ``raise`` plants a bug (SIGUSR1) that
raises in the handler of the server's next request, which exits non-zero.

Recovery of one crash, all on the client's clock:

- detect: the client's next request to the dead server fails (EOF or EPIPE);
- restart: reap it (the exit status must be the injected kind), fork a fresh
  server until it answers ``ready``, re-send its state (RESTORE);
- first reply: the request in flight (or the next) answered and verified.

d = detect + restart + first reply is the outage of that crash. The next up
time starts after it (a renewal process, one crash at a time), so the
measured availability 1 - sum(d)/T should match 1/(1 + lambda * mean d).
After each batch's window the monolithic reboot is timed: SIGKILL every
server at once, reap them all, start the whole set again, re-send every
server's state, and get a good reply from each (t_r).
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from types import FrameType

from harness.ipcnames import NameSource
from harness.records import Case, Settings
from harness.supervisor import Supervisor
from servers.faults import (
    APPLY,
    EXIT_FAULT,
    HEAD,
    OK,
    QUERY,
    RESTORE,
    Codec,
    advance,
    body,
    faulty_role,
    unpack,
)
from servers.transports import Channel, get_transport
from servers.transports.base import PeerGone, PeerTimeout

MODES = ("kill", "raise")
TIMES = ("restart_d", "restart_detect", "restart_spawn", "restart_reply")
COUNTS = ("crashes_injected", "restarts", "retried_requests", "requests_answered",
          "lost_requests", "duplicate_requests", "corrupt_replies")


@dataclass
class Crash:
    victim: int
    t_crash: int
    t_detect: int = 0
    t_ready: int = 0
    t_good: int = 0
    in_window: bool = True


class FaultLoad:
    """The client, its supervisor and its injector for one worker."""

    def __init__(self, sup: Supervisor, case: Case, timeout_s: float) -> None:
        if case.variant not in MODES:
            raise ValueError(f"faults: unknown mode {case.variant!r} (known: kill, raise)")
        self.sup = sup
        self.transport = get_transport(case.transport)
        self.n = case.k
        self.payload = case.payload_bytes
        self.kind = case.variant
        self.rate = case.level
        self.timeout_ns = int(timeout_s * 1e9)
        self.codec = Codec(self.payload)  # requests
        self.control = Codec(self.payload)  # RESTORE and QUERY, so a request survives them
        self.message = os.urandom(self.payload)
        self.rng = random.Random()
        self.channels: list[Channel] = []
        self.pids: list[int] = []
        self.state = [(0, 0)] * self.n  # (acc, count) the client holds for each server
        self.next_id = 0
        self.crash: Crash | None = None
        self.crash_due: int | None = None  # when the injector fires next (None: it is off)
        self.injecting = False  # inside a batch's window: arm again after each recovery
        self.watchdog_due = perf_counter_ns() + self.timeout_ns
        self.done: list[Crash] = []
        self.counts = dict.fromkeys(COUNTS, 0)

    # ---- the injector: one interval timer, crash due or no progress --------------
    def on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        now = perf_counter_ns()
        if self.crash_due is not None and now >= self.crash_due:
            self.crash_due = None
            self.inject(now)
        if now >= self.watchdog_due:
            raise PeerTimeout(f"faults: no good reply for {self.timeout_ns / 1e9:g} s")
        self.retime(now)

    def retime(self, now: int) -> None:
        due = self.watchdog_due if self.crash_due is None else min(self.crash_due,
                                                                   self.watchdog_due)
        signal.setitimer(signal.ITIMER_REAL, max(due - now, 1000) / 1e9)

    def arm(self) -> None:
        now = perf_counter_ns()
        self.crash_due = now + int(self.rng.expovariate(self.rate) * 1e9)
        self.retime(now)

    def inject(self, now: int, in_window: bool = True) -> None:
        victim = self.rng.randrange(self.n)
        self.crash = Crash(victim, now, in_window=in_window)
        self.counts["crashes_injected"] += 1
        os.kill(self.pids[victim], signal.SIGKILL if self.kind == "kill" else signal.SIGUSR1)

    # ---- servers -------------------------------------------------------------------
    def start(self) -> tuple[Channel, int]:
        frame = self.codec.size
        link = self.sup.open(self.transport, frame)

        def role() -> Callable[[], None]:
            return faulty_role(link.server(), self.payload)

        pid = self.sup.spawn(role, keep_links=(link,))
        self.sup.forget([link])
        return self.sup.take(link.client()), pid

    def bury(self, i: int) -> None:
        """Reap server ``i``, which must have died of the injected cause, and drop it."""
        pid = self.pids[i]
        _, status = os.waitpid(pid, 0)
        expected = (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                    if self.kind == "kill" or self.crash is None else
                    os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_FAULT)
        self.sup.servers = [s for s in self.sup.servers if s.pid != pid]
        channel = self.channels[i]
        channel.close()
        self.sup.channels.remove(channel)
        if not expected:
            raise RuntimeError(f"faults: server {pid} ended with status {status:#x}, "
                               f"not by the injected {self.kind}")

    def revive(self, i: int) -> None:
        self.channels[i], self.pids[i] = self.start()
        acc, count = self.state[i]
        head = unpack(self.ask(i, self.control.pack(self.new_id(), RESTORE, acc, count)))
        if head is None or head[1:] != (OK, acc, count):
            raise RuntimeError("faults: a restarted server did not take its state back")

    def boot(self) -> None:
        for _ in range(self.n):
            channel, pid = self.start()
            self.channels.append(channel)
            self.pids.append(pid)

    # ---- requests ------------------------------------------------------------------
    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def ask(self, i: int, frame: memoryview) -> memoryview:
        channel = self.channels[i]
        channel.send(frame)
        return memoryview(channel.recv())

    def request(self, i: int) -> None:
        """One APPLY to server ``i``, retried on a restarted server if it crashes."""
        frame = self.codec.pack(self.new_id(), APPLY, 0, 0, self.message)
        acc, count = self.state[i]
        expected = (advance(acc, frame), count + 1)
        while True:
            try:
                reply = self.ask(i, frame)
                break
            except PeerGone:
                self.recover(i)
                self.counts["retried_requests"] += 1
        now = perf_counter_ns()
        self.check(i, frame, reply, expected)
        self.watchdog_due = now + self.timeout_ns
        crash = self.crash
        if crash is not None and crash.victim == i and crash.t_ready:
            crash.t_good = now
            self.done.append(crash)
            self.crash = None
            if crash.in_window and self.injecting:
                self.arm()

    def check(self, i: int, frame: memoryview, reply: memoryview,
              expected: tuple[int, int]) -> None:
        head = unpack(reply)
        ident = HEAD.unpack_from(frame)[0]
        if head is None or head[0] != ident or head[1] != OK:
            self.counts["corrupt_replies"] += 1
            self.counts["lost_requests"] += 1
            if head is None:
                raise RuntimeError(f"faults: reply to request {ident} failed its checksum")
            self.state[i] = (head[2], head[3])  # re-synchronize, keep counting
            return
        state = (head[2], head[3])
        self.state[i] = state
        if state[1] > expected[1]:
            self.counts["duplicate_requests"] += state[1] - expected[1]
        elif state[1] < expected[1]:
            self.counts["lost_requests"] += expected[1] - state[1]
        elif state[0] != expected[0] or body(reply) != self.message:
            self.counts["corrupt_replies"] += 1
            self.counts["lost_requests"] += 1
        else:
            self.counts["requests_answered"] += 1

    def recover(self, i: int) -> None:
        crash = self.crash
        if crash is None or crash.victim != i or crash.t_detect:
            raise RuntimeError(f"faults: server {self.pids[i]} died with no crash injected")
        crash.t_detect = perf_counter_ns()
        self.bury(i)
        self.revive(i)
        self.counts["restarts"] += 1
        crash.t_ready = perf_counter_ns()

    # ---- one batch -----------------------------------------------------------------
    def window(self, duration_s: float) -> tuple[int, int]:
        """Requests round robin under Poisson crashes; (window length, outage) in ns."""
        start = perf_counter_ns()
        end = start + int(duration_s * 1e9)
        first = len(self.done)
        self.injecting = True
        self.arm()
        i = 0
        while True:
            if perf_counter_ns() >= end:
                self.injecting = False
                self.crash_due = None
                if self.crash is None:
                    break
            self.request(i)
            i = (i + 1) % self.n
        length = perf_counter_ns() - start
        return length, sum(c.t_good - c.t_crash for c in self.done[first:])

    def audit(self) -> None:
        """Every server's state must be what the client has seen answered."""
        for i in range(self.n):
            head = unpack(self.ask(i, self.control.pack(self.new_id(), QUERY, 0, 0)))
            if head is None:
                raise RuntimeError("faults: a state query failed its checksum")
            acc, count = self.state[i]
            if head[3] > count:
                self.counts["duplicate_requests"] += head[3] - count
            elif head[3] < count or head[2] != acc:
                self.counts["lost_requests"] += max(count - head[3], 1)

    def controlled_crash(self) -> None:
        """A crash outside the window, so that a batch without one still times d."""
        self.inject(perf_counter_ns(), in_window=False)
        i = 0
        while self.crash is not None:
            self.request(i)
            i = (i + 1) % self.n

    def reboot(self) -> int:
        """The monolithic recovery: everything dies at once and restarts with its state."""
        start = perf_counter_ns()
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
        for i in range(self.n):
            self.bury(i)
        for i in range(self.n):
            self.revive(i)
        for i in range(self.n):
            self.request(i)
        return perf_counter_ns() - start


def probe(cases: list[Case], settings: Settings, names: NameSource) -> dict[str, list[float]]:
    case = cases[0]
    out: dict[str, list[float]] = {m: [] for m in (*TIMES, *COUNTS, "reboot_t_r",
                                                   "availability_measured",
                                                   "availability_predicted")}
    with Supervisor(names, "same-cpu", timeout=settings.timeout_s) as sup:
        sup.pin_client()
        load = FaultLoad(sup, case, settings.timeout_s)
        previous = signal.signal(signal.SIGALRM, load.on_alarm)
        try:
            load.boot()
            for _ in range(settings.batches):
                load.counts = dict.fromkeys(COUNTS, 0)
                first = len(load.done)
                length, outage = load.window(case.duration_s)
                load.audit()
                in_window = load.done[first:]
                if not in_window:
                    load.controlled_crash()
                load.audit()
                crashes = load.done[first:]
                for crash in crashes:
                    out["restart_d"].append(crash.t_good - crash.t_crash)
                    out["restart_detect"].append(crash.t_detect - crash.t_crash)
                    out["restart_spawn"].append(crash.t_ready - crash.t_detect)
                    out["restart_reply"].append(crash.t_good - crash.t_ready)
                mean_d = sum(c.t_good - c.t_crash for c in crashes) / len(crashes) / 1e9
                out["availability_measured"].append(1 - outage / length)
                out["availability_predicted"].append(1 / (1 + case.level * mean_d))
                out["reboot_t_r"].append(load.reboot())
                load.audit()
                for name in COUNTS:
                    out[name].append(load.counts[name])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return out
