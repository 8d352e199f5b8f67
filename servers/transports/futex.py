"""``futex``: shared memory holding the frame, and a futex word per direction as the
doorbell: FUTEX_WAKE and FUTEX_WAIT through libc's ``syscall``, by ctypes.

Python has no futex call and no maintained binding offers one, so each ring and each
wait is a ctypes foreign call: its own cost (``ipcbench doctor`` measures it) is part
of what this transport measures. The words are shared between processes, so the calls
are not FUTEX_PRIVATE. A ring always makes the wake call, waiter or not, as the native
reference does.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
from collections.abc import Callable
from functools import partial

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerTimeout,
    Placement,
    Recv,
    Send,
    Transport,
)
from servers.transports.shm import AreaChannel, HeaderedAreaLink, shm_capacity

# x86-64 only: its stores are seen in order, so the frame written before the futex word
# is there when the peer sees the word. A weakly ordered CPU would need a barrier that
# Python cannot make; there the transport is refused with the reason.
SYS_FUTEX = {"x86_64": 202}
FUTEX_WAIT, FUTEX_WAKE = 0, 1
HEADER = 8  # two 32-bit futex words ahead of the frame: [to server, to client]
Syscall = Callable[..., int]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def futex_syscall() -> Syscall | None:
    """``syscall(SYS_futex, ...)`` as a Python callable; None where the number is unknown."""
    number = SYS_FUTEX.get(platform.machine())
    if number is None:
        return None
    call = ctypes.CDLL(None, use_errno=True).syscall
    call.restype = ctypes.c_long
    # syscall() reads every argument as a long. The callers pass ctypes objects made
    # once (c_long, c_void_p): no argtypes to convert through on every call (that halves
    # the call's cost), and no Python int passed as a 32-bit C int.
    return partial(call, ctypes.c_long(number))


class Doorbell:
    """One futex word: ``ring`` sets it and wakes the waiter; ``wait`` sleeps while it is
    0, then clears it. Strict ping-pong: one ringer, one waiter, one ring pending at most."""

    def __init__(self, area: mmap.mmap, offset: int, syscall: Syscall, timeout: float) -> None:
        self._word = ctypes.c_uint32.from_buffer(area, offset)
        address = ctypes.c_void_p(ctypes.addressof(self._word))
        zero, null = ctypes.c_long(0), ctypes.c_void_p(None)
        self._wake = partial(syscall, address, ctypes.c_long(FUTEX_WAKE), ctypes.c_long(1),
                             null, null, zero)
        self._sleep = partial(syscall, address, ctypes.c_long(FUTEX_WAIT), zero)
        whole, part = divmod(timeout, 1.0)
        self._timeout = Timespec(int(whole), int(part * 1e9))
        self._forever, self._bounded = null, ctypes.c_void_p(ctypes.addressof(self._timeout))
        self._null, self._zero = null, zero

    def ring(self) -> None:
        self._word.value = 1
        self._wake()

    def wait(self) -> None:
        word, sleep, args = self._word, self._sleep, (self._forever, self._null, self._zero)
        while not word.value:  # EAGAIN (rung already), EINTR, a spurious wake: look again
            if sleep(*args) == -1:
                _check(ctypes.get_errno())
        word.value = 0

    def wait_checked(self) -> None:
        word, sleep, args = self._word, self._sleep, (self._bounded, self._null, self._zero)
        while not word.value:
            if sleep(*args) == -1:
                err = ctypes.get_errno()
                if err == errno.ETIMEDOUT:
                    raise PeerTimeout("no doorbell within the timeout (a futex gives no EOF)")
                _check(err)
        word.value = 0

    def release(self) -> None:
        del self._word  # the mapping cannot close while a ctypes view holds it


def _check(err: int) -> None:
    """A wait may end early (EAGAIN: rung already; EINTR: a signal) and look again; any
    other error (ENOSYS under seccomp, EFAULT) would loop for ever: raise it."""
    if err not in (errno.EAGAIN, errno.EINTR, 0):
        raise OSError(err, f"futex wait: {os.strerror(err)}")


class FutexChannel(AreaChannel):
    def __init__(self, area: memoryview, ring: Doorbell, wait: Doorbell) -> None:
        super().__init__(area, ring.ring)
        self._doorbells = (ring, wait)
        self._wait = wait

    def recv(self) -> Buffer:
        self._wait.wait_checked()
        return self._area

    def timed_ops(self) -> tuple[Send, Recv | None]:
        return self.send, self._wait.wait  # the batch watchdog ends a wait on a dead peer

    def close(self) -> None:
        for doorbell in self._doorbells:
            doorbell.release()


class FutexLink(HeaderedAreaLink):
    header = HEADER

    def __init__(self, names: Names, payload: int, timeout: float, syscall: Syscall) -> None:
        self._syscall = syscall
        super().__init__(names, payload, timeout)

    def _end(self, server: bool) -> Channel:
        ring_at, wait_at = (4, 0) if server else (0, 4)  # the words: [to server, to client]
        bell = partial(Doorbell, self._area.map, syscall=self._syscall, timeout=self._timeout)
        return FutexChannel(self._views()[1], bell(ring_at), bell(wait_at))


class FutexTransport(Transport):
    name = "futex"

    def max_payload(self) -> int:
        return shm_capacity() - HEADER

    def refuse(self, payload: int, placement: Placement, links: int = 1) -> str | None:
        if futex_syscall() is None:
            return f"no futex syscall number known for {platform.machine()}"
        return super().refuse(payload, placement, links)

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        syscall = futex_syscall()
        if syscall is None:
            raise OSError(errno.ENOSYS, f"no futex syscall number for {platform.machine()}")
        return FutexLink(names, payload, timeout, syscall)
