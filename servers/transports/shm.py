"""``shm``: POSIX shared memory, a semaphore pair as the doorbell.

The frame lives in one shared area; strict ping-pong means only one side
touches it at a time. The kernel copies nothing: a handler that answers in
place (echo) sends the very view it received, and ``send`` skips the copy.
"""

from __future__ import annotations

import mmap
import os
from abc import abstractmethod
from collections.abc import Callable
from functools import partial
from itertools import repeat, starmap

import posix_ipc

from servers.transports.base import (
    Buffer,
    Channel,
    Kind,
    Link,
    Loop,
    Names,
    PeerTimeout,
    Recv,
    Send,
    Transport,
    consume,
    create_new,
    replies_with_request,
)


class SharedArea:
    """A shared memory segment, mapped, with its name already unlinked."""

    def __init__(self, name: str, size: int) -> None:
        segment = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=max(size, 1))
        try:
            self.map = mmap.mmap(segment.fd, segment.size)
        finally:
            segment.close_fd()
            segment.unlink()  # the mapping outlives the name; nothing to leak later

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still exported; the mapping goes with the process


def doorbell(name: str) -> posix_ipc.Semaphore:
    sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    sem.unlink()
    return sem


class AreaChannel(Channel):
    """The frame in one shared area, and a doorbell: ``send`` writes the area (unless the
    message is built there already) and rings; the subclass says what a ring is."""

    def __init__(self, area: memoryview, ring: Callable[[], object]) -> None:
        self.payload = len(area)
        self._area = area
        self._ring = ring

    def prepare(self, data: Buffer) -> Buffer:
        self._area[:] = data
        return self._area

    def shared_memory(self) -> memoryview:
        return self._area

    def send(self, data: Buffer) -> None:
        if data is not self._area:
            self._area[:] = data
        self._ring()


class ShmChannel(AreaChannel):
    def __init__(
        self, area: memoryview, ring: posix_ipc.Semaphore, wait: posix_ipc.Semaphore,
        timeout: float,
    ) -> None:
        super().__init__(area, ring.release)
        self._wait = wait.acquire
        self._sems = (ring, wait)
        self._timeout = timeout

    def recv(self) -> Buffer:
        try:
            self._wait(self._timeout)
        except posix_ipc.BusyError:
            raise PeerTimeout("no doorbell within the timeout (a semaphore gives no EOF)") from None
        return self._area

    def timed_ops(self) -> tuple[Send, Recv | None]:
        return self.send, partial(self._wait, self._timeout)

    def timed_loop(self, message: Buffer) -> Loop | None:
        if message is not self._area:
            return None  # the frame must be built in place already
        ring, wait, timeout = self._ring, self._wait, {None: self._timeout}.__getitem__

        def round_trips(n: int) -> None:
            # release (returns None), then acquire with the timeout: C callables only
            consume(map(wait, map(timeout, starmap(ring, repeat((), n)))))  # type: ignore[arg-type]

        return round_trips

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        if not replies_with_request(handler):
            return super().serve(handler)
        # Echo answers in place: acquire, release back, in C; a silent client ends it
        # with posix_ipc's BusyError after the timeout.
        try:
            consume(starmap(self._ring, map({None: ()}.__getitem__,
                                            map(self._wait, repeat(self._timeout)))))
        except posix_ipc.BusyError:
            raise PeerTimeout("no request within the timeout (a semaphore gives no EOF)") \
                from None

    def close(self) -> None:
        for sem in self._sems:
            try:
                sem.close()
            except posix_ipc.ExistentialError:
                pass


class ShmLink(Link):
    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload = payload
        self._timeout = timeout
        taken = posix_ipc.ExistentialError
        self._area = create_new(names, Kind.SHM, "area", partial(SharedArea, size=payload), taken)
        self._to_server = create_new(names, Kind.SEM, "c2s", doorbell, taken)
        self._to_client = create_new(names, Kind.SEM, "s2c", doorbell, taken)

    def _view(self) -> memoryview:
        return memoryview(self._area.map)[: self._payload]

    def client(self) -> Channel:
        return ShmChannel(self._view(), self._to_server, self._to_client, self._timeout)

    def server(self) -> Channel:
        return ShmChannel(self._view(), self._to_client, self._to_server, self._timeout)

    def loopback(self) -> tuple[Channel, Channel]:
        return self.client(), self.server()

    def close(self) -> None:
        for sem in (self._to_server, self._to_client):
            sem.close()
        self._area.close()


class HeaderedAreaLink(Link):
    """One shared area, ``header`` bytes then the frame, for transports whose doorbell
    state lives in that header (spinning flags, futex words, pids): a subclass says
    what each end speaks over it (``_end``)."""

    header = 0
    tag = "area"

    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload, self._timeout = payload, timeout
        self._area = create_new(names, Kind.SHM, self.tag,
                                partial(SharedArea, size=self.header + payload),
                                posix_ipc.ExistentialError)

    def _views(self) -> tuple[memoryview, memoryview]:
        """(header, frame) of the area."""
        whole = memoryview(self._area.map)
        return whole[: self.header], whole[self.header : self.header + self._payload]

    @abstractmethod
    def _end(self, server: bool) -> Channel: ...

    def client(self) -> Channel:
        return self._end(server=False)

    def server(self) -> Channel:
        return self._end(server=True)

    def loopback(self) -> tuple[Channel, Channel]:
        return self.client(), self.server()

    def close(self) -> None:
        self._area.close()


def shm_capacity() -> int:
    """A quarter of the free space in /dev/shm, at most 1 GiB."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return 64 << 20
    return min(stat.f_bavail * stat.f_frsize // 4, 1 << 30)


class ShmTransport(Transport):
    name = "shm"

    def max_payload(self) -> int:
        return shm_capacity()

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return ShmLink(names, payload, timeout)
