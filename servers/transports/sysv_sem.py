"""``sysv-sem``: SysV shared memory holding the frame, and a SysV semaphore doorbell each
way (semop), as System V programs pair them.

The segment is marked for removal as soon as it is attached: the attachment survives
fork, and the kernel frees the memory with the last detach. The semaphores cannot go
early (a removed set is gone at once), so they live until ``destroy``.
"""

from __future__ import annotations

from collections.abc import Callable

import sysv_ipc

from servers.transports.base import Buffer, Channel, Kind, Link, Names, Recv, Send, Transport
from servers.transports.shm import AreaChannel, shm_capacity
from servers.transports.sysv import SemTimedOp, create_keyed, read_limit, remove

SHMMAX = "/proc/sys/kernel/shmmax"


class SysvSemChannel(AreaChannel):
    def __init__(self, area: memoryview, ring: sysv_ipc.Semaphore, wait: sysv_ipc.Semaphore,
                 timeout: float) -> None:
        super().__init__(area, ring.release)
        self._acquire = wait.acquire
        # sysv_ipc may be built without semtimedop (its acquire then ignores a timeout):
        # the checked wait calls it directly, so a chain's hops wait with a kernel timeout.
        self._timed_acquire = SemTimedOp(wait.id, timeout).acquire

    def recv(self) -> Buffer:
        self._timed_acquire()
        return self._area

    def timed_ops(self) -> tuple[Send, Recv | None]:
        return self.send, self._acquire  # blocking: the batch watchdog ends a dead wait

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        acquire, send, area = self._acquire, self.send, self._area
        while True:  # blocking: a server is told to go by its supervisor
            acquire()
            send(handler(area))

    def close(self) -> None:
        pass  # the semaphores live until the link's ``destroy``


class SysvSemLink(Link):
    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload, self._timeout = payload, timeout

        def segment(key: int) -> sysv_ipc.SharedMemory:
            return sysv_ipc.SharedMemory(key, sysv_ipc.IPC_CREX, 0o600, size=max(payload, 1))

        def semaphore(key: int) -> sysv_ipc.Semaphore:
            return sysv_ipc.Semaphore(key, sysv_ipc.IPC_CREX, 0o600, initial_value=0)

        self._segment = create_keyed(names, Kind.SYSV_SHM, "area", segment)
        self._segment.remove()  # freed with the last detach; nothing to leak
        self._sems: list[sysv_ipc.Semaphore] = []
        try:
            for tag in ("c2s", "s2c"):
                self._sems.append(create_keyed(names, Kind.SYSV_SEM, tag, semaphore))
        except BaseException:
            self.destroy()
            raise

    def _channel(self, ring: sysv_ipc.Semaphore, wait: sysv_ipc.Semaphore) -> Channel:
        area = memoryview(self._segment)[: self._payload]
        return SysvSemChannel(area, ring, wait, self._timeout)

    def client(self) -> Channel:
        return self._channel(*self._sems)

    def server(self) -> Channel:
        return self._channel(self._sems[1], self._sems[0])

    def loopback(self) -> tuple[Channel, Channel]:
        return self.client(), self.server()

    def close(self) -> None:
        pass  # the segment goes with the process's views of it

    def destroy(self) -> None:
        for sem in self._sems:
            remove(Kind.SYSV_SEM, sem.id)


class SysvSemTransport(Transport):
    name = "sysv-sem"

    def max_payload(self) -> int:
        return min(shm_capacity(), read_limit(SHMMAX, 1 << 30))

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return SysvSemLink(names, payload, timeout)
