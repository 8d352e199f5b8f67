"""``shm-spin``: shared memory with busy-polled sequence flags.

No system call per message, but each waiting side burns its CPU: it only
makes sense across CPUs, and its rows carry their CPU time. The data store
precedes the flag store in program order, which x86's TSO keeps visible in
that order to the other CPU.
"""

from __future__ import annotations

import os
import time

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerTimeout,
    Placement,
    Transport,
)
from servers.transports.shm import HeaderedAreaLink, shm_capacity

FLAG_C2S = 0  # offsets in 8-byte words; the two flags sit on separate cache lines
FLAG_S2C = 8
DATA_OFFSET = 128
SPINS_PER_CLOCK_CHECK = 1 << 14


class SpinChannel(Channel):
    def __init__(
        self, area: memoryview, out_flag: memoryview, in_flag: memoryview, timeout: float
    ) -> None:
        self.payload = len(area)
        self._area = area
        self._out = out_flag
        self._in = in_flag
        self._sent = out_flag[0]
        self._seen = in_flag[0]
        self._timeout = timeout

    def prepare(self, data: Buffer) -> Buffer:
        self._area[:] = data
        return self._area

    def send(self, data: Buffer) -> None:
        if data is not self._area:
            self._area[:] = data
        self._sent += 1
        self._out[0] = self._sent

    def recv(self) -> Buffer:
        want = self._seen + 1
        flag = self._in
        for _ in range(SPINS_PER_CLOCK_CHECK):  # the common case: no clock, no counter
            if flag[0] == want:
                break
        else:
            deadline = time.monotonic() + self._timeout
            while flag[0] != want:
                if time.monotonic() > deadline:
                    raise PeerTimeout("no flag change within the timeout (busy poll)")
        self._seen = want
        return self._area

    def close(self) -> None:
        for view in (self._area, self._out, self._in):
            view.release()


class SpinLink(HeaderedAreaLink):
    header = DATA_OFFSET
    tag = "spin"

    def _end(self, server: bool) -> Channel:
        out_word, in_word = (FLAG_S2C, FLAG_C2S) if server else (FLAG_C2S, FLAG_S2C)
        header, frame = self._views()
        words = header.cast("Q")
        return SpinChannel(frame, words[out_word : out_word + 1], words[in_word : in_word + 1],
                           self._timeout)


class SpinTransport(Transport):
    name = "shm-spin"

    def max_payload(self) -> int:
        return shm_capacity()

    def refuse(self, payload: int, placement: Placement, links: int = 1) -> str | None:
        if os.uname().machine not in ("x86_64", "AMD64", "i686", "i386"):
            return "the busy-poll protocol relies on x86's store ordering"
        if placement.name == "same-cpu":
            return "busy polling on one CPU spins away the time slice its peer needs"
        if placement.cpus_available < 2:
            return "busy polling needs two CPUs"
        return super().refuse(payload, placement, links)

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return SpinLink(names, payload, timeout)
