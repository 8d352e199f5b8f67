"""SysV IPC through ``sysv_ipc``: keys derived from journaled names, and what cleanup
needs to find an object again.

A SysV object has a key, not a name. Its key is a hash of a name that ``Names`` hands
out (so it is journaled under the run prefix before the object exists); cleanup hashes
the journal's names again and finds the objects in /proc/sysvipc, where ``ipcs`` reads
them, and removes them by id. A removed queue or semaphore set is gone at once, so
these live until the link closes: a SIGKILL leaves them for ``ipcbench cleanup``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator

import sysv_ipc

from servers.transports.base import Kind, Names, PeerTimeout, create_new

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

PROC_TABLES = {Kind.SYSV_MSG: "/proc/sysvipc/msg", Kind.SYSV_SEM: "/proc/sysvipc/sem",
               Kind.SYSV_SHM: "/proc/sysvipc/shm"}
REMOVE = {Kind.SYSV_MSG: sysv_ipc.remove_message_queue, Kind.SYSV_SEM: sysv_ipc.remove_semaphore,
          Kind.SYSV_SHM: sysv_ipc.remove_shared_memory}
# sysv_ipc's waits have no timeout where it was built without semtimedop, and a queue's
# never has one: a checked wait polls, backing off from 20 us to 5 ms (never in timed loops).
POLL_FIRST_S, POLL_MAX_S = 20e-6, 5e-3


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


def listed(kind: str) -> Iterator[tuple[int, int, int]]:
    """(key, id, owner uid) of every object of ``kind``, as ``ipcs`` lists them."""
    try:
        with open(PROC_TABLES[kind]) as table:
            header = table.readline().split()
            at_key, at_id, at_uid = header.index("key"), 1, header.index("uid")
            for line in table:
                fields = line.split()
                # the kernel prints a key as a signed int; keys are unsigned here
                yield int(fields[at_key]) & 0xFFFFFFFF, int(fields[at_id]), int(fields[at_uid])
    except OSError:
        return


def wait_polling(try_once: Callable[[], object], timeout: float, what: str) -> object:
    """``try_once()`` (non-blocking: raises BusyError while nothing is there) until it
    succeeds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST_S
    while True:
        try:
            return try_once()
        except sysv_ipc.BusyError:
            if time.monotonic() >= deadline:
                raise PeerTimeout(f"no {what} within the timeout (SysV IPC gives no EOF)") \
                    from None
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX_S)


def read_limit(path: str, default: int) -> int:
    try:
        with open(path) as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return default
