"""The machine reference: a fixed pipe loopback timed beside every batch.

One process writes 64 bytes into a pipe and reads them back, ``LOOPS`` times, before
the first timed batch and after each one; a batch is set against the mean of the two
around it (on a 2-vCPU guest that cut the spread of batch over reference by a
quarter against the one before alone). It
shares the kernel's syscall and pipe path with what the suite measures, but none of
the suite's transports: a change to ``servers/`` cannot move it, while the host's
slow and fast spells do. Of the references tried beside same-CPU round trips (this
loopback, a loopback of the case's own transport, a CPU loop, a bare syscall), it
cut the spread of one-second medians the most for most transports; README's "Noise"
section has the figures, and ``ipcbench doctor`` repeats the comparison anywhere.

It is timed by this thread's CPU clock, not the wall clock: the loop never blocks, so
the two agree, except that the CPU clock leaves out the time the hypervisor took the
vCPU away (steal) and other tasks' turns. In a noisy spell those hit a quarter of all
10-ms windows here, and a wall-clock reference then varied more between workers than
the cases it was meant to steady.
"""

from __future__ import annotations

import os
from itertools import repeat
from time import thread_time_ns

LOOPS = 2000  # about 1.2 ms: long enough that its own jitter stays below the host's
SIZE = 64
NAME = "pipe loopback"


class PipeReference:
    """A pipe held by this process; ``measure`` gives ns per write+read."""

    def __init__(self, loops: int = LOOPS) -> None:
        self._read, self._write = os.pipe()
        self._loops = loops
        self._message = b"r" * SIZE

    def measure(self) -> float:
        write, read, wfd, rfd, message = os.write, os.read, self._write, self._read, self._message
        start = thread_time_ns()
        for _ in repeat(None, self._loops):
            write(wfd, message)
            read(rfd, SIZE)
        return (thread_time_ns() - start) / self._loops

    def close(self) -> None:
        for fd in (self._read, self._write):
            os.close(fd)

    def __enter__(self) -> PipeReference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
