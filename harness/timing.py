"""Timed loops: warmup, batch calibration, and the batches themselves.

The loops bind everything to locals and reuse one message buffer, so the
interpreter adds as little as possible to what the transport costs.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from time import perf_counter_ns
from types import FrameType

from servers.transports.base import Buffer, Loop, PeerTimeout, Recv, Send

MAX_LOOPS = 1 << 24


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Interrupt a blocking call that outlives ``seconds`` (a pipe has no kernel timeout).

    One timer per batch, not per message, so the timed loop pays nothing.
    """

    message = f"no progress for {seconds:g} s: the peer is stuck or gone"
    expired = []

    def expire(_signum: int, _frame: FrameType | None) -> None:
        expired.append(True)
        raise PeerTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Exception as exc:
        # posix_ipc replaces what a handler raised in its wait with its SignalError
        if expired and not isinstance(exc, PeerTimeout):
            raise PeerTimeout(message) from exc
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed_batch(send: Send, recv: Recv | None, message: Buffer, loops: int,
                loop: Loop | None = None) -> int:
    """Run ``loops`` round trips; return the elapsed nanoseconds. ``loop`` runs them all
    in C where the channel has one (``Channel.timed_loop``)."""
    clock = perf_counter_ns
    if loop is not None:
        start = clock()
        loop(loops)
        return clock() - start
    if recv is None:
        start = clock()
        for _ in repeat(None, loops):
            send(message)
        return clock() - start
    start = clock()
    for _ in repeat(None, loops):
        send(message)
        recv()
    return clock() - start


def calibrate(send: Send, recv: Recv | None, message: Buffer, target_ns: int,
              loop: Loop | None = None) -> int:
    """The loop count whose batch lasts about ``target_ns`` (pyperf's calibration idea)."""
    loops = 1
    while loops < MAX_LOOPS:
        elapsed = timed_batch(send, recv, message, loops, loop)
        if elapsed >= target_ns / 4:
            return max(1, min(MAX_LOOPS, round(loops * target_ns / max(elapsed, 1))))
        loops *= 2
    return MAX_LOOPS


def warm_up(
    send: Send, recv: Recv | None, message: Buffer, *, target_ns: int, warmups: int,
    timeout: float, loop: Loop | None = None,
) -> tuple[int, list[float]]:
    """Calibrate the batch size, then run the warmup batches; returns (loops, ns per op)."""
    with watchdog(timeout):
        loops = calibrate(send, recv, message, target_ns, loop)
    return loops, run_batches(send, recv, message, loops, warmups, timeout, loop)


def run_batches(
    send: Send, recv: Recv | None, message: Buffer, loops: int, batches: int, timeout: float,
    loop: Loop | None = None,
) -> list[float]:
    """Timed batches, each under its own watchdog; ns per op for each."""
    values = []
    for _ in range(batches):
        with watchdog(timeout):
            values.append(timed_batch(send, recv, message, loops, loop) / loops)
    return values
