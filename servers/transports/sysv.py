"""SysV IPC through ``sysv_ipc``: keys derived from journaled names, and what cleanup
needs to find an object again.

A SysV object has a key, not a name. Its key is a hash of a name that ``Names`` hands
out (so it is journaled under the run prefix before the object exists); cleanup hashes
the journal's names again and finds the objects in /proc/sysvipc, where ``ipcs`` reads
them, and removes them by id. A removed queue or semaphore set is gone at once, so
these live until the link closes: a SIGKILL leaves them for ``ipcbench cleanup``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import sysv_ipc

from servers.transports.base import Kind, Names, PeerGone, PeerTimeout, create_new

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

PROC_TABLES = {Kind.SYSV_MSG: "/proc/sysvipc/msg", Kind.SYSV_SEM: "/proc/sysvipc/sem",
               Kind.SYSV_SHM: "/proc/sysvipc/shm"}
REMOVE = {Kind.SYSV_MSG: sysv_ipc.remove_message_queue, Kind.SYSV_SEM: sysv_ipc.remove_semaphore,
          Kind.SYSV_SHM: sysv_ipc.remove_shared_memory}

def key_of(name: str) -> int:
    """The SysV key of a journaled name: never IPC_PRIVATE (0), and positive as a key_t
    (a C int) whatever sysv_ipc's own bounds."""
    return zlib.crc32(name.encode()) % 0x7FFFFFFF + 1


def create_keyed(names: Names, kind: str, tag: str, make: Callable[[int], T]) -> T:
    """``make(key)`` for the key of a fresh name; another name if that key is taken."""
    return create_new(names, kind, tag, lambda name: make(key_of(name)),
                      sysv_ipc.ExistentialError)


def remove(kind: str, ident: int) -> bool:
    """Remove the object ``ident`` of ``kind``; False if it was gone already."""
    try:
        REMOVE[kind](ident)
    except (sysv_ipc.ExistentialError, sysv_ipc.PermissionsError):
        return False
    return True


class Listed(NamedTuple):
    key: int
    ident: int
    creator_uid: int
    changed: int  # ctime: when it was made (or last IPC_SET), seconds since the epoch


def listed(kind: str) -> Iterator[Listed]:
    """Every object of ``kind``, as ``ipcs`` lists them."""
    try:
        with open(PROC_TABLES[kind]) as table:
            header = table.readline().split()
            at = {name: header.index(name) for name in ("key", "cuid", "ctime")}
            for line in table:
                fields = line.split()
                # the kernel prints a key as a signed int; keys are unsigned here
                yield Listed(int(fields[at["key"]]) & 0xFFFFFFFF, int(fields[1]),
                             int(fields[at["cuid"]]), int(fields[at["ctime"]]))
    except OSError:
        return


def wait_blocking(wait: Callable[[], T], timeout: float, what: str) -> T:
    """``wait()`` (a blocking call with no timeout of its own: msgrcv) bounded by an
    interval timer whose SIGALRM handler raises PeerTimeout (sysv_ipc waits again after
    a signal whose handler returns, so the handler must raise to end the wait). A timer
    already running (a batch's watchdog, pytest-timeout) bounds the wait itself if it is
    due first; else it is put back afterwards, less the time spent, with its handler.
    A timer that fires between msgrcv's return and its cancelling would drop that
    message: a window of a few instructions against a timeout of seconds."""
    remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    if 0 < remaining <= timeout:
        return wait()
    message = f"no {what} within the timeout (SysV IPC gives no EOF)"

    def expire(_signum: int, _frame: object) -> None:
        raise PeerTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return wait()
    except sysv_ipc.ExistentialError:
        raise  # the queue is gone: the caller says so
    except sysv_ipc.Error as exc:  # "Signaled while waiting": the handler's error follows
        raise PeerTimeout(message) from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if remaining > 0:
            signal.setitimer(signal.ITIMER_REAL,
                             max(remaining - (time.monotonic() - started), 1e-6))


class SemTimedOp:
    """semtimedop(2) through ctypes, for a semaphore wait with a kernel timeout where
    sysv_ipc was built without it (its acquire then ignores the timeout)."""

    class _Sembuf(ctypes.Structure):
        _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                    ("sem_flg", ctypes.c_short)]

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    def __init__(self, semid: int, timeout: float) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._call = libc.semtimedop
        self._call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self._call.restype = ctypes.c_int
        self._semid = semid
        self._op = self._Sembuf(0, -1, 0)
        whole, part = divmod(timeout, 1.0)
        self._timeout = self._Timespec(int(whole), int(part * 1e9))

    def acquire(self) -> None:
        """Take the semaphore, or raise PeerTimeout after the timeout (PeerGone if the set
        was removed)."""
        op, timeout = ctypes.addressof(self._op), ctypes.addressof(self._timeout)
        while self._call(self._semid, op, 1, timeout) == -1:
            err = ctypes.get_errno()
            if err == errno.EAGAIN:
                raise PeerTimeout("no doorbell within the timeout (SysV IPC gives no EOF)")
            if err in (errno.EIDRM, errno.EINVAL):
                raise PeerGone("the semaphore set was removed")
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))
            # EINTR: a handler that raises (a watch, a watchdog) has raised by now


def read_limit(path: str, default: int) -> int:
    try:
        with open(path) as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return default
