"""``signal``: shared memory holding the frame, and a real-time signal as the doorbell
(kill, then sigwaitinfo), as lmbench's lat_sig and ipc-bench's signal test use them.

Each direction has its own signal (to the server SIGRTMIN, to the client SIGRTMIN+1),
blocked in the process that takes an end, so it queues until that process waits for it
instead of running a handler. A process learns its peer's pid from the area's header,
where each end writes its own when it is taken. A dead peer shows as the wait's
timeout (a killed peer stays a zombie until reaped, so a ring does not fail), or as
ESRCH once it is reaped.

A process-directed signal goes to any thread that does not block it, and a real-time
signal's default action ends the process: an end is taken only in a process with one
thread (the worker and its servers), where the mask blocks it for the whole process.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from functools import partial

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerGone,
    PeerTimeout,
    Recv,
    Send,
    Transport,
)
from servers.transports.shm import AreaChannel, HeaderedAreaLink, shm_capacity

TO_SERVER, TO_CLIENT = signal.SIGRTMIN, signal.SIGRTMIN + 1
HEADER = 8  # the client's pid, then the server's (int32 each), ahead of the frame
PID = struct.Struct("i")


def drain(signum: int) -> None:
    """Drop what is pending of ``signum`` (a ring the last peer sent as it went)."""
    while signal.sigtimedwait({signum}, 0) is not None:
        pass


class SignalChannel(AreaChannel):
    def __init__(self, area: memoryview, header: memoryview, mine: int, peers: int,
                 ring_signal: int, wait_signal: int, timeout: float) -> None:
        super().__init__(area, self._first_ring)
        self._header, self._mine, self._peers = header, mine, peers
        self._ring_signal, self._wait_signal = ring_signal, wait_signal
        self._wait = {wait_signal}
        self._timeout = timeout
        self._peer = 0
        self._claimed_by = 0
        self._claim()

    def _claim(self) -> None:
        """Make this process the end's owner: its pid in the header, its signals blocked.
        Again in a process that uses an end another one took (a chain's next hop is
        taken by the supervisor and used by the server it forks)."""
        if self._claimed_by != (pid := os.getpid()):
            if threading.active_count() > 1:
                raise RuntimeError("the signal transport needs a process with one thread: "
                                   "another thread would take its doorbell and die of it")
            signal.pthread_sigmask(signal.SIG_BLOCK, {self._ring_signal, self._wait_signal})
            if not self._claimed_by:
                drain(self._wait_signal)  # a ring the last channel's peer sent as it went
            PID.pack_into(self._header, self._mine, pid)
            self._claimed_by = pid

    def _peer_pid(self) -> int:
        """The peer's pid once it has taken its end (it may not have, just after fork)."""
        deadline = time.monotonic() + self._timeout
        while not (pid := PID.unpack_from(self._header, self._peers)[0]):
            if time.monotonic() > deadline:
                raise PeerTimeout("the peer never took its end of the signal link")
            time.sleep(0.0005)
        return pid

    def _first_ring(self) -> None:
        self._peer = self._peer_pid()
        self._ring = partial(os.kill, self._peer, self._ring_signal)
        self._ring()

    def send(self, data: Buffer) -> None:
        self._claim()
        try:
            super().send(data)
        except ProcessLookupError:
            raise PeerGone(f"peer pid {self._peer} is gone") from None

    def recv(self) -> Buffer:
        self._claim()
        if signal.sigtimedwait(self._wait, self._timeout) is None:
            raise PeerTimeout("no doorbell within the timeout (a signal gives no EOF)")
        return self._area

    def timed_ops(self) -> tuple[Send, Recv | None]:
        self._claim()
        if not self._peer:
            self._peer = self._peer_pid()
            self._ring = partial(os.kill, self._peer, self._ring_signal)
        ring, area = self._ring, self._area

        def send(data: Buffer) -> None:
            if data is not area:
                area[:] = data
            ring()

        return send, partial(signal.sigwaitinfo, self._wait)

    def close(self) -> None:
        drain(self._wait_signal)  # still blocked: a late ring must not kill this process
        self._ring = _gone  # the first ring is a method of self: break the cycle, so the
        # mapping (and the fd it holds) goes with the last reference, not a later gc


def _gone() -> None:
    raise PeerGone("the channel is closed")


class SignalLink(HeaderedAreaLink):
    header = HEADER

    def _end(self, server: bool) -> Channel:
        mine, ring, wait = (PID.size, TO_CLIENT, TO_SERVER) if server else \
            (0, TO_SERVER, TO_CLIENT)
        header, frame = self._views()
        return SignalChannel(frame, header, mine, PID.size - mine, ring, wait, self._timeout)


class SignalTransport(Transport):
    name = "signal"

    def max_payload(self) -> int:
        return shm_capacity() - HEADER

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return SignalLink(names, payload, timeout)
