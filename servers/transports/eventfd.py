"""``eventfd``: shared memory with an eventfd doorbell each way (``os.eventfd``).

The frame lives in one shared area, as in ``shm``; each side rings the other by adding
1 to its eventfd counter and waits on its own. An eventfd has no EOF, so a dead peer
shows as the wait's timeout (poll before each read), as a semaphore's does.
"""

from __future__ import annotations

import os
import select
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
    close_fds,
    consume,
    create_new,
    replies_with_request,
)
from servers.transports.shm import AreaChannel, SharedArea, shm_capacity


class EventfdChannel(AreaChannel):
    def __init__(self, area: memoryview, ring: int, wait: int, timeout: float) -> None:
        super().__init__(area, partial(os.eventfd_write, ring, 1))
        self._ring_fd = ring
        self._wait = wait
        self._poll = select.poll()
        self._poll.register(wait, select.POLLIN)
        self._timeout_ms = int(timeout * 1000)

    def recv(self) -> Buffer:
        if not self._poll.poll(self._timeout_ms):
            raise PeerTimeout("no doorbell within the timeout (an eventfd gives no EOF)")
        os.eventfd_read(self._wait)
        return self._area

    def timed_ops(self) -> tuple[Send, Recv | None]:
        # The timed loop waits in one blocking read (no poll): the batch watchdog ends a
        # wait on a dead peer, and the harness checks a round trip after the batches.
        return self.send, partial(os.eventfd_read, self._wait)

    def timed_loop(self, message: Buffer) -> Loop | None:
        if message is not self._area:
            return None  # the frame must be built in place already
        ring, to_wait = (self._ring_fd, 1), {None: self._wait}.__getitem__

        def round_trips(n: int) -> None:
            # ring (returns None), then read our own eventfd: C callables end to end
            consume(map(os.eventfd_read, map(to_wait, starmap(os.eventfd_write,
                                                              repeat(ring, n)))))

        return round_trips

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        if not replies_with_request(handler):
            return super().serve(handler)
        # Echo answers in place: wait, ring back, in C (bool(1) is the 1 each ring adds).
        # A blocking read: a server is told to go by its supervisor.
        consume(map(os.eventfd_write, repeat(self._ring_fd),
                    map(bool, map(os.eventfd_read, repeat(self._wait)))))

    def close(self) -> None:
        if self._wait >= 0:  # the channel owns its two eventfds
            self._poll.unregister(self._wait)
            close_fds(self._wait, self._ring_fd)
            self._wait = -1


class EventfdLink(Link):
    def __init__(self, names: Names, payload: int, timeout: float) -> None:
        self._payload = payload
        self._timeout = timeout
        self._area = create_new(names, Kind.SHM, "area", partial(SharedArea, size=payload),
                                posix_ipc.ExistentialError)
        self._to_server, self._to_client = os.eventfd(0), os.eventfd(0)
        self._owned = True

    def _view(self) -> memoryview:
        return memoryview(self._area.map)[: self._payload]

    def _hand(self, ring: int, wait: int) -> Channel:
        """A channel that owns its eventfds from now on (the link no longer closes them)."""
        self._owned = False
        return EventfdChannel(self._view(), ring, wait, self._timeout)

    def client(self) -> Channel:
        return self._hand(self._to_server, self._to_client)

    def server(self) -> Channel:
        return self._hand(self._to_client, self._to_server)

    def loopback(self) -> tuple[Channel, Channel]:
        # Both ends in one process: the second owns copies, so each closes its own.
        return self.client(), self._hand(os.dup(self._to_client), os.dup(self._to_server))

    def close(self) -> None:
        if self._owned:
            close_fds(self._to_server, self._to_client)
            self._owned = False
        self._area.close()


class EventfdTransport(Transport):
    name = "eventfd"

    def max_payload(self) -> int:
        return shm_capacity()

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        return EventfdLink(names, payload, timeout)
